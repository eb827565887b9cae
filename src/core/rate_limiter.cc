#include "core/rate_limiter.h"

#include <algorithm>
#include <cmath>

namespace certfleet {
namespace {

constexpr double kMinuteMs = 60'000;

}  // namespace

std::optional<int64_t> RateLimiter::Take(std::string_view key) {
  if (per_minute_ <= 0) return std::nullopt;
  const int64_t now = clock_.NowMillis();
  const double capacity = static_cast<double>(per_minute_);
  const double per_ms = capacity / kMinuteMs;
  std::lock_guard lock(mu_);
  auto it = buckets_.find(key);
  if (it == buckets_.end()) {
    if (buckets_.size() >= kMaxKeys && now - swept_at_ms_ >= kSweepMs) {
      // Buckets refilled since: they hold nothing a new one would not.
      std::erase_if(buckets_, [&](const auto& kv) {
        return kv.second.tokens + static_cast<double>(now - kv.second.at_ms) * per_ms >= capacity;
      });
      swept_at_ms_ = now;
    }
    // Still full: so many keys held down at once that a new one waits, rather than every key's
    // limit being forgotten (which flooding with new keys would otherwise buy).
    if (buckets_.size() >= kMaxKeys) return 1;
    it = buckets_.emplace(std::string(key), Bucket{capacity, now}).first;
  }
  Bucket& b = it->second;
  b.tokens = std::min(capacity, b.tokens + static_cast<double>(now - b.at_ms) * per_ms);
  b.at_ms = now;
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return std::nullopt;
  }
  return static_cast<int64_t>(std::ceil((1 - b.tokens) / per_ms / 1000));
}

}  // namespace certfleet
