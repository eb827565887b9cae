#include "jobs/schedule_spec.h"

#include <fmt/format.h>

#include <charconv>
#include <ctime>
#include <vector>

namespace certfleet::jobs {
namespace {

constexpr int64_t kMinuteMs = 60'000;
// A cron expression that matches no date within this many days (e.g. "0 0 31 2 *") is refused.
constexpr int kSearchDays = 366 * 5;

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == sep) {
      out.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

constexpr std::string_view kMonthNames[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                            "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
constexpr std::string_view kDayNames[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

bool ParseNumber(std::string_view s, int field, int& out) {
  std::string upper;
  for (char c : s) upper.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  if (field == 3) {
    for (int i = 0; i < 12; ++i) {
      if (upper == kMonthNames[i]) return (out = i + 1), true;
    }
  }
  if (field == 4) {
    for (int i = 0; i < 7; ++i) {
      if (upper == kDayNames[i]) return (out = i), true;
    }
  }
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

// Fills `bits` (index = value) from one cron field; returns whether the field was "*".
template <size_t N>
Result<bool> ParseField(std::string_view text, int field, int lo, int hi, std::bitset<N>& bits) {
  static constexpr std::string_view kNames[] = {"minute", "hour", "day of month", "month", "day of week"};
  auto bad = [&](std::string_view why) {
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("cron {} field '{}': {}", kNames[field], text, why));
  };
  bool star = false;
  for (std::string_view part : Split(text, ',')) {
    int step = 1;
    const bool has_step = part.find('/') != std::string_view::npos;
    if (auto slash = part.find('/'); slash != std::string_view::npos) {
      if (!ParseNumber(part.substr(slash + 1), -1, step) || step < 1) return bad("bad step");
      part = part.substr(0, slash);
    }
    int from = lo, to = hi;
    if (part == "*") {
      star = step == 1;
    } else if (auto dash = part.find('-'); dash != std::string_view::npos) {
      if (!ParseNumber(part.substr(0, dash), field, from) || !ParseNumber(part.substr(dash + 1), field, to)) {
        return bad("bad range");
      }
    } else {
      if (!ParseNumber(part, field, from)) return bad("not a number or name");
      to = has_step ? hi : from;
    }
    if (from < lo || to > (field == 4 ? 7 : hi) || from > to) return bad(fmt::format("outside {}..{}", lo, hi));
    for (int v = from; v <= to; v += step) bits.set(field == 4 ? v % 7 : v);  // weekday 7 is Sunday too
  }
  return star;
}

}  // namespace

Result<ScheduleSpec> ScheduleSpec::Parse(std::string_view text) {
  ScheduleSpec spec;
  spec.text_ = std::string(text);
  std::string_view expr = text;
  if (expr == "@hourly") expr = "0 * * * *";
  if (expr == "@daily") expr = "0 0 * * *";
  if (expr == "@weekly") expr = "0 0 * * 0";
  if (expr == "@monthly") expr = "0 0 1 * *";
  if (expr.starts_with("@every ")) {
    std::string_view d = expr.substr(7);
    if (d.size() < 2) return MakeError(ErrorCode::kInvalidArgument, "@every needs a duration such as 90s or 15m");
    int64_t n = 0;
    auto [p, ec] = std::from_chars(d.data(), d.data() + d.size() - 1, n);
    const char unit = d.back();
    const int64_t unit_ms = unit == 's'   ? 1000
                            : unit == 'm' ? kMinuteMs
                            : unit == 'h' ? kMinuteMs * 60
                            : unit == 'd' ? kMinuteMs * 60 * 24
                                          : 0;
    if (ec != std::errc() || p != d.data() + d.size() - 1 || n <= 0 || unit_ms == 0) {
      return MakeError(ErrorCode::kInvalidArgument,
                       fmt::format("@every '{}': use a positive number and s, m, h or d", d));
    }
    spec.interval_ms_ = n * unit_ms;
    return spec;
  }
  std::vector<std::string_view> fields;
  for (auto f : Split(expr, ' ')) {
    if (!f.empty()) fields.push_back(f);
  }
  if (fields.size() != 5) {
    return MakeError(ErrorCode::kInvalidArgument,
                     fmt::format("cron '{}': expected 5 fields (minute hour day month weekday)", text));
  }
  CF_RETURN_IF_ERROR(ParseField(fields[0], 0, 0, 59, spec.minutes_));
  CF_RETURN_IF_ERROR(ParseField(fields[1], 1, 0, 23, spec.hours_));
  CF_ASSIGN_OR_RETURN(bool any_day, ParseField(fields[2], 2, 1, 31, spec.days_));
  CF_RETURN_IF_ERROR(ParseField(fields[3], 3, 1, 12, spec.months_));
  CF_ASSIGN_OR_RETURN(bool any_weekday, ParseField(fields[4], 4, 0, 6, spec.weekdays_));
  spec.days_restricted_ = !any_day;
  spec.weekdays_restricted_ = !any_weekday;
  if (spec.NextAfter(0) < 0) return MakeError(ErrorCode::kInvalidArgument, fmt::format("cron '{}' never fires", text));
  return spec;
}

int64_t ScheduleSpec::NextAfter(int64_t after_millis) const {
  if (interval_ms_ > 0) return after_millis + interval_ms_;
  int64_t t = (after_millis / kMinuteMs + 1) * kMinuteMs;
  const int64_t limit = t + int64_t{kSearchDays} * 24 * 60 * kMinuteMs;
  while (t < limit) {
    std::time_t secs = static_cast<std::time_t>(t / 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    bool day_ok;
    if (days_restricted_ && weekdays_restricted_) {
      day_ok = days_[tm.tm_mday] || weekdays_[tm.tm_wday];
    } else {
      day_ok = days_[tm.tm_mday] && weekdays_[tm.tm_wday];
    }
    if (!months_[tm.tm_mon + 1]) {
      tm.tm_mon += 1;
      tm.tm_mday = 1;
      tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    } else if (!day_ok) {
      tm.tm_mday += 1;
      tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    } else if (!hours_[tm.tm_hour]) {
      tm.tm_hour += 1;
      tm.tm_min = tm.tm_sec = 0;
    } else if (!minutes_[tm.tm_min]) {
      tm.tm_min += 1;
      tm.tm_sec = 0;
    } else {
      return t;
    }
    t = static_cast<int64_t>(timegm(&tm)) * 1000;
  }
  return -1;
}

}  // namespace certfleet::jobs
