#include "jobs/schedule_spec.h"

#include <gtest/gtest.h>

#include "core/clock.h"

namespace certfleet::jobs {
namespace {

// 2026-11-23T17:56:45Z, a Monday.
constexpr int64_t kNow = 1'795'456'605'000;

std::string Next(std::string_view spec, int64_t after = kNow) {
  auto s = ScheduleSpec::Parse(spec);
  EXPECT_TRUE(s.ok()) << spec << ": " << (s.ok() ? "" : s.error().message);
  return s.ok() ? FormatRfc3339(s->NextAfter(after)) : "";
}

TEST(ScheduleSpec, RenewalDefaultTwiceADay) {
  EXPECT_EQ(Next("15 3,15 * * *"), "2026-11-24T03:15:00.000Z");
  EXPECT_EQ(Next("15 3,15 * * *", 1'795'442'400'000 /* 14:00 */), "2026-11-23T15:15:00.000Z");
}

TEST(ScheduleSpec, StepsRangesAndNames) {
  EXPECT_EQ(Next("*/15 * * * *"), "2026-11-23T18:00:00.000Z");
  EXPECT_EQ(Next("0 9-17/4 * * MON-FRI"), "2026-11-24T09:00:00.000Z");
  EXPECT_EQ(Next("0 0 1 jan *"), "2027-01-01T00:00:00.000Z");
  EXPECT_EQ(Next("30 4 * * 7"), "2026-11-29T04:30:00.000Z");  // 7 is Sunday
  EXPECT_EQ(Next("@daily"), "2026-11-24T00:00:00.000Z");
}

TEST(ScheduleSpec, DayOfMonthOrDayOfWeekWhenBothAreGiven) {
  // Vixie cron: the 13th or any Friday, whichever comes first (Friday 2026-11-27).
  EXPECT_EQ(Next("0 0 13 * FRI"), "2026-11-27T00:00:00.000Z");
}

TEST(ScheduleSpec, LeapDay) { EXPECT_EQ(Next("0 12 29 2 *"), "2028-02-29T12:00:00.000Z"); }

TEST(ScheduleSpec, Intervals) {
  auto s = ScheduleSpec::Parse("@every 90s");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->NextAfter(1000), 91'000);
  EXPECT_TRUE(ScheduleSpec::Parse("@every 15m").ok());
  EXPECT_FALSE(ScheduleSpec::Parse("@every 0s").ok());
  EXPECT_FALSE(ScheduleSpec::Parse("@every 5x").ok());
}

TEST(ScheduleSpec, RefusesWhatCannotFireOrParse) {
  for (const char* bad : {"0 0 31 2 *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8", "* * * *",
                          "a b c d e", "*/0 * * * *", "5-1 * * * *", ""}) {
    auto s = ScheduleSpec::Parse(bad);
    EXPECT_FALSE(s.ok()) << "accepted: '" << bad << "'";
  }
  EXPECT_NE(ScheduleSpec::Parse("61 * * * *").error().message.find("minute"), std::string::npos);
}

}  // namespace
}  // namespace certfleet::jobs
