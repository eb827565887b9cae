#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/clock.h"

namespace certfleet {

// Token buckets by key (a device id, a client address): each key may take `per_minute`
// requests a minute, in bursts of up to as many. Counts are this process's own. Thread-safe.
class RateLimiter {
 public:
  // per_minute 0: no limit.
  RateLimiter(const Clock& clock, int64_t per_minute) : clock_(clock), per_minute_(per_minute) {}

  // Takes one request for `key`: nullopt if allowed, else how many seconds until it would be.
  std::optional<int64_t> Take(std::string_view key);

  // Keys tracked before those whose buckets have refilled are dropped (looked for at most once
  // a second): bounds memory whatever number of distinct keys callers send. While that many
  // are held down, a new key waits a second; the keys tracked keep their limits.
  static constexpr size_t kMaxKeys = 100'000;

 private:
  struct Bucket {
    double tokens = 0;
    int64_t at_ms = 0;
  };
  const Clock& clock_;
  const int64_t per_minute_;
  std::mutex mu_;
  // Heterogeneous lookup: a key is copied only when it is new.
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, Bucket, Hash, std::equal_to<>> buckets_;
  int64_t swept_at_ms_ = 0;  // the last look for refilled buckets
  static constexpr int64_t kSweepMs = 1000;
};

}  // namespace certfleet
