#include "detect/nab_score.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace wisp::nab {

std::vector<CostProfile> NabProfiles() {
  return {{"standard", 1.0, 1.0, 0.11},
          {"reward_low_FP_rate", 1.0, 1.0, 0.22},
          {"reward_low_FN_rate", 1.0, 2.0, 0.11}};
}

double ScaledSigmoid(double x) {
  if (x > 3.0) return -1.0;
  return 2.0 / (1.0 + std::exp(5.0 * x)) - 1.0;
}

size_t ProbationRows(size_t rows) {
  return std::min(static_cast<size_t>(std::floor(0.15 * static_cast<double>(rows))),
                  static_cast<size_t>(750));
}

RowWeights ComputeRowWeights(const FileLabels& labels) {
  RowWeights w;
  w.window.assign(labels.rows, -1);
  w.value.assign(labels.rows, 0);
  w.probation = ProbationRows(labels.rows);
  w.num_windows = labels.windows.size();
  const double max_tp = ScaledSigmoid(-1.0);
  size_t next = 0;          // next window to enter
  int64_t prev_right = -1;  // right edge of the last window passed
  double prev_width = 0;
  for (size_t i = 0; i < labels.rows; ++i) {
    while (next < labels.windows.size() && labels.windows[next].second < i) {
      prev_right = static_cast<int64_t>(labels.windows[next].second);
      prev_width =
          static_cast<double>(labels.windows[next].second - labels.windows[next].first + 1);
      ++next;
    }
    if (next < labels.windows.size() && labels.windows[next].first <= i) {
      const auto& [left, right] = labels.windows[next];
      double width = static_cast<double>(right - left + 1);
      double position = -static_cast<double>(right - i + 1) / width;  // -1 at the first row
      w.window[i] = static_cast<int>(next);
      w.value[i] = ScaledSigmoid(position) / max_tp;
    } else if (prev_right < 0) {
      w.value[i] = -1.0;
    } else {
      // A one-row window has no width to measure by; treat any later row as far from it.
      double past = prev_width > 1
                        ? std::fabs(static_cast<double>(prev_right) - static_cast<double>(i)) /
                              (prev_width - 1)
                        : 4.0;
      w.value[i] = ScaledSigmoid(past);
    }
  }
  return w;
}

double ScoreFile(const RowWeights& weights, std::span<const double> scores, double threshold,
                 const CostProfile& profile) {
  std::vector<double> best(weights.num_windows, -1);  // best TP value per window, -1 = missed
  double fp = 0;
  for (size_t i = weights.probation; i < scores.size() && i < weights.window.size(); ++i) {
    if (!(scores[i] >= threshold)) continue;
    int w = weights.window[i];
    if (w >= 0) {
      best[w] = std::max(best[w], weights.value[i]);
    } else {
      fp += weights.value[i] * profile.fp_weight;
    }
  }
  double total = fp;
  for (double b : best) total += b < 0 ? -profile.fn_weight : b * profile.tp_weight;
  return total;
}

Optimum OptimizeThreshold(const std::vector<RowWeights>& files,
                          const std::vector<std::vector<double>>& scores,
                          const CostProfile& profile) {
  struct Entry {
    double score;
    uint32_t file;
    uint32_t row;
  };
  std::vector<Entry> entries;
  size_t total_windows = 0;
  std::vector<size_t> window_base(files.size());
  for (size_t f = 0; f < files.size(); ++f) {
    window_base[f] = total_windows;
    total_windows += files[f].num_windows;
    for (size_t i = files[f].probation; i < scores[f].size() && i < files[f].window.size(); ++i) {
      entries.push_back({scores[f][i], static_cast<uint32_t>(f), static_cast<uint32_t>(i)});
    }
  }
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.score > b.score; });

  Optimum best;
  best.null_raw = -profile.fn_weight * static_cast<double>(total_windows);
  best.perfect_raw = profile.tp_weight * static_cast<double>(total_windows);
  double total = best.null_raw;  // threshold above every score: nothing flagged
  best.raw = total;
  best.threshold = entries.empty() ? 1.0 : std::nextafter(entries.front().score, INFINITY);
  std::vector<double> window_best(total_windows, -1);
  for (size_t i = 0; i < entries.size();) {
    double s = entries[i].score;
    // All rows with this exact score switch on together.
    for (; i < entries.size() && entries[i].score == s; ++i) {
      const RowWeights& w = files[entries[i].file];
      uint32_t row = entries[i].row;
      int win = w.window[row];
      if (win < 0) {
        total += w.value[row] * profile.fp_weight;
        continue;
      }
      double& current = window_best[window_base[entries[i].file] + win];
      double v = w.value[row];
      if (current < 0) {
        total += profile.fn_weight + v * profile.tp_weight;
        current = v;
      } else if (v > current) {
        total += (v - current) * profile.tp_weight;
        current = v;
      }
    }
    if (total > best.raw) {
      best.raw = total;
      best.threshold = s;
    }
  }
  double span = best.perfect_raw - best.null_raw;
  best.normalized = span > 0 ? 100.0 * (best.raw - best.null_raw) / span : 0;
  return best;
}

}  // namespace wisp::nab
