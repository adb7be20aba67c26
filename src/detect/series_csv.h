// Reads a time series from CSV text: a header line, then one row per point with a timestamp in
// the first column and one or more numbers after it. This text is untrusted (a user's file, a
// fuzz input): every malformed line is an InvalidArgument error naming its line number.
//
// Timestamps: "YYYY-MM-DD HH:MM:SS" (a 'T' instead of the space, fractional seconds and a
// trailing 'Z' are accepted; always read as UTC) or a plain number of seconds. Lines may end in
// "\r\n"; empty lines are skipped. Plain values, no thread concerns.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "wisp/status.h"

namespace wisp::detect {

struct Series {
  std::vector<std::string> columns;     // header names after the timestamp column
  std::vector<std::string> timestamps;  // as written, one per row
  std::vector<double> times;            // seconds since 1970-01-01 UTC
  std::vector<double> values;           // row-major, columns.size() per row
  size_t width() const { return columns.size(); }
  size_t rows() const { return times.size(); }
};

Result<Series> ParseSeriesCsv(std::string_view text);

// Seconds since the epoch for "YYYY-MM-DD HH:MM:SS[.frac][Z]" (or 'T'), or a plain number.
// InvalidArgument when it is neither.
Result<double> ParseTimestamp(std::string_view text);

}  // namespace wisp::detect
