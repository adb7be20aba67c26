#include "node/function_scaler.h"

namespace wisp {

AutoscalerConfig AutoscalerConfigOf(const SchedulingConfig& scheduling) {
  AutoscalerConfig config;
  config.stable_window_ms = scheduling.stable_window.count();
  config.panic_window_ms = scheduling.panic_window.count();
  config.panic_threshold = scheduling.panic_threshold;
  config.max_scale_up_rate = scheduling.max_scale_up_rate;
  config.max_scale_down_rate = scheduling.max_scale_down_rate;
  return config;
}

AutoscalerConfig AutoscalerConfigOf(const SchedulingConfig& scheduling, const FunctionSpec& spec) {
  AutoscalerConfig config = AutoscalerConfigOf(scheduling);
  const AutoscalerConfig manifest = AutoscalerConfigFor(spec);
  config.target_concurrency = manifest.target_concurrency;
  config.min_instances = manifest.min_instances;
  config.max_instances = manifest.max_instances;
  return config;
}

void FunctionScaler::CallBegins(PolicyTimeMs now) {
  if (active_calls_++ == 0) autoscaler_->RecordArrival(now);
}

void FunctionScaler::CallEnds(PolicyTimeMs now) {
  if (active_calls_ <= 0) return;  // unmatched: nothing to end
  if (--active_calls_ == 0) autoscaler_->RecordIdle(now);
}

ScaleRecommendation FunctionScaler::Tick(PolicyTimeMs now, int current) {
  autoscaler_->RecordConcurrency(now, active_calls_);
  return autoscaler_->Recommend(now, current);
}

}  // namespace wisp
