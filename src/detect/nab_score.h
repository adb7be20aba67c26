// A reimplementation of the Numenta Anomaly Benchmark's scoring (NAB v1.1, docs/nab.md):
// anomaly windows, probation period, scaled-sigmoid weighting, cost profiles, one threshold per
// detector and profile optimised over the corpus, normalisation null = 0, perfect = 100.
// Plain functions over plain values; thread-safe.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace wisp::nab {

struct CostProfile {
  std::string name;
  double tp_weight = 1, fn_weight = 1, fp_weight = 0.11;
};
// standard, reward_low_FP_rate, reward_low_FN_rate as in NAB's config/profiles.json.
std::vector<CostProfile> NabProfiles();

// 2 / (1 + e^(5x)) - 1, and -1 beyond x = 3.
double ScaledSigmoid(double x);

// First min(floor(0.15 * rows), 750) rows are not scored.
size_t ProbationRows(size_t rows);

// One file's labels: windows as inclusive row ranges, in time order, not overlapping.
struct FileLabels {
  size_t rows = 0;
  std::vector<std::pair<size_t, size_t>> windows;
};

// Per-row scoring facts of a file (independent of the profile): the window a row lies in (or
// -1), and the row's unweighted value: scaled sigmoid of its position in the window (TP,
// normalised so a window's first row is 1) or after the previous window (FP, -1 before any).
struct RowWeights {
  std::vector<int> window;
  std::vector<double> value;
  size_t probation = 0;
  size_t num_windows = 0;
};
RowWeights ComputeRowWeights(const FileLabels& labels);

// The raw score of one file: flags are rows with score >= threshold.
double ScoreFile(const RowWeights& weights, std::span<const double> scores, double threshold,
                 const CostProfile& profile);

struct Optimum {
  double threshold = 1.0;  // flags are scores >= threshold
  double raw = 0;          // summed over files
  double normalized = 0;   // 100 * (raw - null) / (perfect - null)
  double null_raw = 0, perfect_raw = 0;
};

// Finds the threshold with the best total over all files (exact: tries every distinct score,
// and "no flags"). files[i] and scores[i] belong together; scores[i].size() == rows.
Optimum OptimizeThreshold(const std::vector<RowWeights>& files,
                          const std::vector<std::vector<double>>& scores,
                          const CostProfile& profile);

}  // namespace wisp::nab
