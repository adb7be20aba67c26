// Multivariate detector: Mahalanobis distance of each vector from an exponentially weighted mean
// and covariance of the stream (Eigen). The squared distance is about chi-square with `dims`
// degrees of freedom; the Wilson-Hilferty cube-root transform maps it to a z-score.
#include <Eigen/Dense>
#include <cmath>

#include "detect/detector_base.h"

namespace wisp::detect {
namespace {

class Mahalanobis : public DetectorBase<Mahalanobis> {
 public:
  explicit Mahalanobis(ParamReader& p)
      : dims_(p.Int("dims", 1, 1, 64)),
        alpha_(p.Double("alpha", 0.01, 1e-6, 1)),
        threshold_(p.Double("threshold", kFourSigmaScore, 0, 1)) {
    min_points_ = p.Int("min_points", 10 * dims_, 2, 1'000'000);
    rest_.length = p.Int("rest", 0, 0, 1'000'000);
    mean_.assign(dims_, 0);
    cov_.assign(dims_ * dims_, 0);
  }
  std::string_view Name() const override { return "mahalanobis"; }
  size_t Dimensions() const override { return static_cast<size_t>(dims_); }

  AnomalyScore Update(double timestamp, double value) override {
    if (dims_ != 1) return {0, false};
    return Score(std::span<const double>(&value, 1));
  }
  Result<AnomalyScore> UpdateVector(double timestamp, std::span<const double> values) override {
    if (values.size() != Dimensions()) return AnomalyDetector::UpdateVector(timestamp, values);
    return Score(values);
  }

  template <typename A>
  void Fields(A& a) {
    a(count_), a(mean_), a(cov_);
    rest_.Fields(a);
  }

 private:
  AnomalyScore Score(std::span<const double> values) {
    Eigen::Map<const Eigen::VectorXd> x(values.data(), dims_);
    Eigen::Map<Eigen::VectorXd> mean(mean_.data(), dims_);
    Eigen::Map<Eigen::MatrixXd> cov(cov_.data(), dims_, dims_);
    double score = 0;
    Eigen::VectorXd d = x - mean;
    if (count_ >= min_points_) {
      // A small ridge keeps a flat sensor from making the covariance singular.
      double ridge = 1e-9 * (cov.trace() / dims_ + 1e-12);
      Eigen::MatrixXd reg = cov + ridge * Eigen::MatrixXd::Identity(dims_, dims_);
      double d2 = d.dot(reg.ldlt().solve(d));
      double p = static_cast<double>(dims_);
      double c = 2.0 / (9.0 * p);
      double z = (std::cbrt(std::max(d2, 0.0) / p) - (1 - c)) / std::sqrt(c);
      score = z > 0 ? ZScoreToScore(z) : 0;
    }
    if (count_ == 0) {
      mean = x;
    } else {
      mean += alpha_ * d;
      cov = (1 - alpha_) * (cov + alpha_ * d * d.transpose());
    }
    ++count_;
    return rest_.Apply(score, threshold_);
  }

  int64_t dims_;
  double alpha_, threshold_;
  int64_t min_points_;
  RestPeriod rest_;
  int64_t count_ = 0;
  std::vector<double> mean_, cov_;
};

}  // namespace

Result<AnomalyDetectorPtr> MakeMahalanobis(const DetectorParams& params) {
  return MakeWithParams<Mahalanobis>("mahalanobis", params);
}

}  // namespace wisp::detect
