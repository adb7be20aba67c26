#include "common/cron.h"

#include <chrono>
#include <cstdio>
#include <string>

#include <gtest/gtest.h>

namespace wisp {
namespace {

using std::chrono::system_clock;

// "2026-03-10 12:03:00" (UTC) -> time_point.
system_clock::time_point At(const char* text) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
  EXPECT_EQ(std::sscanf(text, "%d-%d-%d %d:%d:%d", &y, &mo, &d, &h, &mi, &s), 6) << text;
  std::chrono::year_month_day ymd{std::chrono::year{y}, std::chrono::month{unsigned(mo)},
                                  std::chrono::day{unsigned(d)}};
  EXPECT_TRUE(ymd.ok()) << text;
  return std::chrono::sys_days{ymd} + std::chrono::hours{h} + std::chrono::minutes{mi} +
         std::chrono::seconds{s};
}

// time_point -> "2026-03-10 12:03:00", or "never" for time_point::max().
std::string Show(system_clock::time_point t) {
  if (t == system_clock::time_point::max()) return "never";
  auto day = std::chrono::floor<std::chrono::days>(t);
  std::chrono::year_month_day ymd{day};
  auto secs = std::chrono::floor<std::chrono::seconds>(t - day).count();
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u %02lld:%02lld:%02lld", int(ymd.year()),
                unsigned(ymd.month()), unsigned(ymd.day()), (long long)(secs / 3600),
                (long long)(secs / 60 % 60), (long long)(secs % 60));
  return buf;
}

CronSchedule MustParse(const char* expr) {
  Result<CronSchedule> r = CronSchedule::Parse(expr);
  EXPECT_TRUE(r.ok()) << expr << ": " << r.status().ToString();
  if (!r.ok()) return *CronSchedule::Parse("* * * * *");
  return *std::move(r);
}

// One hand-computed Next() per row (weekdays: 2026-03-01 is a Sunday, 2026-03-13 a Friday).
struct NextCase {
  const char* expr;
  const char* after;
  const char* next;  // or "never"
};

class CronNextTest : public testing::TestWithParam<NextCase> {};

TEST_P(CronNextTest, Next) {
  const NextCase& c = GetParam();
  CronSchedule schedule = MustParse(c.expr);
  EXPECT_EQ(Show(schedule.Next(At(c.after))), c.next) << c.expr << " after " << c.after;
}

