// Contextual detector in the spirit of CAD OSE (Smirnov 2016): the stream is quantised into a
// few levels, and the detector remembers which level followed each recent context (the last 1..L
// levels). A point is anomalous when the contexts it closes were never seen to lead to it. This
// is a variable-order Markov novelty count, not CAD's neuron/semi-context machinery; what it
// keeps from CAD is the idea (novel contexts = anomaly), the coarse quantisation over the
// stream's expected range, and the rest period after an alert.
#include <algorithm>
#include <cmath>
#include <unordered_map>
#include <vector>

#include "detect/detector_base.h"

namespace wisp::detect {
namespace {

constexpr int64_t kMaxOrder = 16;

uint64_t Mix(uint64_t h) {
  // splitmix64 finaliser: spreads context keys over the hash table.
  h += 0x9e3779b97f4a7c15ULL;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
  return h ^ (h >> 31);
}

class Contextual : public DetectorBase<Contextual> {
 public:
  explicit Contextual(ParamReader& p)
      : bins_(p.Int("bins", 8, 2, 256)),
        order_(p.Int("order", 4, 1, kMaxOrder)),
        warmup_(p.Int("warmup", 100, 2, 100000)),
        max_contexts_(p.Int("max_contexts", 1 << 20, 16, 1 << 26)),
        threshold_(p.Double("threshold", 1.0, 0, 1)),
        offset_(p.Double("offset", 0, 0, 1)),
        spatial_(p.Double("spatial", 0.01, 0, 1)),
        spatial_after_(p.Int("spatial_after", 0, 0, 1'000'000)) {
    rest_.length = p.Int("rest", 30, 0, 1'000'000);
    if (p.Has("min") || p.Has("max")) {
      lo_ = p.Double("min", 0, -1e300, 1e300);
      hi_ = p.Double("max", 1, -1e300, 1e300);
      SetRange(lo_, hi_);
      ranged_ = 1;
    }
  }
  std::string_view Name() const override { return "contextual"; }

  AnomalyScore Update(double, double x) override {
    if (!ranged_) {
      // Learn the range from the first points, then replay them into the model.
      pending_.push_back(x);
      if (static_cast<int64_t>(pending_.size()) < warmup_) return {0, false};
      auto [mn, mx] = std::minmax_element(pending_.begin(), pending_.end());
      double margin = (*mx - *mn) * 0.1;
      SetRange(*mn - margin, *mx + margin);
      ranged_ = 1;
      std::vector<double> replay;
      replay.swap(pending_);
      for (double v : replay) Learn(Symbol(v));
      return {0, false};
    }
    double score = Learn(Symbol(x));
    // A value beyond everything seen so far is anomalous whatever its context (HTM's
    // "spatial anomaly"); `spatial` is the margin, as a fraction of the range seen.
    if (spatial_ > 0) {
      if (seen_points_ > spatial_after_) {
        double margin = (seen_max_ - seen_min_) * spatial_;
        if (x > seen_max_ + margin || x < seen_min_ - margin) score = 1;
      }
      seen_min_ = seen_points_ == 0 ? x : std::min(seen_min_, x);
      seen_max_ = seen_points_ == 0 ? x : std::max(seen_max_, x);
      ++seen_points_;
    }
    return rest_.Apply(score, threshold_);
  }

  template <typename A>
  void Fields(A& a) {
    a(ranged_), a(lo_), a(hi_), a(step_), a(pending_), a(history_), a(transitions_), a(contexts_),
        a(seen_points_), a(seen_min_), a(seen_max_);
    rest_.Fields(a);
  }

 private:
  void SetRange(double lo, double hi) {
    double span = hi - lo;
    if (!(span > 0)) span = static_cast<double>(bins_ - 1);
    step_ = span / static_cast<double>(bins_ - 1);
    lo_ = lo - offset_ * step_, hi_ = hi;
  }

  // Levels 0..bins-1 over [lo, hi]; two extra levels for below and above the range.
  uint32_t Symbol(double x) const {
    if (!(x >= lo_)) return static_cast<uint32_t>(bins_);
    double level = std::floor((x - lo_) / step_);
    if (level > static_cast<double>(bins_ - 1)) return static_cast<uint32_t>(bins_ + 1);
    return static_cast<uint32_t>(level);
  }

  // Scores the transition (recent contexts -> symbol) and records it. The score counts the
  // context orders that never led to this level; the longest order that did adds how rarely
  // (1 - its frequency), which orders points within the same count.
  double Learn(uint32_t symbol) {
    int64_t orders = std::min<int64_t>(order_, static_cast<int64_t>(history_.size()));
    int64_t novel = 0;
    double rarity = 1;  // 1 - frequency at the longest order that saw this transition
    uint64_t context = 0;
    for (int64_t k = 1; k <= orders; ++k) {
      context =
          Mix(context ^ (history_[history_.size() - k] + 1) ^ (static_cast<uint64_t>(k) << 40));
      uint64_t key = Mix(context ^ (static_cast<uint64_t>(symbol) + 0x1000));
      bool room = static_cast<int64_t>(transitions_.size()) < max_contexts_;
      auto seen = contexts_.find(context);
      uint32_t context_count = 0;
      if (seen != contexts_.end()) {
        context_count = seen->second++;
      } else if (room) {
        contexts_.emplace(context, 1);
      }
      auto it = transitions_.find(key);
      if (it == transitions_.end()) {
        ++novel;
        if (room) transitions_.emplace(key, 1);
      } else {
        if (context_count > 0) {
          rarity = 1.0 - static_cast<double>(it->second) / static_cast<double>(context_count);
        }
        ++it->second;
      }
    }
    history_.push_back(symbol);
    if (static_cast<int64_t>(history_.size()) > order_) history_.erase(history_.begin());
    if (orders < order_) return 0;  // not enough history yet
    if (novel == order_) return 1;
    return (static_cast<double>(novel) + rarity) / static_cast<double>(order_);
  }

  int64_t bins_, order_, warmup_, max_contexts_;
  double threshold_, offset_, spatial_;
  int64_t spatial_after_;
  RestPeriod rest_;
  int64_t seen_points_ = 0;
  double seen_min_ = 0, seen_max_ = 0;
  uint8_t ranged_ = 0;
  double lo_ = 0, hi_ = 1, step_ = 1;
  std::vector<double> pending_;
  std::vector<uint32_t> history_;
  std::unordered_map<uint64_t, uint32_t> transitions_;  // (context, next level) -> count
  std::unordered_map<uint64_t, uint32_t> contexts_;     // context -> count
};

}  // namespace

Result<AnomalyDetectorPtr> MakeContextual(const DetectorParams& params) {
  return MakeWithParams<Contextual>("contextual", params);
}

}  // namespace wisp::detect
