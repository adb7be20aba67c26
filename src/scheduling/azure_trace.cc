#include "scheduling/azure_trace.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>
#include <unordered_map>

#include <fmt/format.h>

namespace wisp {
namespace {

// Far above the busiest function of the sample (36,612 in one minute): the limit keeps a
// corrupt file from asking ExpandAzureTrace for terabytes.
constexpr double kMaxPerMinute = 1e7;

struct CsvTable {
  std::vector<std::string_view> header;
  std::vector<std::vector<std::string_view>> rows;
  std::vector<size_t> line_numbers;
};

std::vector<std::string_view> SplitFields(std::string_view line) {
  std::vector<std::string_view> fields;
  size_t start = 0;
  while (true) {
    const size_t comma = line.find(',', start);
    if (comma == std::string_view::npos) {
      fields.push_back(line.substr(start));
      return fields;
    }
    fields.push_back(line.substr(start, comma - start));
    start = comma + 1;
  }
}

// Views into `text`, which must outlive the table.
Result<CsvTable> ParseCsv(std::string_view text, std::string_view file) {
  CsvTable table;
  size_t line_number = 0;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    std::vector<std::string_view> fields = SplitFields(line);
    if (table.header.empty()) {
      table.header = std::move(fields);
      continue;
    }
    if (fields.size() != table.header.size()) {
      return InvalidArgument(fmt::format("{} line {}: {} fields, the header has {}", file,
                                         line_number, fields.size(), table.header.size()));
    }
    table.rows.push_back(std::move(fields));
    table.line_numbers.push_back(line_number);
  }
  if (table.header.empty()) return InvalidArgument(fmt::format("{}: empty file", file));
  return table;
}

Result<size_t> Column(const CsvTable& table, std::string_view name, std::string_view file) {
  auto it = std::find(table.header.begin(), table.header.end(), name);
  if (it == table.header.end()) {
    return InvalidArgument(fmt::format("{}: no column '{}' in the header", file, name));
  }
  return static_cast<size_t>(it - table.header.begin());
}

Result<double> Number(std::string_view text, std::string_view file, size_t line,
                      std::string_view column) {
  double value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || !std::isfinite(value) ||
      value < 0 || value > 1e15) {
    return InvalidArgument(
        fmt::format("{} line {} column {}: '{}' is not a number >= 0", file, line, column, text));
  }
  return value;
}

}  // namespace