INSTANTIATE_TEST_SUITE_P(
    Cron, CronNextTest,
    testing::Values(
        // Every 5 minutes; strictly after, and seconds do not count.
        NextCase{"*/5 * * * *", "2026-03-10 12:03:00", "2026-03-10 12:05:00"},
        NextCase{"*/5 * * * *", "2026-03-10 12:05:00", "2026-03-10 12:10:00"},
        NextCase{"*/5 * * * *", "2026-03-10 12:05:59", "2026-03-10 12:10:00"},
        NextCase{"*/5 * * * *", "2026-03-10 23:57:00", "2026-03-11 00:00:00"},
        NextCase{"* * * * *", "2026-03-10 12:03:30", "2026-03-10 12:04:00"},
        // Hourly at :30 across a day, month and year boundary.
        NextCase{"30 * * * *", "2026-03-10 22:30:00", "2026-03-10 23:30:00"},
        NextCase{"30 * * * *", "2026-03-10 23:45:00", "2026-03-11 00:30:00"},
        NextCase{"30 * * * *", "2026-03-31 23:30:00", "2026-04-01 00:30:00"},
        NextCase{"30 * * * *", "2026-12-31 23:31:00", "2027-01-01 00:30:00"},
        // Office hours on weekdays.
        NextCase{"0 9-17 * * MON-FRI", "2026-03-13 08:59:59", "2026-03-13 09:00:00"},
        NextCase{"0 9-17 * * MON-FRI", "2026-03-13 12:00:00", "2026-03-13 13:00:00"},
        NextCase{"0 9-17 * * MON-FRI", "2026-03-13 17:00:00", "2026-03-16 09:00:00"},
        NextCase{"0 9-17 * * 1-5", "2026-03-14 10:00:00", "2026-03-16 09:00:00"},
        NextCase{"0 8-18/2 * * *", "2026-03-10 10:00:00", "2026-03-10 12:00:00"},
        NextCase{"0 8-18/2 * * *", "2026-03-10 18:00:00", "2026-03-11 08:00:00"},
        NextCase{"10/20 * * * *", "2026-03-10 12:31:00", "2026-03-10 12:50:00"},  // a/n
        NextCase{"5,10-12 * * * *", "2026-03-10 12:10:00", "2026-03-10 12:11:00"},
        NextCase{"5,10-12 * * * *", "2026-03-10 12:12:00", "2026-03-10 13:05:00"},
        // Day 31 skips the months without one.
        NextCase{"0 0 31 * *", "2026-03-31 00:00:00", "2026-05-31 00:00:00"},
        NextCase{"0 0 31 * *", "2026-04-01 00:00:00", "2026-05-31 00:00:00"},
        NextCase{"59 23 31 12 *", "2026-06-01 00:00:00", "2026-12-31 23:59:00"},
        NextCase{"0 0 30 * *", "2026-01-30 00:00:00", "2026-03-30 00:00:00"},  // no Feb 30
        // Feb 29: the next leap year, 2028.
        NextCase{"0 0 29 2 *", "2026-01-01 00:00:00", "2028-02-29 00:00:00"},
        NextCase{"0 0 29 feb *", "2028-02-29 00:00:00", "2032-02-29 00:00:00"},
        // Both day fields restricted: either matches (Vixie cron).
        NextCase{"0 0 13 * FRI", "2026-03-01 00:00:00", "2026-03-06 00:00:00"},  // a Friday
        NextCase{"0 0 13 * FRI", "2026-03-06 00:00:00", "2026-03-13 00:00:00"},
        NextCase{"0 0 13 * FRI", "2026-03-13 00:00:00", "2026-03-20 00:00:00"},
        NextCase{"0 0 2 * 5", "2026-03-01 00:00:00", "2026-03-02 00:00:00"},  // a Monday
        // One restricted: only it counts. A field starting with '*' counts as unrestricted.
        NextCase{"0 0 13 * *", "2026-03-01 00:00:00", "2026-03-13 00:00:00"},
        NextCase{"0 0 * * FRI", "2026-03-06 00:00:00", "2026-03-13 00:00:00"},
        NextCase{"0 0 */1 * FRI", "2026-03-01 00:00:00", "2026-03-06 00:00:00"},
        NextCase{"0 0 13 * */1", "2026-03-01 00:00:00", "2026-03-13 00:00:00"},
        // Names in any case; 7 and 0 are Sunday.
        NextCase{"15 10 * jan,Jul sun", "2026-03-01 00:00:00", "2026-07-05 10:15:00"},
        NextCase{"15 10 * JAN-jul/6 SUN", "2026-07-05 10:15:00", "2026-07-12 10:15:00"},
        NextCase{"15 10 * jan,Jul sun", "2026-07-31 00:00:00", "2027-01-03 10:15:00"},
        NextCase{"0 0 * * 7", "2026-03-10 00:00:00", "2026-03-15 00:00:00"},
        NextCase{"0 0 * * 0", "2026-03-10 00:00:00", "2026-03-15 00:00:00"},
        NextCase{"0 0 * * 6-7", "2026-03-10 00:00:00", "2026-03-14 00:00:00"},
        NextCase{"0 0 * * 6-7", "2026-03-14 00:00:00", "2026-03-15 00:00:00"},
        // Macros.
        NextCase{"@daily", "2026-03-10 00:00:00", "2026-03-11 00:00:00"},
        NextCase{"@midnight", "2026-03-10 13:00:00", "2026-03-11 00:00:00"},
        NextCase{"@DAILY", "2026-12-31 23:59:59", "2027-01-01 00:00:00"},
        NextCase{"@hourly", "2026-03-10 12:00:00", "2026-03-10 13:00:00"},
        NextCase{"@weekly", "2026-03-10 12:00:00", "2026-03-15 00:00:00"},
        NextCase{"@monthly", "2026-03-10 12:00:00", "2026-04-01 00:00:00"},
        NextCase{"@yearly", "2026-03-10 12:00:00", "2027-01-01 00:00:00"},
        NextCase{" @annually\t", "2026-03-10 12:00:00", "2027-01-01 00:00:00"},
        // Impossible dates never fire.
        NextCase{"0 0 30 2 *", "2026-01-01 00:00:00", "never"},
        NextCase{"0 0 31 2,4,6,9,11 *", "2026-01-01 00:00:00", "never"},
        // Whitespace between fields is free.
        NextCase{"  0\t12  *  * * ", "2026-03-10 12:00:00", "2026-03-11 12:00:00"}));

TEST(CronTest, BeforeTheEpoch) {
  CronSchedule schedule = MustParse("0 0 1 1 *");
  EXPECT_EQ(Show(schedule.Next(At("1969-12-31 23:59:00"))), "1970-01-01 00:00:00");
  EXPECT_EQ(Show(schedule.Next(At("1960-06-01 00:00:00"))), "1961-01-01 00:00:00");
}

TEST(CronTest, NearTheEndOfTimeIsNever) {
  CronSchedule schedule = MustParse("* * * * *");
  EXPECT_EQ(schedule.Next(system_clock::time_point::max()), system_clock::time_point::max());
  EXPECT_EQ(MustParse("0 0 1 1 *").Next(system_clock::time_point::max() - std::chrono::hours(24)),
            system_clock::time_point::max());
}

