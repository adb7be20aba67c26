// The series CSV reader behind `wisp detect` and bench/nab: good files parse, every malformed
// line is an error that names its line number.
#include <gtest/gtest.h>

#include "detect/series_csv.h"

namespace wisp::detect {
namespace {

TEST(SeriesCsvTest, ReadsTimestampsAndValueColumns) {
  auto s = ParseSeriesCsv(
      "timestamp,temp,vib\r\n2014-04-01 00:00:00,1.5,2\r\n\n2014-04-01T00:05:00.5Z,-3e2,+4\n");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_EQ(s->rows(), 2u);
  EXPECT_EQ(s->columns, (std::vector<std::string>{"temp", "vib"}));
  EXPECT_EQ(s->timestamps[0], "2014-04-01 00:00:00");
  EXPECT_EQ(s->times[0], 1396310400.0);  // date -u -d 2014-04-01 +%s
  EXPECT_EQ(s->times[1], 1396310700.5);
  EXPECT_EQ(s->values, (std::vector<double>{1.5, 2, -300, 4}));

  auto numeric = ParseSeriesCsv("t,value\n10,1\n20,2\n");
  ASSERT_TRUE(numeric.ok());
  EXPECT_EQ(numeric->times[1], 20.0);
}

TEST(SeriesCsvTest, MalformedLinesNameTheirLineNumber) {
  struct Case {
    const char* text;
    const char* expected;
  } cases[] = {
      {"", "line 1: empty file"},
      {"timestamp\n1,2\n", "line 1: the header needs"},
      {"t,v\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00\n", "line 3: 1 field(s), the header has 2"},
      {"t,v\n2014-04-01 00:00:00,1\n\n2014-04-01 00:05:00,abc\n", "line 4: column 'v' value 'abc'"},
      {"t,v\nyesterday,1\n", "line 2: 'yesterday' is not a timestamp"},
      {"t,v\n2014-13-01 00:00:00,1\n", "line 2:"},
      {"t,v\n2014-04-01 00:00:00x,1\n", "line 2: timestamp '2014-04-01 00:00:00x' has trailing"},
      {"t,v\n1,nan\n", "line 2: column 'v' value 'nan' is not a number"},
      {"t,v\n1,1,2\n", "line 2: 3 field(s)"},
  };
  for (const Case& c : cases) {
    auto s = ParseSeriesCsv(c.text);
    ASSERT_FALSE(s.ok()) << c.text;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find(c.expected), std::string::npos)
        << s.status().message() << " (want " << c.expected << ")";
  }
}

}  // namespace
}  // namespace wisp::detect
