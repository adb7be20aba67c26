#include "scheduling/autoscaler.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace wisp {
namespace {

// Samples kept at most, whatever the sampling rate: a one-per-second caller needs 60.
constexpr size_t kMaxSamples = 4096;

// ceil() that does not turn 3.0000000000000004 (0.1 * 30 / 1) into 4.
int CeilCount(double value) {
  if (value <= 0) return 0;
  const double rounded = std::ceil(value - 1e-9);
  return rounded >= 1e9 ? 1'000'000'000 : static_cast<int>(rounded);
}

double Seconds(PolicyTimeMs ms) { return static_cast<double>(ms) / 1000.0; }

}  // namespace

std::string_view ScaleReasonName(ScaleReason reason) {
  switch (reason) {
    case ScaleReason::kStable:
      return "stable";
    case ScaleReason::kPanic:
      return "panic";
    case ScaleReason::kMinimum:
      return "minimum";
    case ScaleReason::kMaximum:
      return "maximum";
    case ScaleReason::kNoTraffic:
      return "no_traffic";
    case ScaleReason::kInFlight:
      return "in_flight";
    case ScaleReason::kKeepAlive:
      return "keep_alive";
    case ScaleReason::kUnloaded:
      return "unloaded";
    case ScaleReason::kPrewarm:
      return "prewarm";
    case ScaleReason::kScaleToZero:
      return "scale_to_zero";
  }
  return "unknown";
}

AutoscalerConfig AutoscalerConfigFor(const FunctionSpec& spec) {
  AutoscalerConfig config;
  config.target_concurrency = spec.concurrency_target > 0
                                  ? spec.concurrency_target
                                  : kDefaultTargetUtilization * spec.concurrency_max;
  config.min_instances = spec.scale_min;
  config.max_instances = spec.scale_max;
  return config;
}

Status ValidateAutoscalerConfig(const AutoscalerConfig& c) {
  auto bad = [](std::string_view field, auto value, std::string_view rule) {
    return InvalidArgument(fmt::format("autoscaler: {} is {}, must be {}", field, value, rule));
  };
  if (!(c.target_concurrency > 0)) return bad("target_concurrency", c.target_concurrency, "> 0");
  if (c.panic_window_ms <= 0) return bad("panic_window_ms", c.panic_window_ms, "> 0");
  if (c.stable_window_ms < c.panic_window_ms) {
    return bad("stable_window_ms", c.stable_window_ms, ">= panic_window_ms");
  }
  if (!(c.panic_threshold >= 1)) return bad("panic_threshold", c.panic_threshold, ">= 1");
  if (!(c.max_scale_up_rate > 1)) return bad("max_scale_up_rate", c.max_scale_up_rate, "> 1");
  if (!(c.max_scale_down_rate > 1)) {
    return bad("max_scale_down_rate", c.max_scale_down_rate, "> 1");
  }
  if (c.min_instances < 0) return bad("min_instances", c.min_instances, ">= 0");
  if (c.max_instances < std::max(c.min_instances, 1)) {
    return bad("max_instances", c.max_instances, ">= max(min_instances, 1)");
  }
  return Status::Ok();
}

Result<std::unique_ptr<Autoscaler>> CreateAutoscaler(const AutoscalerConfig& config,
                                                     KeepAlivePolicy* policy, PolicyAppId app) {
  if (policy == nullptr) return InvalidArgument("autoscaler: a keep-alive policy is required");
  if (Status status = ValidateAutoscalerConfig(config); !status.ok()) return status;
  return std::unique_ptr<Autoscaler>(std::make_unique<KpaAutoscaler>(config, policy, app));
}

void KpaAutoscaler::RecordConcurrency(PolicyTimeMs at, double concurrency) {
  samples_.emplace_back(at, std::max(concurrency, 0.0));
  while (samples_.size() > kMaxSamples) samples_.pop_front();
}

void KpaAutoscaler::RecordArrival(PolicyTimeMs at) {
  policy_->OnArrival(app_, at);
  ever_invoked_ = true;
  in_flight_ = true;
}

void KpaAutoscaler::RecordIdle(PolicyTimeMs at) {
  warm_window_ = policy_->OnIdle(app_, at);
  idle_since_ms_ = at;
  in_flight_ = false;
  ever_invoked_ = true;  // an idle without its arrival still means the function ran
}

double KpaAutoscaler::WindowAverage(PolicyTimeMs now, PolicyTimeMs window) const {
  double sum = 0;
  int count = 0;
  for (auto it = samples_.rbegin(); it != samples_.rend() && it->first > now - window; ++it) {
    if (it->first > now) continue;
    sum += it->second;
    ++count;
  }
  return count == 0 ? 0 : sum / count;
}

