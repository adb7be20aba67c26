// CronSchedule: parsing of 5-field cron expressions and the search for the next matching minute.

#include "common/cron.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cassert>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "common/quote.h"

namespace wisp {
namespace {

// Longer expressions are refused outright: a real one is a few dozen bytes.
constexpr std::size_t kMaxExpressionLength = 1024;

// How far Next() looks ahead before it gives up: longer than any real schedule's gap (Feb 29
// recurs within 8 years only across a skipped leap year such as 2100, which is out of reach
// anyway), short enough to stay a few thousand steps.
constexpr std::int64_t kHorizonDays = 5 * 366;

constexpr std::array<std::string_view, 12> kMonthNames = {"jan", "feb", "mar", "apr", "may", "jun",
                                                          "jul", "aug", "sep", "oct", "nov", "dec"};
constexpr std::array<std::string_view, 7> kWeekdayNames = {"sun", "mon", "tue", "wed",
                                                           "thu", "fri", "sat"};

struct Macro {
  std::string_view name;
  std::string_view expansion;
};
constexpr Macro kMacros[] = {
    {"@hourly", "0 * * * *"},   {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
    {"@weekly", "0 0 * * 0"},   {"@monthly", "0 0 1 * *"}, {"@yearly", "0 0 1 1 *"},
    {"@annually", "0 0 1 1 *"},
};

struct Field {
  std::string_view name;
  int min;
  int max;                                  // for day-of-week 7, which is folded onto 0 (Sunday)
  int star_max;                             // the top of `*`: max, except 6 for day-of-week
  const std::string_view* names = nullptr;  // three-letter names of min.., or null
  std::size_t name_count = 0;
  std::string_view names_hint = "";
};

constexpr Field kFields[] = {
    {"minute", 0, 59, 59},
    {"hour", 0, 23, 23},
    {"day-of-month", 1, 31, 31},
    {"month", 1, 12, 12, kMonthNames.data(), kMonthNames.size(), " or a month name (JAN-DEC)"},
    {"day-of-week", 0, 7, 6, kWeekdayNames.data(), kWeekdayNames.size(),
     " or a weekday name (SUN-SAT)"},
};

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

bool IsSpace(char c) { return c == ' ' || c == '\t'; }

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (true) {
    std::size_t end = s.find(sep, start);
    if (end == std::string_view::npos) {
      parts.push_back(s.substr(start));
      return parts;
    }
    parts.push_back(s.substr(start, end - start));
    start = end + 1;
  }
}

class FieldParser {
 public:
  FieldParser(std::string_view expr, const Field& field) : expr_(expr), field_(field) {}

  // Sets in *bits the values `text` (one whole field) selects.
  Status Parse(std::string_view text, std::uint64_t* bits) const {
    for (std::string_view item : Split(text, ',')) {
      if (item.empty()) return Error(text, "has an empty list item");
      RETURN_IF_ERROR(ParseItem(item, bits));
    }
    return Status::Ok();
  }

 private:
  Status Error(std::string_view value, std::string_view problem) const {
    return InvalidArgument(fmt::format("cron {}: {} field {} {}", QuoteUntrusted(expr_, 64),
                                       field_.name, QuoteUntrusted(value, 32), problem));
  }

  // `*`, `a`, `a-b`, each with an optional `/step`.
  Status ParseItem(std::string_view item, std::uint64_t* bits) const {
    std::string_view base = item;
    int step = 1;
    bool has_step = false;
    if (std::size_t slash = item.find('/'); slash != std::string_view::npos) {
      base = item.substr(0, slash);
      std::string_view step_text = item.substr(slash + 1);
      int span = field_.max - field_.min + 1;
      if (!ParseNumber(step_text, &step) || step < 1 || step > span) {
        return Error(item, fmt::format("has a bad step '{}' (use /1 to /{})", step_text, span));
      }
      has_step = true;
    }
    int lo = 0;
    int hi = 0;
    if (base == "*") {
      lo = field_.min;
      hi = field_.star_max;
    } else if (std::size_t dash = base.find('-'); dash != std::string_view::npos) {
      RETURN_IF_ERROR(ParseValue(base.substr(0, dash), &lo));
      RETURN_IF_ERROR(ParseValue(base.substr(dash + 1), &hi));
      if (lo > hi) return Error(item, "is a backwards range (a-b needs a <= b)");
    } else {
      if (base.empty()) return Error(item, "has no value before the step");
      RETURN_IF_ERROR(ParseValue(base, &lo));
      hi = has_step ? field_.max : lo;  // `a/n` runs from a to the top
    }
    for (int v = lo; v <= hi; v += step) {
      int bit = (field_.max == 7 && v == 7) ? 0 : v;  // day-of-week 7 is Sunday
      *bits |= std::uint64_t{1} << bit;
    }
    return Status::Ok();
  }

  // A number in range, or a name.
  Status ParseValue(std::string_view text, int* value) const {
    if (text.empty()) return Error(text, "has an empty value in a range");
    if (ParseNumber(text, value)) {
      if (*value < field_.min || *value > field_.max) {
        return Error(text, fmt::format("is out of range {}-{}", field_.min, field_.max));
      }
      return Status::Ok();
    }
    for (std::size_t i = 0; i < field_.name_count; ++i) {
      if (EqualsIgnoreCase(text, field_.names[i])) {
        *value = field_.min + static_cast<int>(i);
        return Status::Ok();
      }
    }
    return Error(text, fmt::format("is not a number{}", field_.names_hint));
  }

