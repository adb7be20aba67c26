// k-NN conformal detector in the spirit of KNN-CAD (Burnaev & Ishimtsev 2016): each point closes
// a lag vector of the last `dim` values; its non-conformity is the mean distance to its k
// nearest neighbours among the last `window` lag vectors; the score is the fraction of recent
// non-conformity values (the calibration set, last `calibration` points) below it, a conformal
// p-value turned round. O(window * dim) per point.
#include <algorithm>
#include <cmath>
#include <vector>

#include "detect/detector_base.h"

namespace wisp::detect {
namespace {

class KnnConformal : public DetectorBase<KnnConformal> {
 public:
  explicit KnnConformal(ParamReader& p)
      : dim_(p.Int("dim", 8, 1, 256)),
        k_(p.Int("k", 5, 1, 256)),
        window_(p.Int("window", 400, 2, 100000)),
        calibration_(p.Int("calibration", 1000, 2, 100000)),
        threshold_(p.Double("threshold", 0.999, 0, 1)) {
    rest_.length = p.Int("rest", dim_, 0, 1'000'000);
  }
  std::string_view Name() const override { return "knn"; }

  AnomalyScore Update(double, double x) override {
    recent_.push_back(x);
    if (static_cast<int64_t>(recent_.size()) > dim_) recent_.erase(recent_.begin());
    if (static_cast<int64_t>(recent_.size()) < dim_) return {0, false};

    double score = 0;
    int64_t stored = static_cast<int64_t>(vectors_.size()) / dim_;
    if (stored >= k_) {
      double alpha = NonConformity();
      if (!alphas_.empty()) {
        int64_t below = 0;
        double largest = 0;
        for (double a : alphas_) below += a < alpha, largest = std::max(largest, a);
        // Beyond every calibration value, how far beyond fills the last step, so the most
        // extreme points still rank above merely unusual ones.
        double beyond = alpha > largest && alpha > 0 ? 1 - largest / alpha : 0;
        score = (static_cast<double>(below) + beyond) / static_cast<double>(alphas_.size() + 1);
      }
      if (static_cast<int64_t>(alphas_.size()) < calibration_) {
        alphas_.push_back(alpha);
      } else {
        alphas_[alpha_head_] = alpha;
        alpha_head_ = (alpha_head_ + 1) % calibration_;
      }
    }
    // Store the lag vector (ring of `window` vectors, flattened).
    if (stored < window_) {
      vectors_.insert(vectors_.end(), recent_.begin(), recent_.end());
    } else {
      std::copy(recent_.begin(), recent_.end(), vectors_.begin() + vector_head_ * dim_);
      vector_head_ = (vector_head_ + 1) % window_;
    }
    return rest_.Apply(score, threshold_);
  }

  template <typename A>
  void Fields(A& a) {
    a(recent_), a(vectors_), a(vector_head_), a(alphas_), a(alpha_head_);
    rest_.Fields(a);
  }

 private:
  double NonConformity() {
    // k smallest squared distances, kept sorted in a small array.
    nearest_.assign(static_cast<size_t>(k_), INFINITY);
    size_t n = vectors_.size() / static_cast<size_t>(dim_);
    for (size_t i = 0; i < n; ++i) {
      const double* v = &vectors_[i * dim_];
      double d2 = 0;
      for (int64_t j = 0; j < dim_; ++j) {
        double d = v[j] - recent_[j];
        d2 += d * d;
      }
      if (d2 < nearest_.back()) {
        auto at = std::upper_bound(nearest_.begin(), nearest_.end(), d2);
        nearest_.insert(at, d2);
        nearest_.pop_back();
      }
    }
    double sum = 0;
    for (double d2 : nearest_) sum += std::sqrt(d2);
    return sum / static_cast<double>(k_);
  }

  int64_t dim_, k_, window_, calibration_;
  double threshold_;
  RestPeriod rest_;
  std::vector<double> recent_;
  std::vector<double> vectors_;
  int64_t vector_head_ = 0;
  std::vector<double> alphas_;
  int64_t alpha_head_ = 0;
  std::vector<double> nearest_;  // scratch
};

}  // namespace

Result<AnomalyDetectorPtr> MakeKnnConformal(const DetectorParams& params) {
  return MakeWithParams<KnnConformal>("knn", params);
}

}  // namespace wisp::detect