TEST(CronTest, ImpossibleDateIsFast) {
  CronSchedule schedule = MustParse("0 0 30 2 *");
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(schedule.Next(At("2026-01-01 00:00:00") + std::chrono::hours(i)),
              system_clock::time_point::max());
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

// One bad expression per row and the exact message.
struct BadCron {
  const char* expr;
  const char* message;
};

class CronErrorTest : public testing::TestWithParam<BadCron> {};

TEST_P(CronErrorTest, Message) {
  const BadCron& c = GetParam();
  Result<CronSchedule> r = CronSchedule::Parse(c.expr);
  ASSERT_FALSE(r.ok()) << c.expr;
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), c.message);
}

INSTANTIATE_TEST_SUITE_P(
    Cron, CronErrorTest,
    testing::Values(
        BadCron{"61 * * * *", "cron '61 * * * *': minute field '61' is out of range 0-59"},
        BadCron{"0 24 * * *", "cron '0 24 * * *': hour field '24' is out of range 0-23"},
        BadCron{"0 0 0 * *", "cron '0 0 0 * *': day-of-month field '0' is out of range 1-31"},
        BadCron{"0 0 32 * *", "cron '0 0 32 * *': day-of-month field '32' is out of range 1-31"},
        BadCron{"0 0 * 13 *", "cron '0 0 * 13 *': month field '13' is out of range 1-12"},
        BadCron{"0 0 * * 8", "cron '0 0 * * 8': day-of-week field '8' is out of range 0-7"},
        BadCron{"1,99999999999 * * * *",
                "cron '1,99999999999 * * * *': minute field '99999999999' is out of range 0-59"},
        BadCron{"0 0 * FOO *",
                "cron '0 0 * FOO *': month field 'FOO' is not a number or a month name (JAN-DEC)"},
        BadCron{"0 0 * * MONDAY",
                "cron '0 0 * * MONDAY': day-of-week field 'MONDAY' is not a "
                "number or a weekday name (SUN-SAT)"},
        BadCron{"MON * * * *", "cron 'MON * * * *': minute field 'MON' is not a number"},
        BadCron{"0 0 * JAN *x",
                "cron '0 0 * JAN *x': day-of-week field '*x' is not a number or "
                "a weekday name (SUN-SAT)"},
        BadCron{"-5 * * * *", "cron '-5 * * * *': minute field '' has an empty value in a range"},
        BadCron{"5-2 * * * *",
                "cron '5-2 * * * *': minute field '5-2' is a backwards range (a-b needs a <= b)"},
        BadCron{"1-2-3 * * * *", "cron '1-2-3 * * * *': minute field '2-3' is not a number"},
        BadCron{"*/0 * * * *",
                "cron '*/0 * * * *': minute field '*/0' has a bad step '0' (use /1 to /60)"},
        BadCron{"*/x * * * *",
                "cron '*/x * * * *': minute field '*/x' has a bad step 'x' (use /1 to /60)"},
        BadCron{"*/5/2 * * * *",
                "cron '*/5/2 * * * *': minute field '*/5/2' has a bad step '5/2' (use /1 to /60)"},
        BadCron{"/5 * * * *", "cron '/5 * * * *': minute field '/5' has no value before the step"},
        BadCron{"1,,2 * * * *", "cron '1,,2 * * * *': minute field '1,,2' has an empty list item"},
        BadCron{"1, * * * *", "cron '1, * * * *': minute field '1,' has an empty list item"},
        BadCron{"",
                "cron '': expected 5 fields (minute hour day-of-month month day-of-week) or a "
                "macro such as @daily, found 0"},
        BadCron{"* * * *",
                "cron '* * * *': expected 5 fields (minute hour day-of-month month "
                "day-of-week) or a macro such as @daily, found 4"},
        BadCron{"0 0 * * * *",
                "cron '0 0 * * * *': expected 5 fields (minute hour day-of-month "
                "month day-of-week) or a macro such as @daily, found 6"},
        BadCron{"@reboot",
                "cron '@reboot': unknown macro (use @hourly, @daily, @midnight, "
                "@weekly, @monthly, @yearly or @annually)"},
        BadCron{"@daily 5",
                "cron '@daily 5': unknown macro (use @hourly, @daily, @midnight, "
                "@weekly, @monthly, @yearly or @annually)"}));

TEST(CronTest, HostileTextIsQuotedAndCut) {
  Result<CronSchedule> r = CronSchedule::Parse("0 0 * * \x01\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message().find('\n'), std::string::npos) << r.status().message();
  r = CronSchedule::Parse(std::string(2000, '1'));
  ASSERT_FALSE(r.ok());
  EXPECT_LT(r.status().message().size(), 200u) << r.status().message();
}

}  // namespace
}  // namespace wisp
