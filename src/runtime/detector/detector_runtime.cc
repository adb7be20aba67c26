#include "runtime/detector/detector_runtime.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "detect/keyed_detectors.h"
#include "fmt/format.h"
#include "wisp/anomaly_detector.h"
#include "wisp/runtime.h"

namespace wisp {
namespace {

// The value at a dotted path ("a.b"), or null.
const nlohmann::json* Field(const nlohmann::json& root, std::string_view path) {
  const nlohmann::json* at = &root;
  while (!path.empty()) {
    size_t dot = path.find('.');
    std::string part(path.substr(0, dot));
    if (!at->is_object()) return nullptr;
    auto it = at->find(part);
    if (it == at->end()) return nullptr;
    at = &*it;
    path = dot == std::string_view::npos ? std::string_view() : path.substr(dot + 1);
  }
  return at;
}

class DetectorInstance final : public Instance {
 public:
  DetectorInstance(FunctionSpecPtr spec, DetectorParams params, std::optional<RulParams> rul)
      : spec_(std::move(spec)), params_(std::move(params)), rul_(std::move(rul)) {}

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
      const nlohmann::json* field = Field(*payload, std::string_view(config.key).substr(6));
      if (field == nullptr || !(field->is_string() || field->is_number())) {
        return InvalidArgument(fmt::format("detector: no key at field '{}'", config.key.substr(6)));
      }
      key = field->is_string() ? field->get<std::string>() : field->dump();
    }

    // The value(s).
    const nlohmann::json* value = config.value.empty() ? payload : Field(*payload, config.value);
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
    if (rul_) {
      if (values_.size() != 1) {
        return InvalidArgument("detector rul: takes one health value per event, not an array");
      }
      if (!rul_->time_field.empty()) {
        const nlohmann::json* time = Field(*payload, rul_->time_field);
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

  bool Reusable() const override { return true; }
  std::uint64_t MemoryBytes() const override { return 0; }

 private:
  FunctionSpecPtr spec_;
  DetectorParams params_;
  std::optional<RulParams> rul_;  // set for algorithm: rul
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
