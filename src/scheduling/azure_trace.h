// The Azure Functions 2019 trace sample (Shahrad et al., ATC 2020; file formats in
// $WISP_DATA_DIR/README.md): per-minute invocation counts, average durations and memory per
// application, and its expansion into invocations for the trace simulator.
//
// Thread safety: plain functions of their arguments.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "scheduling/trace_sim.h"
#include "wisp/status.h"

namespace wisp {

struct AzureTraceApp {
  std::string hash_app;
  std::vector<int64_t> per_minute;  // invocations in each minute of the day
  double duration_ms = 0;           // average execution time (the largest of its functions')
  int64_t memory_mb = 0;            // average allocated memory
};

struct AzureTrace {
  std::vector<AzureTraceApp> apps;  // in the order of the invocation file
  int minutes = 0;
};

// Parses the three CSV files' contents (`_inv`, `_run`, `_mem`). Functions of the same app are
// folded into it (counts added). InvalidArgument, naming the file, line and column, for a
// missing column, a bad number, a row of the wrong width, or an app or function missing from
// the `_run` / `_mem` file. Never crashes on any input.
Result<AzureTrace> ParseAzureTrace(std::string_view inv_csv, std::string_view run_csv,
                                   std::string_view mem_csv);

// Reads DIR/N_inv.csv, DIR/N_run.csv and DIR/N_mem.csv. NotFound when a file is missing.
Result<AzureTrace> LoadAzureTrace(const std::string& dir, int functions);

// Spreads each minute's count uniformly at random within the minute (a fixed seed per app, so
// the same seed gives the same trace) and folds overlapping invocations (MergeOverlapping).
std::vector<SimApp> ExpandAzureTrace(const AzureTrace& trace, uint64_t seed);

}  // namespace wisp
