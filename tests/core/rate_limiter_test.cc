#include "core/rate_limiter.h"

#include <gtest/gtest.h>

namespace certfleet {
namespace {

TEST(RateLimiter, AllowsABurstThenOneRequestPerIntervalPerKey) {
  ManualClock clock(1'000'000);
  RateLimiter limiter(clock, 3);  // one every 20 s, bursts of 3
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(limiter.Take("a").has_value());
  EXPECT_EQ(limiter.Take("a").value_or(-1), 20);
  EXPECT_FALSE(limiter.Take("b").has_value()) << "keys count apart";
  clock.Advance(std::chrono::seconds(15));
  EXPECT_EQ(limiter.Take("a").value_or(-1), 5);
  clock.Advance(std::chrono::seconds(5));
  EXPECT_FALSE(limiter.Take("a").has_value());
  EXPECT_TRUE(limiter.Take("a").has_value());
}

TEST(RateLimiter, ZeroMeansNoLimit) {
  ManualClock clock(0);
  RateLimiter limiter(clock, 0);
  for (int i = 0; i < 1000; ++i) ASSERT_FALSE(limiter.Take("a").has_value());
}

}  // namespace
}  // namespace certfleet
