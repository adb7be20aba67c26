// `wisp detect`: runs an anomaly detector over a CSV file and prints timestamp,score,label per
// row (docs/anomaly-detection.md), so users can try the detectors on their own data offline.
// `--algorithm rul` runs the remaining-life estimator instead and prints timestamp,rul,low,high.
//
// Split for testing: RunDetect does the work on text it is given (pure apart from `out`);
// DetectCommand is the CLI11 glue wisp_main.cc registers. Runs on the calling thread.
#pragma once

#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

#include "wisp/status.h"

namespace CLI {
class App;
}

namespace wisp {

struct DetectOptions {
  std::string algorithm = "best";
  std::vector<std::string> params;  // "k=v"
  std::string column;               // value column to use; empty: the only one, or all of them
                                    // for a multivariate detector
  std::string file;                 // path, or "-" for stdin
};

// Parses `csv` (a header, then timestamp,value[,value...] rows) and writes one output row per
// input row. InvalidArgument for a malformed CSV (the message names the line), an unknown
// --column, bad parameters or a column count the detector cannot take; NotFound for an unknown
// algorithm. Nothing is written on error.
Status RunDetect(const DetectOptions& options, std::string_view csv, std::ostream& out);

class DetectCommand {
 public:
  explicit DetectCommand(CLI::App& app);
  bool parsed() const;
  // Reads the file and runs; returns the exit code (0, 1 on error, message on stderr).
  int Run();

 private:
  CLI::App* command_;
  DetectOptions options_;
};

}  // namespace wisp