  // Decimal digits only. Values are capped at 100000, which is out of every range.
  static bool ParseNumber(std::string_view text, int* value) {
    if (text.empty()) return false;
    int v = 0;
    for (char c : text) {
      if (c < '0' || c > '9') return false;
      v = std::min(v * 10 + (c - '0'), 100000);
    }
    *value = v;
    return true;
  }

  std::string_view expr_;
  const Field& field_;
};

using Minutes = std::chrono::duration<std::int64_t, std::ratio<60>>;
using Days = std::chrono::duration<std::int64_t, std::ratio<86400>>;

std::int64_t FloorDiv(std::int64_t a, std::int64_t b) {
  std::int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

}  // namespace

Result<CronSchedule> CronSchedule::Parse(std::string_view expr) {
  if (expr.size() > kMaxExpressionLength) {
    return InvalidArgument(fmt::format("cron {}: is {} bytes long; at most {} allowed",
                                       QuoteUntrusted(expr, 64), expr.size(),
                                       kMaxExpressionLength));
  }
  std::string_view text = expr;
  while (!text.empty() && IsSpace(text.front())) text.remove_prefix(1);
  while (!text.empty() && IsSpace(text.back())) text.remove_suffix(1);

  if (!text.empty() && text.front() == '@') {
    for (const Macro& macro : kMacros) {
      if (EqualsIgnoreCase(text, macro.name)) {
        Result<CronSchedule> expanded = Parse(macro.expansion);
        assert(expanded.ok());
        return expanded;
      }
    }
    return InvalidArgument(fmt::format(
        "cron {}: unknown macro (use @hourly, @daily, @midnight, @weekly, @monthly, @yearly or "
        "@annually)",
        QuoteUntrusted(expr, 64)));
  }

  std::vector<std::string_view> fields;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && IsSpace(text[i])) ++i;
    std::size_t start = i;
    while (i < text.size() && !IsSpace(text[i])) ++i;
    if (i > start) fields.push_back(text.substr(start, i - start));
  }
  if (fields.size() != 5) {
    return InvalidArgument(fmt::format(
        "cron {}: expected 5 fields (minute hour day-of-month month day-of-week) or a macro "
        "such as @daily, found {}",
        QuoteUntrusted(expr, 64), fields.size()));
  }

  std::uint64_t bits[5] = {};
  for (std::size_t f = 0; f < 5; ++f) {
    RETURN_IF_ERROR(FieldParser(expr, kFields[f]).Parse(fields[f], &bits[f]));
  }
  CronSchedule schedule;
  schedule.minutes_ = bits[0];
  schedule.hours_ = static_cast<std::uint32_t>(bits[1]);
  schedule.days_ = static_cast<std::uint32_t>(bits[2]);
  schedule.months_ = static_cast<std::uint16_t>(bits[3]);
  schedule.weekdays_ = static_cast<std::uint8_t>(bits[4]);
  schedule.days_star_ = fields[2].front() == '*';
  schedule.weekdays_star_ = fields[4].front() == '*';
  return schedule;
}

bool CronSchedule::DayMatches(int day_of_month, int weekday) const {
  bool dom = ((days_ >> day_of_month) & 1u) != 0;
  bool dow = ((weekdays_ >> weekday) & 1u) != 0;
  // Vixie cron: with either field unrestricted only the other counts; with both restricted
  // either one is enough.
  if (days_star_ || weekdays_star_) return dom && dow;
  return dom || dow;
}

std::chrono::system_clock::time_point CronSchedule::Next(
    std::chrono::system_clock::time_point after) const {
  using namespace std::chrono;
  constexpr auto kNever = system_clock::time_point::max();
  const std::int64_t last_minute = floor<Minutes>(kNever.time_since_epoch()).count();
  const std::int64_t after_minute = floor<Minutes>(after.time_since_epoch()).count();
  if (after_minute >= last_minute) return kNever;

  const std::int64_t start = after_minute + 1;  // strictly after: the next whole minute
  std::int64_t day = FloorDiv(start, 24 * 60);
  int hour = static_cast<int>((start - day * 24 * 60) / 60);
  int minute = static_cast<int>((start - day * 24 * 60) % 60);
  const std::int64_t last_day = day + kHorizonDays;

  while (day <= last_day) {
    const sys_days date{Days{day}};
    const year_month_day ymd{date};
    if (((months_ >> static_cast<unsigned>(ymd.month())) & 1u) == 0) {
      // Skip to the first of the next month.
      const year_month_day first = ymd.year() / ymd.month() / 1 + std::chrono::months{1};
      day = floor<Days>(sys_days{first}.time_since_epoch()).count();
      hour = minute = 0;
      continue;
    }
    if (!DayMatches(static_cast<int>(static_cast<unsigned>(ymd.day())),
                    static_cast<int>(weekday{date}.c_encoding()))) {
      ++day;
      hour = minute = 0;
      continue;
    }
    for (; hour < 24; ++hour, minute = 0) {
      if (((hours_ >> hour) & 1u) == 0) continue;
      const std::uint64_t rest = minutes_ >> minute;
      if (rest == 0) continue;
      const std::int64_t found =
          day * 24 * 60 + hour * 60 + minute + static_cast<int>(std::countr_zero(rest));
      if (found > last_minute) return kNever;
      return system_clock::time_point(duration_cast<system_clock::duration>(Minutes{found}));
    }
    ++day;
    hour = minute = 0;
  }
  return kNever;
}

}  // namespace wisp
