// Detector registry, parameter parsing and the remaining-useful-life estimator.
#include <charconv>
#include <cmath>
#include <limits>
#include <mutex>
#include <type_traits>

#include "detect/detector_base.h"
#include "fmt/format.h"

namespace wisp {

Result<AnomalyScore> AnomalyDetector::UpdateVector(double timestamp,
                                                   std::span<const double> values) {
  if (values.size() != Dimensions()) {
    return InvalidArgument(fmt::format("detector '{}' takes {} value(s) per point, got {}", Name(),
                                       Dimensions(), values.size()));
  }
  return Update(timestamp, values[0]);
}

void RegisterBuiltinAnomalyDetectors() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto& registry = AnomalyDetectorRegistry::Get();
    registry.Register("gaussian", detect::MakeGaussian);
    registry.Register("ewma", detect::MakeEwma);
    registry.Register("cusum", detect::MakeCusum);
    registry.Register("contextual", detect::MakeContextual);
    registry.Register("knn", detect::MakeKnnConformal);
    registry.Register("ensemble", detect::MakeEnsemble);
    registry.Register("mahalanobis", detect::MakeMahalanobis);
  });
}

Result<AnomalyDetectorPtr> CreateAnomalyDetector(std::string_view name,
                                                 const DetectorParams& params) {
  RegisterBuiltinAnomalyDetectors();
  if (name == "best") name = kBestAnomalyDetector;
  const AnomalyDetectorFactory* factory = AnomalyDetectorRegistry::Get().Find(name);
  if (factory == nullptr) {
    return NotFound(fmt::format("no anomaly detector named '{}' (known: {}, best)", name,
                                fmt::join(AnomalyDetectorNames(), ", ")));
  }
  return (*factory)(params);
}

std::vector<std::string> AnomalyDetectorNames() {
  RegisterBuiltinAnomalyDetectors();
  return AnomalyDetectorRegistry::Get().Names();
}

Status ParseDetectorParam(std::string_view key_equals_value, DetectorParams& params) {
  size_t eq = key_equals_value.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    return InvalidArgument(
        fmt::format("detector parameter '{}' is not key=value", key_equals_value));
  }
  params.insert_or_assign(std::string(key_equals_value.substr(0, eq)),
                          std::string(key_equals_value.substr(eq + 1)));
  return Status::Ok();
}

namespace detect {

const std::string* ParamReader::Lookup(std::string_view key) {
  used_.emplace_back(key);
  auto it = params_.find(key);
  return it == params_.end() ? nullptr : &it->second;
}

namespace {

// Parses a detector parameter of type T: `fallback` when absent; on a malformed or out-of-range
// value, the first such error goes to `error` and `fallback` is returned.
template <typename T>
T ParseNumberParam(const std::string* text, T fallback, T min, T max, std::string_view detector,
                   std::string_view key, Status& error) {
  if (text == nullptr) return fallback;
  T value = 0;
  auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
  bool malformed = ec != std::errc() || end != text->data() + text->size();
  if constexpr (std::is_floating_point_v<T>) malformed = malformed || !std::isfinite(value);
  if (malformed) {
    if (error.ok()) {
      error =
          InvalidArgument(fmt::format("{}: parameter {}='{}' is not {}", detector, key, *text,
                                      std::is_floating_point_v<T> ? "a number" : "a whole number"));
    }
    return fallback;
  }
  if (value < min || value > max) {
    if (error.ok()) {
      error = InvalidArgument(fmt::format("{}: parameter {}={} is out of range [{}, {}]", detector,
                                          key, *text, min, max));
    }
    return fallback;
  }
  return value;
}

}  // namespace

double ParamReader::Double(std::string_view key, double fallback, double min, double max) {
  return ParseNumberParam(Lookup(key), fallback, min, max, detector_, key, error_);
}

int64_t ParamReader::Int(std::string_view key, int64_t fallback, int64_t min, int64_t max) {
  return ParseNumberParam(Lookup(key), fallback, min, max, detector_, key, error_);
}

std::string ParamReader::String(std::string_view key, std::string fallback) {
  const std::string* text = Lookup(key);
  return text == nullptr ? fallback : *text;
}

Status ParamReader::Finish() const {
  RETURN_IF_ERROR(error_);
  for (const auto& [key, value] : params_) {
    bool known = false;
    for (const std::string& used : used_) known = known || used == key;
    // Ensemble members take "<member>.<key>" parameters; the ensemble checks those itself.
    if (!known && key.find('.') == std::string::npos) {
      return InvalidArgument(fmt::format("{}: unknown parameter '{}' (known: {})", detector_, key,
                                         fmt::join(used_, ", ")));
    }
  }
  return Status::Ok();
}

}  // namespace detect

Result<RemainingLifeEstimator> RemainingLifeEstimator::Create(double failure_threshold,
                                                              double half_life_points,
                                                              int min_points, RulTrend trend) {
  if (!(half_life_points >= 2) || !std::isfinite(half_life_points) || min_points < 3 ||
      !std::isfinite(failure_threshold)) {
    return InvalidArgument(
        "remaining life: need a finite threshold, half_life_points >= 2 and min_points >= 3");
  }
  if (trend == RulTrend::kExponential && !(failure_threshold > 0)) {
    return InvalidArgument("remaining life: an exponential trend needs a threshold > 0");
  }
  RemainingLifeEstimator e;
  e.log_scale_ = trend == RulTrend::kExponential;
  e.threshold_ = e.log_scale_ ? std::log(failure_threshold) : failure_threshold;
  e.decay_ = std::pow(0.5, 1.0 / half_life_points);
  e.min_points_ = min_points;
  return e;
}