void KpaAutoscaler::DecideWithoutLoad(PolicyTimeMs now, ScaleRecommendation* out) const {
  if (in_flight_) {
    out->instances = 1;
    out->reason = ScaleReason::kInFlight;
    out->detail = "in flight: a call is running";
    return;
  }
  if (!ever_invoked_) {
    out->instances = 0;
    out->reason = ScaleReason::kNoTraffic;
    out->detail = "no traffic yet";
    return;
  }
  const std::string_view policy = policy_->Name();
  const PolicyTimeMs idle = now - idle_since_ms_;
  const PolicyTimeMs warm_from = warm_window_.prewarm_delay_ms;
  const PolicyTimeMs warm_until = warm_from + warm_window_.keep_alive_ms;
  if (idle < warm_from) {
    out->instances = 0;
    out->reason = ScaleReason::kUnloaded;
    out->detail = fmt::format("unloaded until pre-warm at {:.0f}s idle (policy {})",
                              Seconds(warm_from), policy);
  } else if (idle < warm_until) {
    out->instances = 1;
    if (warm_from > 0) {
      out->reason = ScaleReason::kPrewarm;
      out->detail =
          fmt::format("pre-warm until {:.0f}s idle (policy {})", Seconds(warm_until), policy);
    } else {
      out->reason = ScaleReason::kKeepAlive;
      out->detail = fmt::format("keep-alive: idle {:.0f}s of {:.0f}s (policy {})", Seconds(idle),
                                Seconds(warm_until), policy);
    }
  } else {
    out->instances = 0;
    out->reason = ScaleReason::kScaleToZero;
    out->detail =
        fmt::format("scale-to-zero after {:.0f}s idle (policy {})", Seconds(warm_until), policy);
  }
}

ScaleRecommendation KpaAutoscaler::Recommend(PolicyTimeMs now, int current_instances) {
  while (!samples_.empty() && samples_.front().first <= now - config_.stable_window_ms) {
    samples_.pop_front();
  }
  ScaleRecommendation out;
  out.stable_concurrency = WindowAverage(now, config_.stable_window_ms);
  out.panic_concurrency = WindowAverage(now, config_.panic_window_ms);

  const int current = std::max(current_instances, 0);
  // Ratios and the scale-up limit count a function at zero as one instance, so that the first
  // burst from zero can panic and scale up at all.
  const double ready = std::max(current, 1);
  const int max_up = CeilCount(config_.max_scale_up_rate * ready);
  const int max_down = static_cast<int>(std::floor(current / config_.max_scale_down_rate));
  const int stable_wanted = CeilCount(out.stable_concurrency / config_.target_concurrency);
  const int panic_wanted = CeilCount(out.panic_concurrency / config_.target_concurrency);
  const int stable_count = std::clamp(stable_wanted, max_down, std::max(max_down, max_up));
  const int panic_count = std::clamp(panic_wanted, max_down, std::max(max_down, max_up));

  const bool over_threshold = panic_wanted / ready >= config_.panic_threshold;
  if (over_threshold) {
    if (!panicking_) max_panic_instances_ = 0;
    panicking_ = true;
    last_over_threshold_ms_ = now;
  } else if (panicking_ && now - last_over_threshold_ms_ >= config_.stable_window_ms) {
    panicking_ = false;
  }

  if (panicking_) {
    max_panic_instances_ = std::max(max_panic_instances_, panic_count);
    out.instances = max_panic_instances_;
    out.reason = ScaleReason::kPanic;
    out.panicking = true;
    out.detail = fmt::format("panic: {:.2f} in flight over {:.0f}s / {:.2f} per instance",
                             out.panic_concurrency, Seconds(config_.panic_window_ms),
                             config_.target_concurrency);
  } else {
    out.instances = stable_count;
    out.reason = ScaleReason::kStable;
    out.detail = fmt::format("stable: {:.2f} in flight over {:.0f}s / {:.2f} per instance",
                             out.stable_concurrency, Seconds(config_.stable_window_ms),
                             config_.target_concurrency);
    if (out.instances == 0) DecideWithoutLoad(now, &out);
  }

  if (out.instances < config_.min_instances) {
    out.instances = config_.min_instances;
    out.reason = ScaleReason::kMinimum;
    out.detail = fmt::format("scale.min {} ({})", config_.min_instances, out.detail);
  } else if (out.instances > config_.max_instances) {
    out.instances = config_.max_instances;
    out.reason = ScaleReason::kMaximum;
    out.detail = fmt::format("scale.max {} ({})", config_.max_instances, out.detail);
  }
  return out;
}

}  // namespace wisp
