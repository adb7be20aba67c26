// Contextual detector in the spirit of CAD OSE (Smirnov 2016): the stream is quantised into a
// few levels, and the detector remembers which level followed each recent context (the last 1..L
// levels). A point is anomalous when the contexts it closes were never seen to lead to it. This
// is a variable-order Markov novelty count, not CAD's neuron/semi-context machinery; what it
// keeps from CAD is the idea (novel contexts = anomaly), the coarse quantisation over the
// stream's expected range, and the rest period after an alert.
//
// A second, different signal catches what a sequence model misses: a level shift whose new
// levels are already known (a stream stepping up to a value it has visited before is no novel
// context). It compares the mean of the last few values with a slow exponentially weighted
// mean and variance; a gap of `level` standard errors scores 1, and the slow baseline restarts
// from the recent points (one shift, one alert). The two are fused by max.
#include <algorithm>
#include <cmath>
#include <deque>
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
        spatial_after_(p.Int("spatial_after", 0, 0, 1'000'000)),
        level_(p.Double("level", 10, 0, 1e6)),
        level_short_(p.Int("level_short", 20, 1, 10000)),
        level_window_(p.Int("level_window", 10000, 2, 100'000'000)),
        restart_(p.Int("level_restart", 1, 0, 1)) {
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
    double level_score = LevelShift(x);
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
    return rest_.Apply(std::max(score, level_score), threshold_);
  }

  template <typename A>
  void Fields(A& a) {
    a(ranged_), a(lo_), a(hi_), a(step_), a(pending_), a(history_), a(transitions_), a(contexts_),
        a(seen_points_), a(seen_min_), a(seen_max_), a(recent_), a(recent_sum_), a(recompute_),
        a(slow_points_), a(slow_mean_), a(slow_var_);
    rest_.Fields(a);
  }

 private:
  void SetRange(double lo, double hi) {
    double span = hi - lo;
    if (!(span > 0)) span = static_cast<double>(bins_ - 1);
    step_ = span / static_cast<double>(bins_ - 1);
    lo_ = lo - offset_ * step_, hi_ = hi;
  }

  // 1 when the mean of the last `level_short` values lies `level` standard errors or more from
  // the slow mean (exponential, time constant `level_window` points; a plain running mean
  // until then), else 0. The slow statistics learn from the point after scoring it.
  double LevelShift(double x) {
    if (level_ <= 0 || !std::isfinite(x)) return 0;  // a NaN would poison the slow mean for good
    recent_.push_back(x);
    recent_sum_ += x;
    if (static_cast<int64_t>(recent_.size()) > level_short_) {
      recent_sum_ -= recent_.front();
      recent_.pop_front();
    }
    // The running sum of a few values is recomputed when the window is full: no drift of
    // rounding errors over an endless stream.
    if (static_cast<int64_t>(recent_.size()) == level_short_ && ++recompute_ >= level_short_) {
      recompute_ = 0;
      recent_sum_ = 0;
      for (double v : recent_) recent_sum_ += v;
    }
    double score = 0;
    double n = static_cast<double>(recent_.size());
    if (slow_points_ >= kLevelMinPoints && static_cast<int64_t>(recent_.size()) == level_short_) {
      double gap = std::abs(recent_sum_ / n - slow_mean_);
      // gap >= level * sqrt(var / n), without a division by a variance that may be 0.
      if (gap > 0 && gap * gap * n >= level_ * level_ * slow_var_) score = 1;
    }
    if (score == 1 && restart_) {
      // The stream has a new level: the baseline restarts from the recent points, so one shift
      // is one alert rather than one per rest period until the slow mean catches up.
      slow_points_ = 0, slow_mean_ = 0, slow_var_ = 0;
      for (double v : recent_) LearnSlowBaseline(v);
      return score;
    }
    LearnSlowBaseline(x);
    return score;
  }
  void LearnSlowBaseline(double x) {
    ++slow_points_;
    double alpha =
        std::max(1.0 / static_cast<double>(slow_points_), 1.0 / static_cast<double>(level_window_));
    double diff = x - slow_mean_;
    slow_mean_ += alpha * diff;
    slow_var_ = (1 - alpha) * (slow_var_ + alpha * diff * diff);
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
  double level_;
  int64_t level_short_, level_window_, restart_;
  static constexpr int64_t kLevelMinPoints = 100;
  std::deque<double> recent_;
  double recent_sum_ = 0;
  int64_t recompute_ = 0, slow_points_ = 0;
  double slow_mean_ = 0, slow_var_ = 0;
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
