// Simple statistical detectors: windowed Gaussian, EWMA z-score, CUSUM change point.
#include <algorithm>
#include <cmath>
#include <deque>

#include "detect/detector_base.h"

namespace wisp::detect {
namespace {

constexpr int64_t kMaxWindow = 1'000'000;

// Tail score of the newest point against the mean and deviation of the last `window` points.
class Gaussian : public DetectorBase<Gaussian> {
 public:
  explicit Gaussian(ParamReader& p)
      : window_(p.Int("window", 1000, 2, kMaxWindow)),
        min_points_(p.Int("min_points", 10, 2, kMaxWindow)),
        threshold_(p.Double("threshold", kFourSigmaScore, 0, 1)) {
    rest_.length = p.Int("rest", 0, 0, kMaxWindow);
  }
  std::string_view Name() const override { return "gaussian"; }

  AnomalyScore Update(double, double x) override {
    double score = 0;
    auto n = static_cast<double>(values_.size());
    if (values_.size() >= static_cast<size_t>(min_points_)) {
      double mean = sum_ / n;
      double var = std::max(sum_sq_ / n - mean * mean, 0.0);
      if (var > 0) {
        score = ZScoreToScore((x - mean) / std::sqrt(var));
      } else {
        score = x == mean ? 0 : 1;
      }
    }
    values_.push_back(x);
    sum_ += x, sum_sq_ += x * x;
    if (values_.size() > static_cast<size_t>(window_)) {
      double old = values_.front();
      values_.pop_front();
      sum_ -= old, sum_sq_ -= old * old;
    }
    // Running sums drift with rounding; recompute them once per window (O(1) amortised).
    if (++since_recompute_ >= window_) {
      since_recompute_ = 0;
      sum_ = sum_sq_ = 0;
      for (double v : values_) sum_ += v, sum_sq_ += v * v;
    }
    return rest_.Apply(score, threshold_);
  }

  template <typename A>
  void Fields(A& a) {
    a(values_), a(sum_), a(sum_sq_), a(since_recompute_);
    rest_.Fields(a);
  }

 private:
  int64_t window_, min_points_;
  double threshold_;
  RestPeriod rest_;
  std::deque<double> values_;
  double sum_ = 0, sum_sq_ = 0;
  int64_t since_recompute_ = 0;
};

// z-score against an exponentially weighted mean and variance (adapts to slow drift).
class Ewma : public DetectorBase<Ewma> {
 public:
  explicit Ewma(ParamReader& p)
      : alpha_(p.Double("alpha", 0.05, 1e-6, 1)),
        min_points_(p.Int("min_points", 10, 1, kMaxWindow)),
        threshold_(p.Double("threshold", kFourSigmaScore, 0, 1)) {
    rest_.length = p.Int("rest", 0, 0, kMaxWindow);
  }
  std::string_view Name() const override { return "ewma"; }

  AnomalyScore Update(double, double x) override {
    double score = 0;
    if (count_ >= min_points_) {
      score = var_ > 0 ? ZScoreToScore((x - mean_) / std::sqrt(var_)) : (x == mean_ ? 0 : 1);
    }
    if (count_ == 0) {
      mean_ = x;
    } else {
      double d = x - mean_;
      mean_ += alpha_ * d;
      var_ = (1 - alpha_) * (var_ + alpha_ * d * d);
    }
    ++count_;
    return rest_.Apply(score, threshold_);
  }

  template <typename A>
  void Fields(A& a) {
    a(count_), a(mean_), a(var_);
    rest_.Fields(a);
  }

 private:
  double alpha_;
  int64_t min_points_;
  double threshold_;
  RestPeriod rest_;
  int64_t count_ = 0;
  double mean_ = 0, var_ = 0;
};

// Two-sided CUSUM on values standardised by a slow EWMA baseline. The score S/(S+h) is 0.5
// when the cumulative sum reaches h; after a flag the baseline restarts at the new level.
class Cusum : public DetectorBase<Cusum> {
 public:
  explicit Cusum(ParamReader& p)
      : alpha_(p.Double("alpha", 0.01, 1e-6, 1)),
        k_(p.Double("k", 0.5, 0, 100)),
        h_(p.Double("h", 8, 1e-3, 1e6)),
        min_points_(p.Int("min_points", 30, 2, kMaxWindow)),
        threshold_(p.Double("threshold", 0.5, 0, 1)) {
    rest_.length = p.Int("rest", 0, 0, kMaxWindow);
  }
  std::string_view Name() const override { return "cusum"; }

  AnomalyScore Update(double, double x) override {
    double score = 0;
    if (count_ >= min_points_) {
      double sd = std::sqrt(var_);
      double z = sd > 0 ? (x - mean_) / sd : (x == mean_ ? 0 : 10 * (x > mean_ ? 1 : -1));
      up_ = std::max(0.0, up_ + z - k_);
      down_ = std::max(0.0, down_ - z - k_);
      double s = std::max(up_, down_);
      score = s / (s + h_);
    }
    AnomalyScore out = rest_.Apply(score, threshold_);
    if (count_ == 0) {
      mean_ = x;
    } else if (score >= threshold_) {
      // A change point: the old baseline no longer describes the stream.
      mean_ = x;
      up_ = down_ = 0;
    } else {
      double d = x - mean_;
      mean_ += alpha_ * d;
      var_ = (1 - alpha_) * (var_ + alpha_ * d * d);
    }
    ++count_;
    return out;
  }

  template <typename A>
  void Fields(A& a) {
    a(count_), a(mean_), a(var_), a(up_), a(down_);
    rest_.Fields(a);
  }

 private:
  double alpha_, k_, h_;
  int64_t min_points_;
  double threshold_;
  RestPeriod rest_;
  int64_t count_ = 0;
  double mean_ = 0, var_ = 0, up_ = 0, down_ = 0;
};

}  // namespace

Result<AnomalyDetectorPtr> MakeGaussian(const DetectorParams& params) {
  return MakeWithParams<Gaussian>("gaussian", params);
}
Result<AnomalyDetectorPtr> MakeEwma(const DetectorParams& params) {
  return MakeWithParams<Ewma>("ewma", params);
}
Result<AnomalyDetectorPtr> MakeCusum(const DetectorParams& params) {
  return MakeWithParams<Cusum>("cusum", params);
}

}  // namespace wisp::detect
