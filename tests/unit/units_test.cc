#include "wisp/units.h"

#include <chrono>
#include <cstdint>
#include <string>

#include <gtest/gtest.h>

namespace wisp {
namespace {

using std::chrono::milliseconds;

TEST(ParseDurationTest, AcceptsEveryUnit) {
  struct Case {
    const char* text;
    std::int64_t ms;
  };
  for (const Case& c : {Case{"250ms", 250}, Case{"2s", 2000}, Case{"1.5s", 1500},
                        Case{"5m", 300'000}, Case{"1h", 3'600'000}, Case{"0ms", 0}, Case{"3", 3000},
                        Case{" 2s ", 2000}, Case{"0.5ms", 1}}) {
    Result<milliseconds> d = ParseDuration(c.text);
    ASSERT_TRUE(d.ok()) << c.text << ": " << d.status().ToString();
    EXPECT_EQ(d->count(), c.ms) << c.text;
  }
}

TEST(ParseDurationTest, RefusesBadInput) {
  for (const char* text :
       {"", "s", "-1s", "1.2.3s", "abc", "1 s", "1d", "1e3", "1S", ".", "99999999999999999h"}) {
    Result<milliseconds> d = ParseDuration(text);
    ASSERT_FALSE(d.ok()) << "'" << text << "' parsed as " << d->count() << "ms";
    EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument) << text;
  }
}

TEST(ParseDurationTest, UnknownUnitIsNamed) {
  Result<milliseconds> d = ParseDuration("3d");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().message(), "'3d' has an unknown duration unit 'd' (use ms, s, m or h)");
}

TEST(ParseByteSizeTest, AcceptsEveryUnit) {
  struct Case {
    const char* text;
    std::uint64_t bytes;
  };
  for (const Case& c :
       {Case{"512", 512}, Case{"512B", 512}, Case{"64Ki", 64 << 10}, Case{"32Mi", 32ull << 20},
        Case{"1Gi", 1ull << 30}, Case{"1.5Ki", 1536}, Case{"4kB", 4000}, Case{"10MB", 10'000'000},
        Case{"2GB", 2'000'000'000}, Case{"1K", 1024}, Case{"1M", 1 << 20}, Case{"1G", 1ull << 30},
        Case{"0", 0}}) {
    Result<std::uint64_t> b = ParseByteSize(c.text);
    ASSERT_TRUE(b.ok()) << c.text << ": " << b.status().ToString();
    EXPECT_EQ(*b, c.bytes) << c.text;
  }
}

TEST(ParseByteSizeTest, RefusesBadInput) {
  for (const char* text :
       {"", "Mi", "-1Mi", "1..2Mi", "lots", "32Q", "1mi", "1 TB", "99999999999Gi"}) {
    Result<std::uint64_t> b = ParseByteSize(text);
    ASSERT_FALSE(b.ok()) << "'" << text << "' parsed as " << *b;
    EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument) << text;
  }
}

TEST(ParseByteSizeTest, UnknownUnitIsNamed) {
  Result<std::uint64_t> b = ParseByteSize("32Q");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().message(),
            "'32Q' has an unknown size unit 'Q' (use Ki, Mi, Gi, kB, MB or GB)");
}

TEST(FormatTest, ByteSizes) {
  EXPECT_EQ(FormatByteSize(0), "0");
  EXPECT_EQ(FormatByteSize(1000), "1000");
  EXPECT_EQ(FormatByteSize(1024), "1Ki");
  EXPECT_EQ(FormatByteSize(32ull << 20), "32Mi");
  EXPECT_EQ(FormatByteSize(4ull << 30), "4Gi");
  EXPECT_EQ(FormatByteSize((1ull << 20) + 1), "1048577");
}

TEST(FormatTest, Durations) {
  EXPECT_EQ(FormatDuration(milliseconds(0)), "0s");
  EXPECT_EQ(FormatDuration(milliseconds(1)), "1ms");
  EXPECT_EQ(FormatDuration(milliseconds(1500)), "1500ms");
  EXPECT_EQ(FormatDuration(milliseconds(2000)), "2s");
  EXPECT_EQ(FormatDuration(milliseconds(300'000)), "5m");
  EXPECT_EQ(FormatDuration(milliseconds(7'200'000)), "2h");
}

TEST(FormatTest, RoundTrips) {
  for (std::uint64_t bytes : {1ull, 1023ull, 1ull << 10, 3ull << 20, 5ull << 30}) {
    Result<std::uint64_t> back = ParseByteSize(FormatByteSize(bytes));
    ASSERT_TRUE(back.ok()) << bytes;
    EXPECT_EQ(*back, bytes);
  }
  for (std::int64_t ms : {1, 999, 1000, 61'000, 60'000, 3'600'000}) {
    Result<milliseconds> back = ParseDuration(FormatDuration(milliseconds(ms)));
    ASSERT_TRUE(back.ok()) << ms;
    EXPECT_EQ(back->count(), ms);
  }
}

}  // namespace
}  // namespace wisp
