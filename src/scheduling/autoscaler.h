// The KPA-style autoscaler behind include/wisp/autoscaler.h, exposed for tests.
// docs/autoscaling.md describes the algorithm.
#pragma once

#include <deque>
#include <utility>

#include "wisp/autoscaler.h"

namespace wisp {

class KpaAutoscaler final : public Autoscaler {
 public:
  // `config` must be valid (see ValidateAutoscalerConfig) and `policy` not null.
  KpaAutoscaler(const AutoscalerConfig& config, KeepAlivePolicy* policy, PolicyAppId app)
      : config_(config), policy_(policy), app_(app) {}

  void RecordConcurrency(PolicyTimeMs at, double concurrency) override;
  void RecordArrival(PolicyTimeMs at) override;
  void RecordIdle(PolicyTimeMs at) override;
  ScaleRecommendation Recommend(PolicyTimeMs now, int current_instances) override;

 private:
  // Mean of the samples taken in (now - window, now]; 0 without any.
  double WindowAverage(PolicyTimeMs now, PolicyTimeMs window) const;
  // The recommendation for a function without load in its windows (min_instances aside).
  void DecideWithoutLoad(PolicyTimeMs now, ScaleRecommendation* out) const;

  AutoscalerConfig config_;
  KeepAlivePolicy* policy_;
  PolicyAppId app_;

  std::deque<std::pair<PolicyTimeMs, double>> samples_;  // oldest first, within the stable window

  bool panicking_ = false;
  PolicyTimeMs last_over_threshold_ms_ = 0;  // panic ends a stable window after this
  int max_panic_instances_ = 0;              // the panic recommendation never goes below this

  bool ever_invoked_ = false;
  bool in_flight_ = false;  // an arrival not yet followed by an idle
  PolicyTimeMs idle_since_ms_ = 0;
  WarmWindow warm_window_;  // the policy's decision at idle_since_ms_
};

// OK, or InvalidArgument naming the first field out of range.
Status ValidateAutoscalerConfig(const AutoscalerConfig& config);

}  // namespace wisp
