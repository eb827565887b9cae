#include "core/read_cache.h"

#include <gtest/gtest.h>

namespace certfleet {
namespace {

TEST(ReadCacheTest, AnEntryIsFreshForItsAgeAndWhileNoChangeWasCounted) {
  ReadCache<int> cache(1000, 10);
  EXPECT_FALSE(cache.Find("a", 0, 0).has_value());
  cache.Put("a", 1, 5000, 7);
  EXPECT_EQ(cache.Find("a", 5000, 7), 1);
  EXPECT_EQ(cache.Find("a", 5999, 7), 1);
  EXPECT_FALSE(cache.Find("a", 6000, 7).has_value()) << "read a second ago: stale";
  EXPECT_FALSE(cache.Find("a", 5001, 8).has_value()) << "a change counted since the read: stale";
  EXPECT_FALSE(cache.Find("a", 4999, 7).has_value()) << "the clock stepped back: stale";
  EXPECT_FALSE(cache.Find("b", 5000, 7).has_value());
}

TEST(ReadCacheTest, FullItStartsAgainEmptyForANewKey) {
  ReadCache<int> cache(1000, 2);
  cache.Put("a", 1, 0, 0);
  cache.Put("b", 2, 0, 0);
  cache.Put("a", 3, 0, 0);  // a key it holds is replaced
  EXPECT_EQ(cache.Find("a", 0, 0), 3);
  EXPECT_EQ(cache.Find("b", 0, 0), 2);
  cache.Put("c", 4, 0, 0);
  EXPECT_EQ(cache.Find("c", 0, 0), 4);
  EXPECT_FALSE(cache.Find("a", 0, 0).has_value());
  EXPECT_FALSE(cache.Find("b", 0, 0).has_value());
}

}  // namespace
}  // namespace certfleet
