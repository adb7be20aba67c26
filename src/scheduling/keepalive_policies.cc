#include "scheduling/keepalive_policies.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <numeric>
#include <string>

#include <fmt/format.h>

#include "wisp/registry.h"

namespace wisp {
namespace {

PolicyTimeMs Minutes(double minutes) { return std::llround(minutes * kMsPerMinute); }

// A window that covers [open, close] for an instance idle since `now`.
WarmWindow WindowCovering(PolicyTimeMs now, PolicyTimeMs open, PolicyTimeMs close) {
  if (close <= now) return {0, 0};
  if (open <= now) return {0, close - now};
  return {open - now, close - open};
}

}  // namespace

// --- IdleTimeHistogram ---------------------------------------------------------------------------

void IdleTimeHistogram::Add(PolicyTimeMs idle_ms) {
  const PolicyTimeMs bin = std::max<PolicyTimeMs>(idle_ms, 0) / kMsPerMinute;
  if (bin < static_cast<PolicyTimeMs>(bins_.size())) {
    ++bins_[bin];
    ++in_range_;
    return;
  }
  ++out_of_bound_;
  recent_oob_.push_back(idle_ms);
  if (recent_oob_.size() > 16) recent_oob_.pop_front();
}

int IdleTimeHistogram::PercentileBin(double percentile) const {
  const double wanted = percentile / 100.0 * static_cast<double>(in_range_);
  int64_t cumulative = 0;
  for (size_t b = 0; b < bins_.size(); ++b) {
    cumulative += bins_[b];
    if (cumulative > 0 && static_cast<double>(cumulative) >= wanted) return static_cast<int>(b);
  }
  return static_cast<int>(bins_.size()) - 1;
}

double IdleTimeHistogram::BinCountCv() const {
  if (in_range_ == 0) return 0;
  const double n = static_cast<double>(bins_.size());
  const double mean = static_cast<double>(in_range_) / n;
  double squares = 0;
  for (int64_t count : bins_) squares += (count - mean) * (count - mean);
  return std::sqrt(squares / n) / mean;
}

// --- hybrid --------------------------------------------------------------------------------------

HybridHistogramPolicy::AppState& HybridHistogramPolicy::State(PolicyAppId app) {
  auto it = apps_.find(app);
  if (it == apps_.end()) it = apps_.emplace(app, AppState(params_.range_minutes)).first;
  return it->second;
}

void HybridHistogramPolicy::OnArrival(PolicyAppId app, PolicyTimeMs at) {
  AppState& state = State(app);
  if (state.idle_since >= 0) state.histogram.Add(at - state.idle_since);
  state.idle_since = -1;
}

WarmWindow HybridDecision(const IdleTimeHistogram& histogram, const HybridPolicyParams& params,
                          WarmWindow fallback) {
  const int64_t samples = histogram.in_range() + histogram.out_of_bound();
  if (samples < params.min_samples) return fallback;

  if (histogram.out_of_bound() > params.oob_fraction * static_cast<double>(samples)) {
    // Mostly beyond the range: forecast the next idle time from the recent long ones.
    const auto& recent = histogram.recent_out_of_bound();
    const size_t used = std::min<size_t>(recent.size(), params.forecast_history);
    const double predicted =
        std::accumulate(recent.end() - used, recent.end(), 0.0) / static_cast<double>(used);
    return {std::llround(predicted * (1 - params.forecast_margin)),
            std::llround(predicted * 2 * params.forecast_margin)};
  }
  if (histogram.in_range() == 0) return fallback;
  if (histogram.BinCountCv() < params.cv_threshold) {
    if (!params.tail_when_flat) return fallback;
    return {0,
            Minutes((histogram.PercentileBin(params.tail_percentile) + 1) * (1 + params.margin))};
  }

  const PolicyTimeMs prewarm =
      Minutes(histogram.PercentileBin(params.head_percentile) * (1 - params.margin));
  const PolicyTimeMs tail =
      Minutes((histogram.PercentileBin(params.tail_percentile) + 1) * (1 + params.margin));
  return {prewarm, std::max<PolicyTimeMs>(tail - prewarm, 0)};
}

WarmWindow HybridHistogramPolicy::OnIdle(PolicyAppId app, PolicyTimeMs at) {
  AppState& state = State(app);
  state.idle_since = at;
  return HybridDecision(state.histogram, params_, {0, Minutes(params_.range_minutes)});
}

// --- wisp ----------------------------------------------------------------------------------------

WispPredictivePolicy::AppState& WispPredictivePolicy::State(PolicyAppId app) {
  auto it = apps_.find(app);
  if (it == apps_.end()) {
    it = apps_.emplace(app, AppState(params_.histogram.range_minutes)).first;
  }
  return it->second;
}

void WispPredictivePolicy::OnAppMemory(PolicyAppId app, int64_t memory_mb) {
  State(app).memory_mb = memory_mb;
}

void WispPredictivePolicy::OnArrival(PolicyAppId app, PolicyTimeMs at) {
  AppState& state = State(app);
  if (state.idle_since >= 0) state.histogram.Add(at - state.idle_since);
  if (state.last_arrival >= 0) {
    state.gaps.push_back(at - state.last_arrival);
    if (state.gaps.size() > 16) state.gaps.pop_front();
  }
  state.last_arrival = at;
  state.idle_since = -1;
}

PolicyTimeMs WispPredictivePolicy::Period(const AppState& state, PolicyTimeMs* tolerance) const {
  const size_t wanted = static_cast<size_t>(params_.period_samples);
  if (state.gaps.size() < wanted) return 0;
  std::vector<PolicyTimeMs> recent(state.gaps.end() - wanted, state.gaps.end());
  std::nth_element(recent.begin(), recent.begin() + wanted / 2, recent.end());
  const PolicyTimeMs median = recent[wanted / 2];
  *tolerance =
      std::max<PolicyTimeMs>(params_.period_min_tolerance_ms,
                             std::llround(params_.period_tolerance * static_cast<double>(median)));
  for (PolicyTimeMs gap : recent) {
    if (std::llabs(gap - median) > *tolerance) return 0;
  }
  // A "period" within the tolerance of zero is just a burst, not a timer.
  return median > 2 * *tolerance ? median : 0;
}

PolicyTimeMs WispPredictivePolicy::PeriodOf(PolicyAppId app) const {
  auto it = apps_.find(app);
  PolicyTimeMs tolerance = 0;
  return it == apps_.end() ? 0 : Period(it->second, &tolerance);
}

WarmWindow WispPredictivePolicy::OnIdle(PolicyAppId app, PolicyTimeMs at) {
  AppState& state = State(app);
  state.idle_since = at;
  state.expected_next = -1;

  PolicyTimeMs tolerance = 0;
  if (const PolicyTimeMs period = Period(state, &tolerance); period > 0) {
    PolicyTimeMs next = state.last_arrival + period;
    while (next + tolerance < at) next += period;  // ran longer than a period
    state.expected_next = next;
    const PolicyTimeMs slack = tolerance + params_.period_guard_ms;
    PolicyTimeMs open = next - slack;
    if (open - at < params_.min_unload_ms) open = at;
    return WindowCovering(at, open, next + slack);
  }

  // Not periodic: the hybrid histogram, with a fallback that spends more warm time on small
  // instances than on big ones (every app weighs the same in the cold-start percentile, but a
  // big one costs more memory per warm minute).
  double scale = 1;
  if (params_.memory_reference_mb > 0 && state.memory_mb > 0) {
    scale = std::clamp(
        static_cast<double>(params_.memory_reference_mb) / static_cast<double>(state.memory_mb),
        params_.min_scale, params_.max_scale);
  }
  const WarmWindow fallback{
      0, std::llround(static_cast<double>(params_.unknown_keep_alive_ms) * scale)};
  const WarmWindow window = HybridDecision(state.histogram, params_.histogram, fallback);
  state.expected_next = at + window.prewarm_delay_ms;
  return window;
}

double WispPredictivePolicy::EvictionPriority(PolicyAppId app, PolicyTimeMs now,
                                              int64_t memory_mb) const {
  // Evict what costs the most memory-time before it is next needed: big instances whose next
  // arrival is far away (or unknown: then the time it has already been idle).
  auto it = apps_.find(app);
  if (it == apps_.end()) return static_cast<double>(memory_mb);
  const AppState& state = it->second;
  const PolicyTimeMs wait = state.expected_next >= now ? state.expected_next - now
                            : state.idle_since >= 0    ? now - state.idle_since
                                                       : 0;
  return static_cast<double>(memory_mb) * static_cast<double>(wait + 1);
}

// --- registration --------------------------------------------------------------------------------

namespace {

// Reads `options` into the fields named in `fields`; refuses unknown names and negative values.
Status ApplyOptions(const KeepAlivePolicyOptions& options,
                    const std::map<std::string, std::function<void(double)>, std::less<>>& fields,
                    std::string_view policy) {
  for (const auto& [name, value] : options) {
    auto it = fields.find(name);
    if (it == fields.end()) {
      std::string known;
      for (const auto& [field, setter] : fields) known += (known.empty() ? "" : ", ") + field;
      return InvalidArgument(fmt::format("keep-alive policy '{}' has no option '{}' (known: {})",
                                         policy, name, known));
    }
    if (!std::isfinite(value) || value < 0) {
      return InvalidArgument(fmt::format("keep-alive policy '{}': option '{}' must be >= 0, not {}",
                                         policy, name, value));
    }
    it->second(value);
  }
  return Status::Ok();
}

Result<std::unique_ptr<KeepAlivePolicy>> MakeFixed(const KeepAlivePolicyOptions& options) {
  double minutes = 10;
  RETURN_IF_ERROR(
      ApplyOptions(options, {{"keep_alive_minutes", [&](double v) { minutes = v; }}}, "fixed"));
  return std::unique_ptr<KeepAlivePolicy>(std::make_unique<FixedKeepAlivePolicy>(Minutes(minutes)));
}

Result<std::unique_ptr<KeepAlivePolicy>> MakeHybrid(const KeepAlivePolicyOptions& options) {
  HybridPolicyParams p;
  RETURN_IF_ERROR(ApplyOptions(
      options,
      {{"range_minutes", [&](double v) { p.range_minutes = static_cast<int>(v); }},
       {"head_percentile", [&](double v) { p.head_percentile = v; }},
       {"tail_percentile", [&](double v) { p.tail_percentile = v; }},
       {"margin", [&](double v) { p.margin = v; }},
       {"cv_threshold", [&](double v) { p.cv_threshold = v; }},
       {"min_samples", [&](double v) { p.min_samples = static_cast<int>(v); }},
       {"oob_fraction", [&](double v) { p.oob_fraction = v; }},
       {"forecast_margin", [&](double v) { p.forecast_margin = v; }},
       {"forecast_history", [&](double v) { p.forecast_history = static_cast<int>(v); }}},
      "hybrid"));
  if (p.range_minutes < 1 || p.forecast_history < 1 || p.head_percentile > 100 ||
      p.tail_percentile > 100 || p.margin >= 1 || p.forecast_margin >= 1) {
    return InvalidArgument(
        "keep-alive policy 'hybrid': range_minutes and forecast_history must be >= 1, "
        "percentiles <= 100, margins < 1");
  }
  return std::unique_ptr<KeepAlivePolicy>(std::make_unique<HybridHistogramPolicy>(p));
}

Result<std::unique_ptr<KeepAlivePolicy>> MakeWisp(const KeepAlivePolicyOptions& options) {
  WispPolicyParams p;
  RETURN_IF_ERROR(ApplyOptions(
      options,
      {{"period_samples", [&](double v) { p.period_samples = static_cast<int>(v); }},
       {"period_tolerance", [&](double v) { p.period_tolerance = v; }},
       {"period_min_tolerance_s",
        [&](double v) { p.period_min_tolerance_ms = std::llround(v * 1000); }},
       {"period_guard_s", [&](double v) { p.period_guard_ms = std::llround(v * 1000); }},
       {"min_unload_s", [&](double v) { p.min_unload_ms = std::llround(v * 1000); }},
       {"range_minutes", [&](double v) { p.histogram.range_minutes = static_cast<int>(v); }},
       {"min_samples", [&](double v) { p.histogram.min_samples = static_cast<int>(v); }},
       {"cv_threshold", [&](double v) { p.histogram.cv_threshold = v; }},
       {"tail_when_flat", [&](double v) { p.histogram.tail_when_flat = v != 0; }},
       {"head_percentile", [&](double v) { p.histogram.head_percentile = v; }},
       {"tail_percentile", [&](double v) { p.histogram.tail_percentile = v; }},
       {"margin", [&](double v) { p.histogram.margin = v; }},
       {"unknown_keep_alive_minutes", [&](double v) { p.unknown_keep_alive_ms = Minutes(v); }},
       {"memory_reference_mb", [&](double v) { p.memory_reference_mb = static_cast<int64_t>(v); }},
       {"min_scale", [&](double v) { p.min_scale = v; }},
       {"max_scale", [&](double v) { p.max_scale = v; }}},
      "wisp"));
  if (p.period_samples < 2 || p.histogram.range_minutes < 1 || p.histogram.head_percentile > 100 ||
      p.histogram.tail_percentile > 100 || p.histogram.margin >= 1 || p.min_scale > p.max_scale) {
    return InvalidArgument(
        "keep-alive policy 'wisp': period_samples must be >= 2, range_minutes >= 1, "
        "percentiles <= 100, margin < 1, min_scale <= max_scale");
  }
  return std::unique_ptr<KeepAlivePolicy>(std::make_unique<WispPredictivePolicy>(p));
}

}  // namespace

void RegisterBuiltinKeepAlivePolicies() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto& registry = Registry<KeepAlivePolicyFactory>::Get();
    registry.Register("fixed", MakeFixed);
    registry.Register("hybrid", MakeHybrid);
    registry.Register("wisp", MakeWisp);
  });
}

Result<std::unique_ptr<KeepAlivePolicy>> CreateKeepAlivePolicy(
    std::string_view name, const KeepAlivePolicyOptions& options) {
  const auto& registry = Registry<KeepAlivePolicyFactory>::Get();
  const KeepAlivePolicyFactory* factory = registry.Find(name);
  if (factory == nullptr) {
    std::string known;
    for (const std::string& n : registry.Names()) known += (known.empty() ? "" : ", ") + n;
    return NotFound(fmt::format("no keep-alive policy named '{}' (known: {})", name,
                                known.empty() ? "none registered" : known));
  }
  return (*factory)(options);
}

}  // namespace wisp
