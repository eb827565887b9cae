#pragma once

#include <bitset>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.h"

namespace certfleet::jobs {

// When a schedule fires: a 5-field cron expression in UTC ("15 3,15 * * *": minute hour
// day-of-month month day-of-week, with *, lists, ranges, steps and JAN/MON names; when
// both day fields are restricted either may match, as in Vixie cron), one of @hourly,
// @daily, @weekly, @monthly, or a fixed interval "@every 90s" (units s, m, h, d).
class ScheduleSpec {
 public:
  static Result<ScheduleSpec> Parse(std::string_view text);

  // The first firing time strictly after `after_millis` (whole minutes for cron).
  int64_t NextAfter(int64_t after_millis) const;
  const std::string& text() const { return text_; }

 private:
  std::string text_;
  int64_t interval_ms_ = 0;  // > 0: fixed interval
  std::bitset<60> minutes_;
  std::bitset<24> hours_;
  std::bitset<32> days_;     // 1..31
  std::bitset<13> months_;   // 1..12
  std::bitset<7> weekdays_;  // 0 = Sunday
  bool days_restricted_ = false;
  bool weekdays_restricted_ = false;
};

}  // namespace certfleet::jobs
