// `wisp detect` (RunDetect): one output row per input row with the detector's own label, clear
// errors with line numbers for malformed CSVs, and column handling.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>

#include "cli/detect_command.h"

namespace wisp {
namespace {

// 600 rows of a smooth signal with one spike at row 500 (line 502: header + 1-based).
std::string SpikeCsv() {
  std::string csv = "timestamp,value\n";
  for (int i = 0; i < 600; ++i) {
    double v = std::sin(i * 0.3) + (i == 500 ? 25 : 0);
    csv += "2024-01-01 00:" + std::to_string(10 + i / 60) + ":" + (i % 60 < 10 ? "0" : "") +
           std::to_string(i % 60) + "," + std::to_string(v) + "\n";
  }
  return csv;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(DetectCommandTest, PrintsOneRowPerInputRowAndFlagsTheSpike) {
  for (std::string algorithm : {"best", "gaussian", "ewma", "knn", "contextual"}) {
    std::ostringstream out;
    DetectOptions options;
    options.algorithm = algorithm;
    Status s = RunDetect(options, SpikeCsv(), out);
    ASSERT_TRUE(s.ok()) << algorithm << ": " << s.ToString();
    std::vector<std::string> lines = Lines(out.str());
    ASSERT_EQ(lines.size(), 601u) << algorithm;
    EXPECT_EQ(lines[0], "timestamp,score,label");
    EXPECT_EQ(lines[501].substr(0, 20), "2024-01-01 00:18:20,") << algorithm;
    EXPECT_EQ(lines[501].back(), '1') << algorithm << ": " << lines[501];
    int flagged = 0;
    for (size_t i = 1; i < lines.size(); ++i) flagged += lines[i].back() == '1';
    EXPECT_LE(flagged, 6) << algorithm;
  }
}

TEST(DetectCommandTest, ParamsAndColumns) {
  std::string csv = "t,temp,vib\n1,20,0.1\n2,20.5,0.2\n3,21,0.1\n";
  DetectOptions options;
  options.algorithm = "gaussian";
  std::ostringstream out;
  Status two_columns = RunDetect(options, csv, out);
  EXPECT_EQ(two_columns.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(two_columns.message().find("--column"), std::string::npos);
  EXPECT_TRUE(out.str().empty());

  options.column = "vib";
  EXPECT_TRUE(RunDetect(options, csv, out).ok());
  EXPECT_EQ(Lines(out.str()).size(), 4u);

  options.column = "pressure";
  EXPECT_NE(RunDetect(options, csv, out).message().find("no column 'pressure'"), std::string::npos);

  DetectOptions multi;
  multi.algorithm = "mahalanobis";
  std::ostringstream multi_out;
  EXPECT_TRUE(RunDetect(multi, csv, multi_out).ok());  // dims follows the column count
  EXPECT_EQ(Lines(multi_out.str()).size(), 4u);

  DetectOptions bad;
  bad.algorithm = "gaussian";
  bad.column = "temp";
  bad.params = {"window=-3"};
  EXPECT_NE(RunDetect(bad, csv, out).message().find("window"), std::string::npos);
  bad.params = {"window"};
  EXPECT_EQ(RunDetect(bad, csv, out).code(), StatusCode::kInvalidArgument);
  bad.params = {};
  bad.algorithm = "lstm";
  EXPECT_EQ(RunDetect(bad, csv, out).code(), StatusCode::kNotFound);
}

TEST(DetectCommandTest, MalformedCsvNamesTheLine) {
  DetectOptions options;
  std::ostringstream out;
  Status s =
      RunDetect(options, "timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:01:00,x\n", out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("line 3"), std::string::npos) << s.message();
  s = RunDetect(options, "timestamp,value\n2024-01-01 00:00:00,1,2\n", out);
  EXPECT_NE(s.message().find("line 2"), std::string::npos) << s.message();
  s = RunDetect(options, "timestamp,value\n\n\nnot-a-time,1\n", out);
  EXPECT_NE(s.message().find("line 4"), std::string::npos) << s.message();
  EXPECT_TRUE(out.str().empty());
}

TEST(DetectCommandTest, RemainingLifePrintsRulWithItsInterval) {
  // Health 100 falling 1 per second from t = 0 to the threshold 40: the crossing is at t = 60.
  std::string csv = "timestamp,health\n";
  for (int t = 0; t < 50; ++t) {
    csv += std::to_string(t) + "," + std::to_string(100 - t + 0.3 * std::sin(t * 1.7)) + "\n";
  }
  DetectOptions options;
  options.algorithm = "rul";
  options.params = {"threshold=40", "half_life=20"};
  std::ostringstream out;
  Status s = RunDetect(options, csv, out);
  ASSERT_TRUE(s.ok()) << s.ToString();
  std::vector<std::string> lines = Lines(out.str());
  ASSERT_EQ(lines.size(), 51u);
  EXPECT_EQ(lines[0], "timestamp,rul,low,high");
  EXPECT_EQ(lines[1], "0,,,");  // warming up: no estimate yet
  double rul = 0, low = 0, high = 0;
  ASSERT_EQ(std::sscanf(lines[50].c_str(), "49,%lf,%lf,%lf", &rul, &low, &high), 3) << lines[50];
  EXPECT_NEAR(rul, 11, 1.5);
  EXPECT_LE(low, 11);
  EXPECT_GE(high, 11);

  options.params = {"half_life=20"};
  EXPECT_NE(RunDetect(options, csv, out).message().find("threshold"), std::string::npos);
  options.params = {"threshold=40"};
  std::string two = "timestamp,a,b\n1,2,3\n";
  EXPECT_NE(RunDetect(options, two, out).message().find("--column"), std::string::npos);
}

}  // namespace
}  // namespace wisp
