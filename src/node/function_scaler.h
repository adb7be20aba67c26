// FunctionScaler: the node's side of autoscaling for one function on one shard. It turns the
// shard's call starts and ends into the autoscaler's inputs (an arrival when a call begins
// while none is active, an idle when the last active call ends; docs/autoscaling.md) and
// samples the active calls once per tick. The shard applies what Tick recommends to the
// function's InstancePool (InstancePool::ScaleTo).
//
// "Active" calls are those admitted and not yet answered: running or waiting in the queue, so
// the count is the autoscaler's "in flight + queued" concurrency.
//
// Threads: owned by its shard and called only on the shard's thread. Never fails.
#pragma once

#include <memory>

#include "node/node.h"
#include "wisp/autoscaler.h"
#include "wisp/function_spec.h"

namespace wisp {

// The node-wide fields of the autoscaler's configuration, from the `scheduling:` config.
AutoscalerConfig AutoscalerConfigOf(const SchedulingConfig& scheduling);
// ... and the per-function fields from the manifest (AutoscalerConfigFor).
AutoscalerConfig AutoscalerConfigOf(const SchedulingConfig& scheduling, const FunctionSpec& spec);

class FunctionScaler {
 public:
  // `autoscaler` not null.
  explicit FunctionScaler(std::unique_ptr<Autoscaler> autoscaler)
      : autoscaler_(std::move(autoscaler)) {}

  // A redeploy brings a new configuration: the active calls stay counted; the samples of the
  // old autoscaler are dropped (the policy, shared by the shard, keeps its history).
  void Replace(std::unique_ptr<Autoscaler> autoscaler) { autoscaler_ = std::move(autoscaler); }

  void CallBegins(PolicyTimeMs now);
  void CallEnds(PolicyTimeMs now);  // one per CallBegins
  int active_calls() const { return active_calls_; }

  // Samples the active calls at `now` and recommends the instance count for `current`
  // instances running or starting.
  ScaleRecommendation Tick(PolicyTimeMs now, int current);

 private:
  std::unique_ptr<Autoscaler> autoscaler_;
  int active_calls_ = 0;
};

}  // namespace wisp