Result<AzureTrace> ParseAzureTrace(std::string_view inv_csv, std::string_view run_csv,
                                   std::string_view mem_csv) {
  ASSIGN_OR_RETURN(CsvTable run, ParseCsv(run_csv, "_run.csv"));
  ASSIGN_OR_RETURN(size_t run_function, Column(run, "HashFunction", "_run.csv"));
  ASSIGN_OR_RETURN(size_t run_average, Column(run, "Average", "_run.csv"));
  std::unordered_map<std::string_view, double> durations;
  for (size_t r = 0; r < run.rows.size(); ++r) {
    ASSIGN_OR_RETURN(double ms,
                     Number(run.rows[r][run_average], "_run.csv", run.line_numbers[r], "Average"));
    durations[run.rows[r][run_function]] = ms;
  }

  ASSIGN_OR_RETURN(CsvTable mem, ParseCsv(mem_csv, "_mem.csv"));
  ASSIGN_OR_RETURN(size_t mem_app, Column(mem, "HashApp", "_mem.csv"));
  ASSIGN_OR_RETURN(size_t mem_average, Column(mem, "AverageAllocatedMb", "_mem.csv"));
  std::unordered_map<std::string_view, double> memory;
  for (size_t r = 0; r < mem.rows.size(); ++r) {
    ASSIGN_OR_RETURN(double mb, Number(mem.rows[r][mem_average], "_mem.csv", mem.line_numbers[r],
                                       "AverageAllocatedMb"));
    memory[mem.rows[r][mem_app]] = mb;
  }

  ASSIGN_OR_RETURN(CsvTable inv, ParseCsv(inv_csv, "_inv.csv"));
  ASSIGN_OR_RETURN(size_t inv_function, Column(inv, "HashFunction", "_inv.csv"));
  ASSIGN_OR_RETURN(size_t inv_app, Column(inv, "HashApp", "_inv.csv"));
  ASSIGN_OR_RETURN(size_t first_minute, Column(inv, "minute_1", "_inv.csv"));
  AzureTrace trace;
  trace.minutes = static_cast<int>(inv.header.size() - first_minute);
  std::unordered_map<std::string_view, size_t> app_index;
  for (size_t r = 0; r < inv.rows.size(); ++r) {
    const auto& row = inv.rows[r];
    const size_t line = inv.line_numbers[r];
    auto duration = durations.find(row[inv_function]);
    if (duration == durations.end()) {
      return InvalidArgument(
          fmt::format("_inv.csv line {}: function {} is not in _run.csv", line, row[inv_function]));
    }
    auto mb = memory.find(row[inv_app]);
    if (mb == memory.end()) {
      return InvalidArgument(
          fmt::format("_inv.csv line {}: app {} is not in _mem.csv", line, row[inv_app]));
    }
    auto [it, added] = app_index.emplace(row[inv_app], trace.apps.size());
    if (added) {
      AzureTraceApp app;
      app.hash_app = std::string(row[inv_app]);
      app.per_minute.assign(trace.minutes, 0);
      app.memory_mb = std::llround(mb->second);
      trace.apps.push_back(std::move(app));
    }
    AzureTraceApp& app = trace.apps[it->second];
    app.duration_ms = std::max(app.duration_ms, duration->second);
    for (int m = 0; m < trace.minutes; ++m) {
      ASSIGN_OR_RETURN(double count, Number(row[first_minute + m], "_inv.csv", line,
                                            inv.header[first_minute + m]));
      if (count > kMaxPerMinute) {
        return InvalidArgument(
            fmt::format("_inv.csv line {} column {}: {} invocations in a minute "
                        "(more than {} is not a trace this simulator replays)",
                        line, inv.header[first_minute + m], count, kMaxPerMinute));
      }
      app.per_minute[m] += std::llround(count);
    }
  }
  return trace;
}

Result<AzureTrace> LoadAzureTrace(const std::string& dir, int functions) {
  std::string contents[3];
  const char* kinds[3] = {"inv", "run", "mem"};
  for (int i = 0; i < 3; ++i) {
    const std::string path = fmt::format("{}/{}_{}.csv", dir, functions, kinds[i]);
    std::ifstream file(path, std::ios::binary);
    if (!file) return NotFound(fmt::format("cannot open {}", path));
    std::ostringstream buffer;
    buffer << file.rdbuf();
    contents[i] = std::move(buffer).str();
  }
  Result<AzureTrace> trace = ParseAzureTrace(contents[0], contents[1], contents[2]);
  if (!trace.ok()) return trace.status().WithContext(fmt::format("{}/{}_*.csv", dir, functions));
  return trace;
}

std::vector<SimApp> ExpandAzureTrace(const AzureTrace& trace, uint64_t seed) {
  std::vector<SimApp> apps;
  apps.reserve(trace.apps.size());
  std::vector<SimInvocation> invocations;
  std::vector<PolicyTimeMs> offsets;
  for (size_t a = 0; a < trace.apps.size(); ++a) {
    const AzureTraceApp& source = trace.apps[a];
    std::mt19937_64 random(seed * 1'000'003 + a);
    std::uniform_int_distribution<PolicyTimeMs> within_minute(0, kMsPerMinute - 1);
    const PolicyTimeMs duration = std::llround(source.duration_ms);
    invocations.clear();
    for (int m = 0; m < trace.minutes; ++m) {
      offsets.resize(source.per_minute[m]);
      for (PolicyTimeMs& offset : offsets) offset = within_minute(random);
      std::sort(offsets.begin(), offsets.end());
      for (PolicyTimeMs offset : offsets) {
        invocations.push_back({m * kMsPerMinute + offset, duration, 1});
      }
    }
    apps.push_back({source.memory_mb, MergeOverlapping(invocations)});
  }
  return apps;
}

}  // namespace wisp
