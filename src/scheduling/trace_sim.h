// Replays invocation traces through a KeepAlivePolicy and accounts cold starts and wasted
// memory, with an optional node memory cap. Used by bench/prewarm and its tests; the model is
// the policy's (include/wisp/keepalive_policy.h): one instance per application serves every
// concurrent invocation of it, loading takes no time, an arrival at an unloaded application is a
// cold start.
//
// Thread safety: SimulatePolicy is a pure function of its arguments (and the policy's state);
// callers may run several simulations in parallel with separate policies.
#pragma once

#include <cstdint>
#include <vector>

#include "wisp/keepalive_policy.h"
#include "wisp/status.h"

namespace wisp {

struct SimInvocation {
  PolicyTimeMs arrival_ms = 0;
  PolicyTimeMs duration_ms = 0;
  // Invocations folded into this one (arrivals that overlap it, which are all warm when it is,
  // and all dropped when it is). At least 1.
  int64_t count = 1;
};

struct SimApp {
  int64_t memory_mb = 0;
  std::vector<SimInvocation> invocations;  // sorted by arrival
};

struct SimOptions {
  int64_t memory_cap_mb = 0;  // 0: no cap
  // Memory held after this time is not counted (the end of the trace); 0: run until every
  // instance is unloaded.
  PolicyTimeMs horizon_ms = 0;
};

struct SimAppResult {
  int64_t invocations = 0;
  int64_t cold_starts = 0;  // invocations that found no loaded instance (dropped ones excluded)
  int64_t dropped = 0;      // invocations refused because the memory cap was full of busy apps
  double wasted_mb_minutes = 0;  // memory held while loaded and not running
  bool first_cold = false;  // the app's first invocation was a cold start (no policy avoids it)

  double ColdStartPercent() const {
    const int64_t served = invocations - dropped;
    return served > 0 ? 100.0 * static_cast<double>(cold_starts) / static_cast<double>(served) : 0;
  }
  // The same without the first invocation, which is cold under every policy.
  double ColdStartPercentAfterFirst() const {
    const int64_t served = invocations - dropped - 1;
    const int64_t cold = cold_starts - (first_cold ? 1 : 0);
    return served > 0 ? 100.0 * static_cast<double>(cold) / static_cast<double>(served) : 0;
  }
  // Invocations that found no warm instance: cold starts plus dropped ones.
  double MissPercent() const {
    return invocations > 0 ? 100.0 * static_cast<double>(cold_starts + dropped) /
                                 static_cast<double>(invocations)
                           : 0;
  }
};

struct SimResult {
  std::vector<SimAppResult> apps;  // same order as the input
  double wasted_mb_minutes = 0;
  int64_t invocations = 0;
  int64_t cold_starts = 0;
  int64_t dropped = 0;
  int64_t prewarms = 0;   // loads done by a pre-warm
  int64_t evictions = 0;  // idle instances unloaded early for memory
};

// Runs the whole trace. App i is PolicyAppId i. InvalidArgument when an app's invocations are
// not sorted or have a negative duration or count < 1.
Result<SimResult> SimulatePolicy(const std::vector<SimApp>& apps, KeepAlivePolicy& policy,
                                 const SimOptions& options = {});

// Folds overlapping invocations of one application (sorted by arrival) into busy periods: an
// arrival before the running ones end joins them. Exact under the one-instance model above, and
// much faster on busy applications.
std::vector<SimInvocation> MergeOverlapping(const std::vector<SimInvocation>& invocations);

// The value at percentile p (0-100) of `values` by the nearest-rank method; 0 when empty.
double Percentile(std::vector<double> values, double p);

}  // namespace wisp
