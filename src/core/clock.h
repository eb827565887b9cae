#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace certfleet {

using TimePoint = std::chrono::system_clock::time_point;

// A Clock tells the time, and background loops wait on it. Injected everywhere so that
// expiry, leases, schedules and timers are tested without sleeping. Thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
  int64_t NowMillis() const;

  // Waits on `cv`, whose mutex `lock` holds, until `done()` or until this clock reaches
  // `deadline`; returns done(). Whoever makes done() true notifies `cv` under the mutex.
  virtual bool WaitUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock, TimePoint deadline,
                         const std::function<bool()>& done) const = 0;
  bool WaitFor(std::condition_variable& cv, std::unique_lock<std::mutex>& lock, std::chrono::milliseconds delay,
               const std::function<bool()>& done) const {
    return WaitUntil(cv, lock, Now() + delay, done);
  }
};

// The wall clock.
class SystemClock final : public Clock {
 public:
  TimePoint Now() const override { return std::chrono::system_clock::now(); }
  bool WaitUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock, TimePoint deadline,
                 const std::function<bool()>& done) const override;
  static const Clock& Instance();
};

// A clock that moves only when told to (tests). A wait on it ends when the clock is moved
// to or past its deadline. Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t start_millis = 1'700'000'000'000) : millis_(start_millis) {}
  TimePoint Now() const override;
  bool WaitUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock, TimePoint deadline,
                 const std::function<bool()>& done) const override;
  void Advance(std::chrono::milliseconds by);
  void Set(int64_t millis);

  // Blocks until at least `n` threads wait on this clock for a time still to come (each has
  // finished what it did before waiting); false if that took longer than `limit` of real
  // time, which only a broken test sees.
  bool WaitForSleepers(size_t n, std::chrono::milliseconds limit = std::chrono::seconds(60)) const;

 private:
  struct Sleeper {
    std::mutex* mu;
    std::condition_variable* cv;
    TimePoint deadline;
  };
  // Wakes the sleepers whose deadline has come; they no longer count as sleepers.
  void WakeDue();

  std::atomic<int64_t> millis_;
  mutable std::mutex mu_;  // guards sleepers_; taken before a sleeper's mutex, never after
  mutable std::condition_variable sleepers_changed_;
  mutable std::list<Sleeper*> sleepers_;
};

int64_t ToMillis(TimePoint t);
// A duration in milliseconds, as times are stored and compared (any coarser duration converts).
constexpr int64_t Millis(std::chrono::milliseconds d) { return d.count(); }
TimePoint FromMillis(int64_t millis);
// RFC 3339 in UTC with milliseconds, e.g. 2026-11-23T17:56:45.123Z.
std::string FormatRfc3339(int64_t millis);
// Parses "2026-11-23T17:56:45Z", with optional fraction and a Z or ±hh:mm offset.
std::optional<int64_t> ParseRfc3339(std::string_view text);

}  // namespace certfleet
