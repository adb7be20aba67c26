// The built-in keep-alive / pre-warm policies (include/wisp/keepalive_policy.h). Exposed here,
// beside their factories, so that tests can build them with exact parameters. docs/prewarm.md
// says where each parameter comes from.
#pragma once

#include <cstdint>
#include <deque>
#include <unordered_map>
#include <vector>

#include "wisp/keepalive_policy.h"

namespace wisp {

// "fixed": keep every instance loaded for the same time after it becomes idle.
class FixedKeepAlivePolicy final : public KeepAlivePolicy {
 public:
  explicit FixedKeepAlivePolicy(PolicyTimeMs keep_alive_ms) : keep_alive_ms_(keep_alive_ms) {}
  std::string_view Name() const override { return "fixed"; }
  void OnArrival(PolicyAppId, PolicyTimeMs) override {}
  WarmWindow OnIdle(PolicyAppId, PolicyTimeMs) override { return {0, keep_alive_ms_}; }

 private:
  PolicyTimeMs keep_alive_ms_;
};

// Idle times (end of the last invocation to the next arrival) of one application in 1-minute
// bins over a limited range, plus the ones beyond it ("out of bound").
class IdleTimeHistogram {
 public:
  explicit IdleTimeHistogram(int range_minutes) : bins_(range_minutes, 0) {}

  void Add(PolicyTimeMs idle_ms);
  int64_t in_range() const { return in_range_; }
  int64_t out_of_bound() const { return out_of_bound_; }
  // The most recent out-of-bound idle times, oldest first (at most 16).
  const std::deque<PolicyTimeMs>& recent_out_of_bound() const { return recent_oob_; }
  // The smallest bin b whose cumulative count is >= percentile% of the in-range count.
  // Requires in_range() > 0.
  int PercentileBin(double percentile) const;
  // Coefficient of variation (stddev / mean) of the bin counts; 0 when empty.
  double BinCountCv() const;

 private:
  std::vector<int64_t> bins_;
  int64_t in_range_ = 0;
  int64_t out_of_bound_ = 0;
  std::deque<PolicyTimeMs> recent_oob_;
};

struct HybridPolicyParams {
  int range_minutes = 240;        // paper: 4-hour histogram range
  double head_percentile = 5;     // paper: pre-warm at the 5th percentile
  double tail_percentile = 99;    // paper: keep alive to the 99th percentile
  double margin = 0.10;           // paper: 10% margin on both
  double cv_threshold = 2;        // bin-count CV below this: histogram not representative
  int min_samples = 10;           // fewer idle times than this: not representative (our choice)
  double oob_fraction = 0.5;      // more out-of-bound idle times than this share: forecast
  double forecast_margin = 0.15;  // forecast window: predicted idle time -/+ 15%
  int forecast_history = 5;       // forecast = mean of the last N out-of-bound idle times
  // Not in the paper (wisp only): when the histogram has enough samples but is flat (low CV),
  // keep alive to its tail percentile (no pre-warm) instead of the whole range.
  bool tail_when_flat = false;
};

// The hybrid policy's decision for an app idle since `now` with histogram `histogram`;
// `fallback` is the window when the histogram is not representative.
WarmWindow HybridDecision(const IdleTimeHistogram& histogram, const HybridPolicyParams& params,
                          WarmWindow fallback);

// "hybrid": the hybrid histogram policy of Shahrad et al. (USENIX ATC 2020), as written down in
// docs/prewarm.md.
class HybridHistogramPolicy final : public KeepAlivePolicy {
 public:
  explicit HybridHistogramPolicy(HybridPolicyParams params) : params_(params) {}
  std::string_view Name() const override { return "hybrid"; }
  void OnArrival(PolicyAppId app, PolicyTimeMs at) override;
  WarmWindow OnIdle(PolicyAppId app, PolicyTimeMs at) override;

 private:
  struct AppState {
    explicit AppState(int range) : histogram(range) {}
    IdleTimeHistogram histogram;
    PolicyTimeMs idle_since = -1;
  };
  AppState& State(PolicyAppId app);

  HybridPolicyParams params_;
  std::unordered_map<PolicyAppId, AppState> apps_;
};

struct WispPolicyParams {
  // Periodicity: the last `period_samples` gaps between arrivals are all within
  // `period_tolerance` of their median (at least `period_min_tolerance_ms`, which covers the
  // jitter of per-minute data).
  int period_samples = 4;
  double period_tolerance = 0.05;
  PolicyTimeMs period_min_tolerance_ms = 75'000;
  PolicyTimeMs period_guard_ms = 15'000;  // extra warm time on both sides of the window
  // A pre-warm window that opens sooner than this after the app becomes idle is not worth an
  // unload (an early arrival would be cold): stay warm until the window closes instead.
  PolicyTimeMs min_unload_ms = 2 * kMsPerMinute;
  // Other apps: the hybrid histogram (the same parameters as HybridPolicyParams' defaults).
  HybridPolicyParams histogram = [] {
    HybridPolicyParams p;
    p.tail_when_flat = true;
    return p;
  }();
  // Apps without a representative histogram: keep alive unknown_keep_alive_ms, scaled by
  // memory_reference_mb / the app's memory within [min_scale, max_scale] (0: no scaling).
  PolicyTimeMs unknown_keep_alive_ms = 240 * kMsPerMinute;
  int64_t memory_reference_mb = 1400;  // about the median app in the Azure sample (1429 MB)
  double min_scale = 0.25;
  double max_scale = 8;
};

// "wisp": periodicity detection for timer-like apps, a longer-range histogram for the others,
// memory-aware eviction. docs/prewarm.md describes the design.
class WispPredictivePolicy final : public KeepAlivePolicy {
 public:
  explicit WispPredictivePolicy(WispPolicyParams params) : params_(params) {}
  std::string_view Name() const override { return "wisp"; }
  void OnAppMemory(PolicyAppId app, int64_t memory_mb) override;
  void OnArrival(PolicyAppId app, PolicyTimeMs at) override;
  WarmWindow OnIdle(PolicyAppId app, PolicyTimeMs at) override;
  double EvictionPriority(PolicyAppId app, PolicyTimeMs now, int64_t memory_mb) const override;

  // The detected period of `app`, 0 when it has none (for tests and the simulator's report).
  PolicyTimeMs PeriodOf(PolicyAppId app) const;

 private:
  struct AppState {
    explicit AppState(int range) : histogram(range) {}
    IdleTimeHistogram histogram;
    std::deque<PolicyTimeMs> gaps;  // between consecutive arrivals, newest last
    PolicyTimeMs last_arrival = -1;
    PolicyTimeMs idle_since = -1;
    PolicyTimeMs expected_next = -1;  // next arrival the last decision planned for
    int64_t memory_mb = 0;
  };
  AppState& State(PolicyAppId app);
  PolicyTimeMs Period(const AppState& state, PolicyTimeMs* tolerance) const;

  WispPolicyParams params_;
  std::unordered_map<PolicyAppId, AppState> apps_;
};

}  // namespace wisp