RulEstimate RemainingLifeEstimator::Update(double timestamp, double health) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  // Exponential wear is a straight line in log space; the crossing time is the same there.
  if (log_scale_) health = std::log(std::max(health, std::numeric_limits<double>::min()));
  if (count_ == 0) {
    t0_ = timestamp;
    side_ = health >= threshold_ ? 1 : -1;  // healthy side: the side the stream starts on
  }
  double t = timestamp - t0_;
  // Exponentially weighted least squares: old points fade, so a trend that changes is followed.
  weight_ = weight_ * decay_ + 1;
  sum_t_ = sum_t_ * decay_ + t;
  sum_y_ = sum_y_ * decay_ + health;
  sum_tt_ = sum_tt_ * decay_ + t * t;
  sum_ty_ = sum_ty_ * decay_ + t * health;
  sum_yy_ = sum_yy_ * decay_ + health * health;
  count_ += 1;

  RulEstimate out;
  out.rul_seconds = out.rul_low_seconds = out.rul_high_seconds = kInf;
  if (count_ < min_points_) return out;
  double mean_t = sum_t_ / weight_, mean_y = sum_y_ / weight_;
  double stt = sum_tt_ - weight_ * mean_t * mean_t;
  double sty = sum_ty_ - weight_ * mean_t * mean_y;
  double syy = sum_yy_ - weight_ * mean_y * mean_y;
  if (stt <= 0) return out;
  double slope = sty / stt;
  double fitted_now = mean_y + slope * (t - mean_t);
  // Residual variance with the effective number of points (weights sum) minus two fitted terms.
  double dof = std::max(weight_ - 2, 1.0);
  double residual_var = std::max(syy - slope * sty, 0.0) / dof;
  double slope_se = std::sqrt(residual_var / stt);
  out.slope = slope;
  double gap = threshold_ - fitted_now;  // how far the trend still has to go
  if (gap * side_ >= 0) {
    out.valid = true;
    out.failed = true;
    out.rul_seconds = out.rul_low_seconds = out.rul_high_seconds = 0;
    return out;
  }
  // The crossing lies ahead only when the slope points towards the threshold.
  if (slope == 0 || (gap > 0) != (slope > 0)) return out;
  out.valid = true;
  out.rul_seconds = gap / slope;
  // Faster degradation (|slope| + z*se) from a level nearer the threshold gives the low end;
  // slower from a level further away gives the high end, or never. The level's error matters
  // most close to the crossing, where the slope's hardly does.
  constexpr double kZ90 = 1.645;
  double level_se = std::sqrt(residual_var * (1 / weight_ + (t - mean_t) * (t - mean_t) / stt));
  double fast = std::fabs(slope) + kZ90 * slope_se;
  double slow = std::fabs(slope) - kZ90 * slope_se;
  out.rul_low_seconds = std::max(std::fabs(gap) - kZ90 * level_se, 0.0) / fast;
  out.rul_high_seconds = slow > 0 ? (std::fabs(gap) + kZ90 * level_se) / slow : kInf;
  return out;
}

Result<RulParams> ParseRulParams(const DetectorParams& params) {
  detect::ParamReader reader(kRemainingLifeAlgorithm, params);
  RulParams out;
  if (!reader.Has("threshold")) {
    return InvalidArgument("rul: parameter 'threshold' (the failure threshold) is required");
  }
  constexpr double kBig = 1e300;
  out.failure_threshold = reader.Double("threshold", 0, -kBig, kBig);
  out.half_life_points = reader.Double("half_life", out.half_life_points, 2, 1e9);
  out.min_points = static_cast<int>(reader.Int("min_points", out.min_points, 3, 1'000'000'000));
  out.horizon_seconds = reader.Double("horizon", out.horizon_seconds, 0, kBig);
  out.time_field = reader.String("time_field", "");
  std::string trend = reader.String("trend", "linear");
  if (trend == "exponential") {
    out.trend = RulTrend::kExponential;
  } else if (trend != "linear") {
    return InvalidArgument(
        fmt::format("rul: parameter trend='{}' is not linear or exponential", trend));
  }
  if (out.trend == RulTrend::kExponential && !(out.failure_threshold > 0)) {
    return InvalidArgument("rul: trend=exponential needs a threshold > 0");
  }
  RETURN_IF_ERROR(reader.Finish());
  return out;
}

std::string RemainingLifeEstimator::SaveState() const {
  detect::StateWriter w;
  w(std::string("rul"));
  for (double v : {threshold_, decay_, static_cast<double>(min_points_), log_scale_ ? 1.0 : 0.0,
                   t0_, side_, count_, weight_, sum_t_, sum_y_, sum_tt_, sum_ty_, sum_yy_}) {
    w(v);
  }
  return w.Take();
}

Status RemainingLifeEstimator::LoadState(std::string_view bytes) {
  detect::StateReader r(bytes);
  std::string tag;
  r(tag);
  double v[13];
  for (double& x : v) r(x);
  if (tag != "rul" || !r.ok()) return InvalidArgument("remaining-life state is damaged");
  if (v[0] != threshold_ || v[1] != decay_ || v[2] != min_points_ ||
      v[3] != (log_scale_ ? 1.0 : 0.0)) {
    return InvalidArgument("remaining-life state was saved with other parameters");
  }
  t0_ = v[4], side_ = v[5], count_ = v[6], weight_ = v[7], sum_t_ = v[8], sum_y_ = v[9];
  sum_tt_ = v[10], sum_ty_ = v[11], sum_yy_ = v[12];
  return Status::Ok();
}

}  // namespace wisp
