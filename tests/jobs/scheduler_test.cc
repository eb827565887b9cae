#include "jobs/scheduler.h"

#include <gtest/gtest.h>

#include "testing/db.h"

namespace certfleet::jobs {
namespace {

using std::chrono::milliseconds;

class SchedulerTest : public ::testing::TestWithParam<store::Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam(), &url_);
    ASSERT_NE(store_, nullptr);
  }
  int64_t Jobs() { return store_->Query("SELECT COUNT(*) FROM jobs WHERE kind = 'report'")->at(0).Int(0); }
  ManualClock clock_{1'795'456'605'000};
  std::unique_ptr<store::Store> store_;
  std::string url_;
};

TEST_P(SchedulerTest, EachFiringEnqueuesOneJob) {
  Scheduler s(*store_, clock_);
  ASSERT_TRUE(s.Add("report", "*/5 * * * *", store::NewJob{"report", "{}", 0, 3, std::nullopt}).ok());
  EXPECT_EQ(*s.Tick(), 0);  // first sight: the first firing is the next one, not now
  EXPECT_TRUE(s.leader());
  clock_.Advance(milliseconds(3 * 60'000));  // 17:59:45, due at 18:00
  EXPECT_EQ(*s.Tick(), 0);
  clock_.Advance(milliseconds(60'000));  // 18:00:45
  EXPECT_EQ(*s.Tick(), 1);
  EXPECT_EQ(*s.Tick(), 0);
  EXPECT_EQ(Jobs(), 1);
  // Down for an hour: the missed firings are made up once, not twelve times.
  clock_.Advance(milliseconds(3600'000));
  EXPECT_EQ(*s.Tick(), 1);
  EXPECT_EQ(Jobs(), 2);
}

TEST_P(SchedulerTest, OnlyOneSchedulerLeads) {
  auto other_store = store::Store::Open(url_, {2});
  ASSERT_TRUE(other_store.ok());
  Scheduler a(*store_, clock_);
  Scheduler b(**other_store, clock_);
  for (Scheduler* s : {&a, &b})
    ASSERT_TRUE(s->Add("report", "@every 1m", store::NewJob{"report", "{}", 0, 3, std::nullopt}).ok());
  ASSERT_TRUE(a.Tick().ok());
  ASSERT_TRUE(b.Tick().ok());
  EXPECT_TRUE(a.leader());
  EXPECT_FALSE(b.leader());
  clock_.Advance(milliseconds(61'000));
  EXPECT_EQ(*b.Tick(), 0);
  EXPECT_EQ(*a.Tick(), 1);
  a.Stop();  // releases the lease
  clock_.Advance(milliseconds(61'000));
  EXPECT_EQ(*b.Tick(), 1);
  EXPECT_TRUE(b.leader());
  EXPECT_EQ(Jobs(), 2);
}

TEST_P(SchedulerTest, AnIntervalKeepsItsCadenceAndOneShorterThanATickIsKept) {
  Scheduler s(*store_, clock_);
  ASSERT_TRUE(s.Add("report", "@every 5s", store::NewJob{"report", "{}", 0, 3, std::nullopt}).ok());
  EXPECT_EQ(*s.Tick(), 0);  // due in 5 s
  clock_.Advance(milliseconds(6'000));
  EXPECT_EQ(*s.Tick(), 1) << "a second late";
  clock_.Advance(milliseconds(4'000));
  EXPECT_EQ(*s.Tick(), 1) << "10 s after the first sight, not 5 s after the late tick";
  // Ticking every 10 s, the loop still fires it every 5 s.
  s.Start(milliseconds(10'000));
  ASSERT_TRUE(clock_.WaitForSleepers(1));
  const int64_t before = Jobs();
  for (int i = 0; i < 4; ++i) {
    clock_.Advance(milliseconds(5'000));
    ASSERT_TRUE(clock_.WaitForSleepers(1));
  }
  s.Stop();
  EXPECT_EQ(Jobs() - before, 4) << "four firings in 20 s";
}

INSTANTIATE_TEST_SUITE_P(Drivers, SchedulerTest, testing::kBothDialects, testing::DialectName);

}  // namespace
}  // namespace certfleet::jobs
