// CronSchedule: a parsed 5-field cron expression, for `- timer: { schedule: "*/5 * * * *" }`.
//
// Syntax (as Vixie cron / cronie):
//
//   minute hour day-of-month month day-of-week
//   0-59   0-23 1-31         1-12  0-7 (0 and 7 are both Sunday)
//
// Each field is `*` or a comma-separated list of items; an item is a value `a`, a range `a-b`
// (a <= b, no wrap-around), `*`, each optionally with a step `/n` (`*/15`, `8-18/2`; `a/n` means
// `a-<max>/n`). Months may be written JAN-DEC and weekdays SUN-SAT, in any case. The macros
// @hourly, @daily (= @midnight), @weekly, @monthly and @yearly (= @annually) stand for
// `0 * * * *`, `0 0 * * *`, `0 0 * * 0`, `0 0 1 * *` and `0 0 1 1 *`.
//
// Day matching follows Vixie cron: when both day-of-month and day-of-week are restricted (the
// field does not start with `*`), a day matches if EITHER does ("0 0 1 * MON" fires on the 1st
// and on every Monday); otherwise both must match, which means only the restricted one counts.
//
// Times are UTC: there is no time zone or daylight-saving handling.
//
// Thread safety: an immutable value once parsed; copy it freely.
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

#include "wisp/status.h"

namespace wisp {

class CronSchedule {
 public:
  // Parses `expr`, or returns InvalidArgument naming the field and value at fault, e.g.
  // "cron '61 * * * *': minute field '61' is out of range 0-59".
  static Result<CronSchedule> Parse(std::string_view expr);

  // The first matching minute strictly after `after`, in UTC. Returns time_point::max() when
  // nothing matches within about five years (e.g. "0 0 30 2 *", February 30th) or the answer is
  // not representable.
  std::chrono::system_clock::time_point Next(std::chrono::system_clock::time_point after) const;

 private:
  CronSchedule() = default;

  bool DayMatches(int day_of_month, int weekday) const;

  std::uint64_t minutes_ = 0;   // bit m: minute m (0-59)
  std::uint32_t hours_ = 0;     // bit h: hour h (0-23)
  std::uint32_t days_ = 0;      // bit d: day of month d (1-31)
  std::uint16_t months_ = 0;    // bit m: month m (1-12)
  std::uint8_t weekdays_ = 0;   // bit w: weekday w (0 = Sunday .. 6)
  bool days_star_ = false;      // day-of-month field starts with '*'
  bool weekdays_star_ = false;  // day-of-week field starts with '*'
};

}  // namespace wisp
