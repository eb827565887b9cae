#include "core/clock.h"

#include <fmt/format.h>

#include <cstdio>
#include <ctime>

namespace certfleet {

int64_t Clock::NowMillis() const { return ToMillis(Now()); }

const Clock& SystemClock::Instance() {
  static const SystemClock clock;
  return clock;
}

bool SystemClock::WaitUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock, TimePoint deadline,
                            const std::function<bool()>& done) const {
  return cv.wait_until(lock, deadline, done);
}

TimePoint ManualClock::Now() const { return FromMillis(millis_.load()); }

bool ManualClock::WaitUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock, TimePoint deadline,
                            const std::function<bool()>& done) const {
  if (done() || Now() >= deadline) return done();
  Sleeper self{lock.mutex(), &cv, deadline};
  // The caller's mutex is let go while mu_ is held, so that the order is always mu_ first.
  lock.unlock();
  {
    std::lock_guard guard(mu_);
    sleepers_.push_back(&self);
  }
  sleepers_changed_.notify_all();
  lock.lock();
  // A move of the clock after this check takes the caller's mutex to notify: none is lost.
  while (!done() && Now() < deadline) cv.wait(lock);
  lock.unlock();
  {
    std::lock_guard guard(mu_);
    sleepers_.remove(&self);
  }
  sleepers_changed_.notify_all();
  lock.lock();
  return done();
}

void ManualClock::Advance(std::chrono::milliseconds by) {
  millis_ += by.count();
  WakeDue();
}

void ManualClock::Set(int64_t millis) {
  millis_ = millis;
  WakeDue();
}

void ManualClock::WakeDue() {
  {
    std::lock_guard guard(mu_);
    const TimePoint now = Now();
    for (auto it = sleepers_.begin(); it != sleepers_.end();) {
      if ((*it)->deadline > now) {
        ++it;
        continue;
      }
      {
        std::lock_guard sleeper(*(*it)->mu);
        (*it)->cv->notify_all();
      }
      it = sleepers_.erase(it);
    }
  }
  sleepers_changed_.notify_all();
}

bool ManualClock::WaitForSleepers(size_t n, std::chrono::milliseconds limit) const {
  std::unique_lock guard(mu_);
  return sleepers_changed_.wait_for(guard, limit, [&] { return sleepers_.size() >= n; });
}

int64_t ToMillis(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

TimePoint FromMillis(int64_t millis) { return TimePoint(std::chrono::milliseconds(millis)); }

std::string FormatRfc3339(int64_t millis) {
  int64_t secs = millis / 1000;
  int64_t ms = millis % 1000;
  if (ms < 0) {
    ms += 1000;
    secs -= 1;
  }
  std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

std::optional<int64_t> ParseRfc3339(std::string_view text) {
  std::string s(text);
  int year, month, day, hour, minute, second;
  int consumed = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &year, &month, &day, &hour, &minute, &second, &consumed) !=
          6 ||
      consumed != 19) {
    return std::nullopt;
  }
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) return std::nullopt;
  std::string_view rest = text.substr(19);
  int64_t millis = 0;
  if (!rest.empty() && rest[0] == '.') {
    size_t i = 1;
    int64_t scale = 100;
    for (; i < rest.size() && std::isdigit(static_cast<unsigned char>(rest[i])); ++i, scale /= 10) {
      millis += (rest[i] - '0') * scale;
    }
    if (i == 1) return std::nullopt;
    rest.remove_prefix(i);
  }
  int64_t offset_minutes = 0;
  if (rest == "Z" || rest == "z") {
  } else if (rest.size() == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':') {
    int oh = 0, om = 0;
    if (std::sscanf(std::string(rest.substr(1)).c_str(), "%2d:%2d", &oh, &om) != 2) return std::nullopt;
    offset_minutes = (rest[0] == '+' ? 1 : -1) * (int64_t{oh} * 60 + om);
  } else {
    return std::nullopt;
  }
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  return (static_cast<int64_t>(timegm(&tm)) - offset_minutes * 60) * 1000 + millis;
}

}  // namespace certfleet
