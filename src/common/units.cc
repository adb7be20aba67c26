#include "wisp/units.h"

#include <charconv>
#include <cmath>
#include <string>

#include <fmt/format.h>

namespace wisp {
namespace {

// Splits "12.5Mi" into 12.5 and "Mi". Fails on anything that is not a non-negative number.
bool SplitNumber(std::string_view text, double* number, std::string_view* suffix) {
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
  size_t end = 0;
  while (end < text.size() && ((text[end] >= '0' && text[end] <= '9') || text[end] == '.')) ++end;
  if (end == 0) return false;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + end, *number);
  if (ec != std::errc() || ptr != text.data() + end || !std::isfinite(*number)) return false;
  *suffix = text.substr(end);
  return true;
}

}  // namespace

Result<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  double number = 0;
  std::string_view suffix;
  if (!SplitNumber(text, &number, &suffix)) {
    return InvalidArgument(
        fmt::format("'{}' is not a duration (examples: 250ms, 2s, 5m, 1h)", text));
  }
  double ms_per_unit = 0;
  if (suffix == "ms")
    ms_per_unit = 1;
  else if (suffix == "s" || suffix.empty())
    ms_per_unit = 1000;
  else if (suffix == "m")
    ms_per_unit = 60'000;
  else if (suffix == "h")
    ms_per_unit = 3'600'000;
  else {
    return InvalidArgument(
        fmt::format("'{}' has an unknown duration unit '{}' (use ms, s, m or h)", text, suffix));
  }
  double ms = number * ms_per_unit;
  if (ms > 1e12) return InvalidArgument(fmt::format("duration '{}' is too large", text));
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(ms)));
}

Result<std::uint64_t> ParseByteSize(std::string_view text) {
  double number = 0;
  std::string_view suffix;
  if (!SplitNumber(text, &number, &suffix)) {
    return InvalidArgument(
        fmt::format("'{}' is not a byte size (examples: 4096, 64Ki, 32Mi, 1Gi)", text));
  }
  double multiplier = 0;
  if (suffix.empty() || suffix == "B")
    multiplier = 1;
  else if (suffix == "Ki" || suffix == "K" || suffix == "KiB")
    multiplier = 1024.0;
  else if (suffix == "Mi" || suffix == "M" || suffix == "MiB")
    multiplier = 1024.0 * 1024;
  else if (suffix == "Gi" || suffix == "G" || suffix == "GiB")
    multiplier = 1024.0 * 1024 * 1024;
  else if (suffix == "kB" || suffix == "KB")
    multiplier = 1e3;
  else if (suffix == "MB")
    multiplier = 1e6;
  else if (suffix == "GB")
    multiplier = 1e9;
  else {
    return InvalidArgument(fmt::format(
        "'{}' has an unknown size unit '{}' (use Ki, Mi, Gi, kB, MB or GB)", text, suffix));
  }
  double bytes = number * multiplier;
  if (bytes > 1e15) return InvalidArgument(fmt::format("byte size '{}' is too large", text));
  return static_cast<std::uint64_t>(std::llround(bytes));
}

std::string FormatByteSize(std::uint64_t bytes) {
  if (bytes >= (1ull << 30) && bytes % (1ull << 30) == 0) return fmt::format("{}Gi", bytes >> 30);
  if (bytes >= (1ull << 20) && bytes % (1ull << 20) == 0) return fmt::format("{}Mi", bytes >> 20);
  if (bytes >= (1ull << 10) && bytes % (1ull << 10) == 0) return fmt::format("{}Ki", bytes >> 10);
  return fmt::format("{}", bytes);
}

std::string FormatDuration(std::chrono::milliseconds d) {
  auto ms = d.count();
  if (ms % 3'600'000 == 0 && ms > 0) return fmt::format("{}h", ms / 3'600'000);
  if (ms % 60'000 == 0 && ms > 0) return fmt::format("{}m", ms / 60'000);
  if (ms % 1000 == 0) return fmt::format("{}s", ms / 1000);
  return fmt::format("{}ms", ms);
}

}  // namespace wisp
