#include "runtime/detector/detector_runtime.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/json_path.h"
#include "detect/detector_base.h"
#include "detect/keyed_detectors.h"
#include "fmt/format.h"
#include "wisp/anomaly_detector.h"
#include "wisp/runtime.h"

namespace wisp {
namespace {

// `algorithm: autoencoder`: a registry model reconstructs the vector of sensor values; the
// mean squared reconstruction error is scored against the key's own error history (running
// mean and variance of the errors not flagged), so no fixed threshold has to be guessed.
struct AutoencoderParams {
  std::string model;        // NAME or NAME@VERSION in the node's model registry
  std::string output;       // output name; empty = the model's only/first output
  double k = 4;             // flag when error > mean + k * std of the key's past errors
  int64_t min_points = 20;  // errors learned before anything is flagged
};

constexpr std::string_view kAutoencoderAlgorithm = "autoencoder";

Result<AutoencoderParams> ParseAutoencoderParams(const DetectorParams& params) {
  detect::ParamReader reader(kAutoencoderAlgorithm, params);
  AutoencoderParams out;
  out.model = reader.String("model", "");
  out.output = reader.String("output", "");
  out.k = reader.Double("k", out.k, 0.5, 100);
  out.min_points = reader.Int("min_points", out.min_points, 2, 1'000'000'000);
  RETURN_IF_ERROR(reader.Finish());
  if (out.model.empty()) {
    return InvalidArgument("autoencoder: parameter 'model' (NAME or NAME@VERSION) is required");
  }
  return out;
}

// The key's error history (Welford), kept in the state store.
struct ErrorBaseline {
  double count = 0, mean = 0, m2 = 0;
  std::string Save() const {
    detect::StateWriter w;
    w(std::string(kAutoencoderAlgorithm));
    w(count), w(mean), w(m2);
    return w.Take();
  }
  bool Load(std::string_view bytes) {
    detect::StateReader r(bytes);
    std::string tag;
    ErrorBaseline copy;
    r(tag), r(copy.count), r(copy.mean), r(copy.m2);
    if (!r.ok() || tag != kAutoencoderAlgorithm) return false;
    *this = copy;
    return true;
  }
  void Learn(double error) {
    count += 1;
    double delta = error - mean;
    mean += delta / count;
    m2 += delta * (error - mean);
  }
  double Std() const { return count > 1 ? std::sqrt(m2 / (count - 1)) : 0; }
};

// Flattens nested JSON arrays of numbers into `out`; false on anything else.
bool Flatten(const nlohmann::json& value, std::vector<double>& out) {
  if (value.is_number()) {
    out.push_back(value.get<double>());
    return true;
  }
  if (!value.is_array()) return false;
  for (const auto& v : value) {
    if (!Flatten(v, out)) return false;
  }
  return true;
}

class DetectorInstance final : public Instance {
 public:
  DetectorInstance(FunctionSpecPtr spec, DetectorParams params, std::optional<RulParams> rul,
                   std::optional<AutoencoderParams> autoencoder = std::nullopt)
      : spec_(std::move(spec)),
        params_(std::move(params)),
        rul_(std::move(rul)),
        autoencoder_(std::move(autoencoder)) {}

  Result<Reply> Invoke(const Event& event, HostApi& host) override {
    const DetectorFunctionSpec& config = *spec_->detector;
    nlohmann::json parsed;
    const nlohmann::json* payload = event.json;
    if (payload == nullptr) {
      parsed = nlohmann::json::parse(event.body, nullptr, /*allow_exceptions=*/false);
      if (parsed.is_discarded()) {
        return InvalidArgument("detector: the payload is not JSON or a number");
      }
      payload = &parsed;
    }

    // The key.
    std::string key = "default";
    if (config.key.starts_with("topic:")) {
      size_t index = std::stoul(config.key.substr(6));
      std::string_view topic = event.topic;
      for (size_t i = 0; i < index && !topic.empty(); ++i) {
        size_t slash = topic.find('/');
        topic = slash == std::string_view::npos ? std::string_view() : topic.substr(slash + 1);
      }
      key = std::string(topic.substr(0, topic.find('/')));
      if (key.empty()) {
        return InvalidArgument(
            fmt::format("detector: topic '{}' has no segment {}", event.topic, index));
      }
    } else if (config.key.starts_with("field:")) {
      const nlohmann::json* field =
          FindDottedField(*payload, std::string_view(config.key).substr(6));
      if (field == nullptr || !(field->is_string() || field->is_number())) {
        return InvalidArgument(fmt::format("detector: no key at field '{}'", config.key.substr(6)));
      }
      key = field->is_string() ? field->get<std::string>() : field->dump();
    }

    // The value(s).
    const nlohmann::json* value =
        config.value.empty() ? payload : FindDottedField(*payload, config.value);
    values_.clear();
    if (value != nullptr && value->is_number()) {
      values_.push_back(value->get<double>());
    } else if (value != nullptr && value->is_array()) {
      for (const auto& v : *value) {
        if (!v.is_number()) break;
        values_.push_back(v.get<double>());
      }
      if (values_.size() != value->size()) values_.clear();
    }
    if (values_.empty()) {
      return InvalidArgument(fmt::format("detector: no number at field '{}'", config.value));
    }

    double ts = std::chrono::duration<double>(event.timestamp.time_since_epoch()).count();
    nlohmann::json out;
    bool alert = false;
    if (autoencoder_) {
      ASSIGN_OR_RETURN(out, ScoreReconstruction(host, key));
      alert = out["anomaly"].get<bool>();
    } else if (rul_) {
      if (values_.size() != 1) {
        return InvalidArgument("detector rul: takes one health value per event, not an array");
      }
      if (!rul_->time_field.empty()) {
        const nlohmann::json* time = FindDottedField(*payload, rul_->time_field);
        if (time == nullptr || !time->is_number()) {
          return InvalidArgument(
              fmt::format("detector rul: no number at time field '{}'", rul_->time_field));
        }
        ts = time->get<double>();
      }
      ASSIGN_OR_RETURN(RulEstimate estimate, remaining_life_.Update(host.State(), host.Namespace(),
                                                                    *rul_, key, ts, values_[0]));
      alert = rul_->Alert(estimate);
      // JSON has no infinity: no crossing ahead (or not enough points yet) is null.
      auto seconds = [](double s) { return std::isinf(s) ? nlohmann::json() : nlohmann::json(s); };
      out = {{"key", key},
             {"rul_seconds", seconds(estimate.rul_seconds)},
             {"low", seconds(estimate.rul_low_seconds)},
             {"high", seconds(estimate.rul_high_seconds)},
             {"trend", estimate.slope},
             {"valid", estimate.valid},
             {"failed", estimate.failed},
             {"alert", alert},
             {"value", values_[0]}};
    } else {
      ASSIGN_OR_RETURN(AnomalyScore score,
                       detectors_.Update(host.State(), host.Namespace(), config.algorithm, params_,
                                         key, ts, values_));
      alert = score.anomaly;
      out = {{"key", key}, {"score", score.score}, {"anomaly", score.anomaly}};
      out["value"] = values_.size() == 1 ? nlohmann::json(values_[0]) : nlohmann::json(values_);
    }
    out["function"] = spec_->name;
    std::string body = out.dump();
    if (!config.emit.empty() && (alert || config.emit_all)) {
      std::string topic = config.emit;
      for (size_t at; (at = topic.find("{key}")) != std::string::npos;) {
        topic.replace(at, 5, key);
      }
      RETURN_IF_ERROR(host.Emit(topic, body, EmitOptions{.qos = 1}));
    }
    Reply reply;
    reply.content_type = "application/json";
    reply.body = std::move(body);
    return reply;
  }

  // Runs the model on values_ and scores the reconstruction error against the key's history.
  Result<nlohmann::json> ScoreReconstruction(HostApi& host, const std::string& key) {
    const AutoencoderParams& p = *autoencoder_;
    nlohmann::json inputs = nlohmann::json::array({values_});  // a batch of one
    ASSIGN_OR_RETURN(std::string outputs_text, host.Infer(p.model, inputs.dump()));
    nlohmann::json outputs = nlohmann::json::parse(outputs_text, nullptr, false);
    if (!outputs.is_object() || outputs.empty()) {
      return Internal("autoencoder: the model returned no outputs");
    }
    auto chosen = p.output.empty() ? outputs.begin() : outputs.find(p.output);
    if (chosen == outputs.end()) {
      return InvalidArgument(
          fmt::format("autoencoder: model '{}' has no output '{}'", p.model, p.output));
    }
    reconstruction_.clear();
    if (!Flatten(*chosen, reconstruction_) || reconstruction_.size() != values_.size()) {
      return InvalidArgument(fmt::format(
          "autoencoder: model '{}' output '{}' has {} values for {} inputs; it must reconstruct "
          "its input",
          p.model, chosen.key(), reconstruction_.size(), values_.size()));
    }
    double error = 0;
    for (size_t i = 0; i < values_.size(); ++i) {
      double d = values_[i] - reconstruction_[i];
      error += d * d;
    }
    error /= static_cast<double>(values_.size());

    std::string state_key = detect::KeyedDetectors::StateKey(kAutoencoderAlgorithm, key);
    ASSIGN_OR_RETURN(std::optional<std::string> stored,
                     host.State().Get(host.Namespace(), state_key));
    ErrorBaseline baseline;
    if (stored) (void)baseline.Load(*stored);  // damaged: start afresh
    bool warm = baseline.count >= static_cast<double>(p.min_points);
    // A floor on the spread: identical errors must not make every later wobble an anomaly.
    double spread = std::max(baseline.Std(), 1e-9 + 1e-6 * std::fabs(baseline.mean));
    double limit = baseline.mean + p.k * spread;
    double z = (error - baseline.mean) / spread;
    // z = k scores 0.5, like the detectors' 3-sigma point; below the mean scores 0.
    double score = warm && z > 0 ? z * z / (z * z + p.k * p.k) : 0;
    bool anomaly = warm && error > limit;
    if (!anomaly) baseline.Learn(error);  // a worn machine must not raise its own threshold
    RETURN_IF_ERROR(host.State().Put(host.Namespace(), state_key, baseline.Save()));
    return nlohmann::json{{"key", key},
                          {"score", score},
                          {"anomaly", anomaly},
                          {"error", error},
                          {"threshold", warm ? nlohmann::json(limit) : nlohmann::json()},
                          {"value", values_}};
  }

  bool Reusable() const override { return true; }
  std::uint64_t MemoryBytes() const override { return 0; }

 private:
  FunctionSpecPtr spec_;
  DetectorParams params_;
  std::optional<RulParams> rul_;                  // set for algorithm: rul
  std::optional<AutoencoderParams> autoencoder_;  // set for algorithm: autoencoder
  std::vector<double> reconstruction_;            // scratch
  detect::KeyedDetectors detectors_;
  detect::KeyedRemainingLife remaining_life_;
  std::vector<double> values_;  // scratch
};

class DetectorRuntime final : public Runtime {
 public:
  Result<InstancePtr> CreateInstance(const FunctionSpecPtr& spec,
                                     const std::string& function_dir) override {
    if (spec == nullptr || !spec->detector) {
      return InvalidArgument("runtime detector needs a detector: block in the manifest");
    }
    DetectorParams params(spec->detector->params.begin(), spec->detector->params.end());
    if (spec->detector->algorithm == kAutoencoderAlgorithm) {
      auto autoencoder = ParseAutoencoderParams(params);
      if (!autoencoder.ok()) return autoencoder.status().WithContext("detector");
      return InstancePtr(
          std::make_unique<DetectorInstance>(spec, std::move(params), std::nullopt, *autoencoder));
    }
    if (spec->detector->algorithm == kRemainingLifeAlgorithm) {
      auto rul = ParseRulParams(params);
      if (!rul.ok()) return rul.status().WithContext("detector");
      return InstancePtr(std::make_unique<DetectorInstance>(spec, std::move(params), *rul));
    }
    // Build one now so a bad algorithm or parameter fails the deploy, not every event.
    auto probe = CreateAnomalyDetector(spec->detector->algorithm, params);
    if (!probe.ok()) return probe.status().WithContext("detector");
    return InstancePtr(std::make_unique<DetectorInstance>(spec, std::move(params), std::nullopt));
  }
};

}  // namespace

void RegisterDetectorRuntime() {
  RuntimeRegistry::Get().Register("detector",
                                  [] { return RuntimePtr(std::make_shared<DetectorRuntime>()); });
}

}  // namespace wisp
