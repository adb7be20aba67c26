#include "detect/series_csv.h"

#include <charconv>
#include <cmath>

#include "fmt/format.h"

namespace wisp::detect {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

std::vector<std::string_view> SplitCommas(std::string_view line) {
  std::vector<std::string_view> fields;
  size_t start = 0;
  while (true) {
    size_t comma = line.find(',', start);
    fields.push_back(Trim(line.substr(start, comma - start)));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return fields;
}

bool ParseNumber(std::string_view s, double& out) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size() && std::isfinite(out);
}

bool Digits(std::string_view s, size_t at, size_t n, int& out) {
  if (at + n > s.size()) return false;
  out = 0;
  for (size_t i = at; i < at + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's civil algorithm).
int64_t DaysFromCivil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

}  // namespace

Result<double> ParseTimestamp(std::string_view text) {
  text = Trim(text);
  double number = 0;
  if (ParseNumber(text, number)) return number;
  int year, month, day, hour, minute, second;
  if (text.size() < 19 || !Digits(text, 0, 4, year) || text[4] != '-' ||
      !Digits(text, 5, 2, month) || text[7] != '-' || !Digits(text, 8, 2, day) ||
      (text[10] != ' ' && text[10] != 'T') || !Digits(text, 11, 2, hour) || text[13] != ':' ||
      !Digits(text, 14, 2, minute) || text[16] != ':' || !Digits(text, 17, 2, second) ||
      month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
    return InvalidArgument(fmt::format(
        "'{}' is not a timestamp (want YYYY-MM-DD HH:MM:SS or seconds)", text.substr(0, 40)));
  }
  std::string_view rest = text.substr(19);
  double fraction = 0;
  if (!rest.empty() && rest.front() == '.') {
    size_t n = 1;
    double scale = 0.1;
    while (n < rest.size() && rest[n] >= '0' && rest[n] <= '9') {
      fraction += (rest[n] - '0') * scale;
      scale /= 10;
      ++n;
    }
    if (n == 1) return InvalidArgument("timestamp has a '.' without digits");
    rest.remove_prefix(n);
  }
  if (rest == "Z") rest = {};
  if (!rest.empty()) {
    return InvalidArgument(fmt::format("timestamp '{}' has trailing text", text.substr(0, 40)));
  }
  int64_t days = DaysFromCivil(year, month, day);
  return static_cast<double>(days * 86400 + hour * 3600 + minute * 60 + second) + fraction;
}

Result<Series> ParseSeriesCsv(std::string_view text) {
  Series series;
  size_t line_number = 0;
  bool have_header = false;
  size_t pos = 0;
  std::vector<std::string_view> fields;
  while (pos < text.size()) {
    size_t newline = text.find('\n', pos);
    std::string_view line = text.substr(
        pos, newline == std::string_view::npos ? std::string_view::npos : newline - pos);
    pos = newline == std::string_view::npos ? text.size() : newline + 1;
    ++line_number;
    if (Trim(line).empty()) continue;
    fields = SplitCommas(line);
    if (!have_header) {
      if (fields.size() < 2) {
        return InvalidArgument(fmt::format(
            "line {}: the header needs a timestamp column and at least one value column",
            line_number));
      }
      for (size_t i = 1; i < fields.size(); ++i) series.columns.emplace_back(fields[i]);
      have_header = true;
      continue;
    }
    if (fields.size() != series.columns.size() + 1) {
      return InvalidArgument(fmt::format("line {}: {} field(s), the header has {}", line_number,
                                         fields.size(), series.columns.size() + 1));
    }
    auto time = ParseTimestamp(fields[0]);
    if (!time.ok()) {
      return InvalidArgument(fmt::format("line {}: {}", line_number, time.status().message()));
    }
    for (size_t i = 1; i < fields.size(); ++i) {
      double v = 0;
      if (!ParseNumber(fields[i], v)) {
        return InvalidArgument(fmt::format("line {}: column '{}' value '{}' is not a number",
                                           line_number, series.columns[i - 1],
                                           fields[i].substr(0, 40)));
      }
      series.values.push_back(v);
    }
    series.timestamps.emplace_back(fields[0]);
    series.times.push_back(*time);
  }
  if (!have_header) return InvalidArgument("line 1: empty file, expected a header line");
  return series;
}

}  // namespace wisp::detect
