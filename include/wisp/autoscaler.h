// Autoscaler: recommends how many instances of one function a shard should run, from the
// function's observed concurrency, in the manner of Knative's pod autoscaler (KPA): a stable
// window average aimed at a target concurrency per instance, a short panic window that scales up
// fast on a burst and never scales down while panicking, rate limits on both directions, and
// scale to zero only once the function has been idle for the keep-alive time a KeepAlivePolicy
// chose. docs/autoscaling.md describes the algorithm, its defaults and how the node drives it.
//
// Pure logic: no I/O, no clock of its own. Times are milliseconds on the caller's monotonic
// clock and never go backwards. The autoscaler only recommends; the caller starts and stops
// instances.
//
// Ownership and threads: the caller owns the autoscaler; the autoscaler borrows the
// KeepAlivePolicy given to CreateAutoscaler, which must outlive it. Not thread-safe: one thread
// at a time may call an autoscaler and its policy (the node gives each shard one policy and one
// autoscaler per function, all driven by the shard's thread). Never fails at run time: bad
// configurations are refused by CreateAutoscaler.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "wisp/function_spec.h"
#include "wisp/keepalive_policy.h"
#include "wisp/status.h"

namespace wisp {

struct AutoscalerConfig {
  // Calls in flight per instance to aim for (`concurrency.target`, else
  // target_utilization * `concurrency.max`). > 0.
  double target_concurrency = 0.7;
  PolicyTimeMs stable_window_ms = 60'000;  // average for normal decisions; >= panic window
  PolicyTimeMs panic_window_ms = 6'000;    // average that detects bursts; > 0
  // Panic when the panic-window average needs at least this many times the current instances.
  double panic_threshold = 2.0;  // >= 1
  // Per decision: at most ceil(up_rate * max(current, 1)) instances, at least
  // floor(current / down_rate).
  double max_scale_up_rate = 1000;  // > 1
  double max_scale_down_rate = 2;   // > 1
  int min_instances = 0;            // `scale.min`; > 0 never scales to zero
  int max_instances = 8;            // `scale.max`; >= max(min_instances, 1)
};

// The share of `concurrency.max` aimed for when a manifest gives no `concurrency.target`
// (Knative's container-concurrency-target-percentage default).
inline constexpr double kDefaultTargetUtilization = 0.7;

// The configuration the manifest asks for, with the other fields at their defaults.
AutoscalerConfig AutoscalerConfigFor(const FunctionSpec& spec);

// Why a recommendation is what it is; stable names for logs and metric labels.
enum class ScaleReason {
  kStable,       // the stable-window average decides
  kPanic,        // a burst: the panic-window average decides and never goes down
  kMinimum,      // raised to min_instances
  kMaximum,      // lowered to max_instances
  kNoTraffic,    // min 0 and never invoked
  kInFlight,     // no load in the windows, but a call is running: keep one instance
  kKeepAlive,    // idle, inside the policy's keep-alive: keep one instance
  kUnloaded,     // idle, the policy unloaded it until a pre-warm
  kPrewarm,      // idle, inside the policy's pre-warm window: one instance
  kScaleToZero,  // idle for the whole keep-alive: zero
};
inline constexpr std::size_t kScaleReasonCount = 10;
std::string_view ScaleReasonName(ScaleReason reason);

struct ScaleRecommendation {
  int instances = 0;
  ScaleReason reason = ScaleReason::kStable;
  // For logs: e.g. "stable: 2.10 in flight over 60s / 0.70 per instance",
  // "scale-to-zero after 600s idle (policy hybrid)".
  std::string detail;
  bool panicking = false;
  double stable_concurrency = 0;  // the stable-window average
  double panic_concurrency = 0;   // the panic-window average
};

class Autoscaler {
 public:
  virtual ~Autoscaler() = default;

  // A concurrency sample: calls in flight plus calls queued for the function at `at`. The node
  // samples once per tick, before Recommend.
  virtual void RecordConcurrency(PolicyTimeMs at, double concurrency) = 0;

  // A call arrived at `at` while no other call of the function was running / the last running
  // call ended at `at`. Forwarded to the KeepAlivePolicy (OnArrival / OnIdle): the caller must
  // not also report these to the policy itself.
  virtual void RecordArrival(PolicyTimeMs at) = 0;
  virtual void RecordIdle(PolicyTimeMs at) = 0;

  // The instance count to run now, given `current_instances` running or starting.
  virtual ScaleRecommendation Recommend(PolicyTimeMs now, int current_instances) = 0;
};

// A KPA-style autoscaler for application `app` of `policy` (not owned, not null).
// InvalidArgument for a configuration outside the ranges above.
Result<std::unique_ptr<Autoscaler>> CreateAutoscaler(const AutoscalerConfig& config,
                                                     KeepAlivePolicy* policy, PolicyAppId app);

}  // namespace wisp
