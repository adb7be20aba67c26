// wisp's reimplementation of NAB scoring on small files whose scores are worked out by hand:
// 20 rows, probation floor(0.15 * 20) = 3 rows, one window over rows 10..13 (width 4).
//   row 10: position -(13 - 10 + 1) / 4 = -1   -> sigmoid / sigmoid(-1) = 1
//   row 12: position -0.5 -> (2 / (1 + e^-2.5) - 1) / (2 / (1 + e^-5) - 1) = 0.859793
//   row 5 (before any window): FP -1 -> x 0.11 = -0.11
//   row 15: (15 - 13) / (4 - 1) = 0.6667 past the window -> 2 / (1 + e^3.333) - 1 = -0.931110,
//           x 0.11 = -0.102422
#include <gtest/gtest.h>

#include <vector>

#include "detect/nab_score.h"

namespace wisp::nab {
namespace {

constexpr double kRow12 = 0.8597926;

FileLabels OneWindow() { return FileLabels{20, {{10, 13}}}; }

std::vector<double> Flagged(std::initializer_list<size_t> rows, double value = 1.0) {
  std::vector<double> s(20, 0.0);
  for (size_t r : rows) s[r] = value;
  return s;
}

TEST(NabScoreTest, SigmoidAndProbationFollowNab) {
  EXPECT_NEAR(ScaledSigmoid(-1.0), 0.9866143, 1e-6);
  EXPECT_NEAR(ScaledSigmoid(0.0), 0.0, 1e-12);
  EXPECT_EQ(ScaledSigmoid(3.5), -1.0);
  EXPECT_EQ(ProbationRows(20), 3u);
  EXPECT_EQ(ProbationRows(100), 15u);
  EXPECT_EQ(ProbationRows(10000), 750u);
}

TEST(NabScoreTest, HandComputedFileScores) {
  RowWeights w = ComputeRowWeights(OneWindow());
  const CostProfile standard = NabProfiles()[0];
  const CostProfile low_fn = NabProfiles()[2];
  EXPECT_NEAR(ScoreFile(w, Flagged({}), 0.5, standard), -1.0, 1e-9);
  EXPECT_NEAR(ScoreFile(w, Flagged({}), 0.5, low_fn), -2.0, 1e-9);
  EXPECT_NEAR(ScoreFile(w, Flagged({12}), 0.5, standard), kRow12, 1e-6);
  // Only the earliest detection in a window counts; later ones add nothing.
  EXPECT_NEAR(ScoreFile(w, Flagged({10, 12, 13}), 0.5, standard), 1.0, 1e-9);
  // False positives: full cost before any window, sigmoid-weighted after; probation is free.
  EXPECT_NEAR(ScoreFile(w, Flagged({1, 5, 15}), 0.5, standard), -1.0 - 0.11 - 0.1024220, 1e-6);
  EXPECT_NEAR(ScoreFile(w, Flagged({1, 5, 15}), 0.5, NabProfiles()[1]), -1.0 - 0.22 - 0.2048441,
              1e-6);
}

TEST(NabScoreTest, ThresholdOptimisationAndNormalisation) {
  // Scores: FP at row 5 = 0.95, TP at row 12 = 0.9, FP at row 15 = 0.3.
  //   threshold > 0.95: -1; >= 0.95: -1.11; >= 0.9: 0.859793 - 0.11 = 0.749793 (best);
  //   >= 0.3: 0.647371. Normalised: 100 * (0.749793 + 1) / (1 + 1) = 87.4896.
  std::vector<double> s(20, 0.0);
  s[5] = 0.95, s[12] = 0.9, s[15] = 0.3;
  Optimum opt = OptimizeThreshold({ComputeRowWeights(OneWindow())}, {s}, NabProfiles()[0]);
  EXPECT_EQ(opt.threshold, 0.9);
  EXPECT_NEAR(opt.raw, kRow12 - 0.11, 1e-6);
  EXPECT_NEAR(opt.normalized, 87.48963, 1e-4);
  EXPECT_EQ(opt.null_raw, -1.0);
  EXPECT_EQ(opt.perfect_raw, 1.0);
}

TEST(NabScoreTest, NullIsZeroAndPerfectIsHundred) {
  std::vector<RowWeights> files = {ComputeRowWeights(OneWindow()),
                                   ComputeRowWeights(FileLabels{1000, {{200, 249}, {600, 649}}}),
                                   ComputeRowWeights(FileLabels{500, {}})};
  std::vector<std::vector<double>> null_scores, perfect_scores;
  for (const RowWeights& w : files) {
    null_scores.emplace_back(w.window.size(), 0.0);
    std::vector<double> perfect(w.window.size(), 0.0);
    for (size_t i = 0; i < w.window.size(); ++i) {
      if (w.window[i] >= 0 && (i == 0 || w.window[i - 1] != w.window[i])) perfect[i] = 1;
    }
    perfect_scores.push_back(std::move(perfect));
  }
  for (const CostProfile& profile : NabProfiles()) {
    EXPECT_NEAR(OptimizeThreshold(files, null_scores, profile).normalized, 0.0, 1e-9);
    EXPECT_NEAR(OptimizeThreshold(files, perfect_scores, profile).normalized, 100.0, 1e-9);
  }
  // Flagging everything is worse than flagging nothing: the optimiser keeps the null score.
  std::vector<std::vector<double>> everything;
  for (const RowWeights& w : files) everything.emplace_back(w.window.size(), 1.0);
  EXPECT_LE(OptimizeThreshold(files, everything, NabProfiles()[0]).normalized, 0.0);
}

}  // namespace
}  // namespace wisp::nab
