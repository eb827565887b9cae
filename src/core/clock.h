#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace certfleet {

using TimePoint = std::chrono::system_clock::time_point;

// A Clock tells the time. Injected everywhere so that expiry, leases and schedules are
// tested without sleeping. Thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
  int64_t NowMillis() const;
};

// The wall clock.
class SystemClock final : public Clock {
 public:
  TimePoint Now() const override { return std::chrono::system_clock::now(); }
  static const Clock& Instance();
};

// A clock that moves only when told to (tests). Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t start_millis = 1'700'000'000'000) : millis_(start_millis) {}
  TimePoint Now() const override;
  void Advance(std::chrono::milliseconds by) { millis_ += by.count(); }
  void Set(int64_t millis) { millis_ = millis; }

 private:
  std::atomic<int64_t> millis_;
};

int64_t ToMillis(TimePoint t);
TimePoint FromMillis(int64_t millis);
// RFC 3339 in UTC with milliseconds, e.g. 2026-11-23T17:56:45.123Z.
std::string FormatRfc3339(int64_t millis);
// Parses "2026-11-23T17:56:45Z", with optional fraction and a Z or ±hh:mm offset.
std::optional<int64_t> ParseRfc3339(std::string_view text);

}  // namespace certfleet
