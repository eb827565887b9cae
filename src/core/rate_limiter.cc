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
  if (buckets_.size() >= kMaxKeys) {
    std::erase_if(buckets_, [&](const auto& kv) { return now - kv.second.at_ms >= kMinuteMs; });
    // Still full: so many keys within a minute that forgetting them all is the lesser harm.
    if (buckets_.size() >= kMaxKeys) buckets_.clear();
  }
  auto [it, fresh] = buckets_.try_emplace(std::string(key), Bucket{capacity, now});
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
