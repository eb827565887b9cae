#include "core/rate_limiter.h"

#include <gtest/gtest.h>

#include <string>

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

// A flood of new keys does not buy a key held down its requests back: the tracked keys keep
// their limits, new keys wait while the table is full, and refilled buckets make room.
TEST(RateLimiter, AFloodOfNewKeysDoesNotForgetTheLimitsOfOthers) {
  ManualClock clock(1'000'000);
  RateLimiter limiter(clock, 10);
  for (int i = 0; i < 10; ++i) ASSERT_FALSE(limiter.Take("victim").has_value());
  ASSERT_TRUE(limiter.Take("victim").has_value());
  for (size_t i = 1; i < RateLimiter::kMaxKeys; ++i) ASSERT_FALSE(limiter.Take("junk-" + std::to_string(i)));
  EXPECT_EQ(limiter.Take("new").value_or(-1), 1) << "the table is full of keys held down";
  EXPECT_TRUE(limiter.Take("victim").has_value()) << "still limited";
  clock.Advance(std::chrono::seconds(7));  // the junk keys' buckets refill; the victim's has 1.2 tokens
  EXPECT_FALSE(limiter.Take("new").has_value()) << "refilled buckets made room";
  EXPECT_FALSE(limiter.Take("victim").has_value());
  EXPECT_TRUE(limiter.Take("victim").has_value()) << "and its limit was kept";
}

TEST(RateLimiter, ZeroMeansNoLimit) {
  ManualClock clock(0);
  RateLimiter limiter(clock, 0);
  for (int i = 0; i < 1000; ++i) ASSERT_FALSE(limiter.Take("a").has_value());
}

}  // namespace
}  // namespace certfleet
