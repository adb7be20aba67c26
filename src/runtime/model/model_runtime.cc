#include "runtime/model/model_runtime.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "common/json_path.h"
#include "inference/tensor_json.h"
#include "models/model_store.h"
#include "wisp/units.h"

namespace wisp {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

enum class OutputKind { kArgmax, kThreshold, kReconstructionError, kRaw };

struct ModelFunctionConfig {
  std::string model_ref;   // registry
  std::string model_file;  // or a file in the function directory
  std::vector<std::string> fields;
  std::string array_field;
  double offset = 0, scale = 1;
  std::size_t window = 1;
  std::string key_field;
  OutputKind kind = OutputKind::kRaw;
  std::vector<std::string> labels;
  double threshold = 0;
  std::string alert_topic;
  // upstream: escalate answers less confident than upstream_confidence (argmax only).
  std::string upstream_url;
  std::string upstream_function;
  double upstream_confidence = 0.8;
  std::chrono::milliseconds upstream_deadline{200};
};

Result<ModelFunctionConfig> ParseConfig(const std::string& text, const std::string& source) {
  ModelFunctionConfig config;
  try {
    YAML::Node root = YAML::Load(text);
    if (!root.IsMap()) return InvalidArgument(source + ": must be a map (model:, input:, output:)");
    for (const auto& item : root) {
      const std::string key = item.first.as<std::string>();
      if (key != "model" && key != "file" && key != "input" && key != "output" &&
          key != "upstream") {
        return InvalidArgument(fmt::format(
            "{}: unknown key '{}' (known: model, file, input, output, upstream)", source, key));
      }
    }
    if (root["model"]) config.model_ref = root["model"].as<std::string>();
    if (root["file"]) config.model_file = root["file"].as<std::string>();
    if (config.model_ref.empty() == config.model_file.empty()) {
      return InvalidArgument(source + ": give exactly one of model: NAME[@VERSION] or file: PATH");
    }
    if (YAML::Node input = root["input"]) {
      if (input["fields"]) config.fields = input["fields"].as<std::vector<std::string>>();
      if (input["field"]) config.array_field = input["field"].as<std::string>();
      if (input["offset"]) config.offset = input["offset"].as<double>();
      if (input["scale"]) config.scale = input["scale"].as<double>();
      if (input["window"]) {
        int window = input["window"].as<int>();
        if (window < 1 || window > 4096) {
          return InvalidArgument(source + ": input.window must be 1..4096");
        }
        config.window = static_cast<std::size_t>(window);
      }
      if (input["key"]) config.key_field = input["key"].as<std::string>();
    }
    if (config.fields.empty() == config.array_field.empty()) {
      return InvalidArgument(source + ": input needs exactly one of fields: [...] or field: NAME");
    }
    if (YAML::Node output = root["output"]) {
      const std::string kind = output["kind"] ? output["kind"].as<std::string>() : "raw";
      if (kind == "argmax") {
        config.kind = OutputKind::kArgmax;
      } else if (kind == "threshold") {
        config.kind = OutputKind::kThreshold;
      } else if (kind == "reconstruction_error") {
        config.kind = OutputKind::kReconstructionError;
      } else if (kind == "raw") {
        config.kind = OutputKind::kRaw;
      } else {
        return InvalidArgument(
            fmt::format("{}: output.kind '{}' (use argmax, threshold, reconstruction_error or raw)",
                        source, kind));
      }
      if (output["labels"]) config.labels = output["labels"].as<std::vector<std::string>>();
      if (output["threshold"]) config.threshold = output["threshold"].as<double>();
      if (output["alert_topic"]) config.alert_topic = output["alert_topic"].as<std::string>();
    }
    if (YAML::Node upstream = root["upstream"]) {
      if (!upstream["url"] || !upstream["function"]) {
        return InvalidArgument(source + ": upstream needs url: and function:");
      }
      config.upstream_url = upstream["url"].as<std::string>();
      config.upstream_function = upstream["function"].as<std::string>();
      if (upstream["confidence"]) config.upstream_confidence = upstream["confidence"].as<double>();
      if (upstream["deadline"]) {
        auto deadline = ParseDuration(upstream["deadline"].as<std::string>());
        if (!deadline.ok() || deadline->count() <= 0) {
          return InvalidArgument(source + ": upstream.deadline must be a duration like 200ms");
        }
        config.upstream_deadline = *deadline;
      }
      if (config.kind != OutputKind::kArgmax) {
        // Only argmax has a confidence (its top probability); see docs/inference.md.
        return InvalidArgument(source + ": upstream needs output.kind: argmax");
      }
    }
  } catch (const YAML::Exception& e) {
    return InvalidArgument(fmt::format("{}: {}", source, e.what()));
  }
  return config;
}

// Sessions shared by the instances of one thread (shard), by model sha256.
using SessionCache = std::map<std::string, std::weak_ptr<ModelSession>>;
SessionCache& ThreadSessions() {
  thread_local SessionCache cache;
  return cache;
}

// Rows of the last events, per function and key, shared by every instance on the node.
struct Windows {
  std::mutex mu;
  std::map<std::string, std::deque<std::vector<float>>> rows;  // "function\0key"
};

// A session for NAME@VERSION from the thread's cache (by sha256), loading it when absent.
Result<std::shared_ptr<ModelSession>> ThreadSession(ModelStore& store, const std::string& ref) {
  ASSIGN_OR_RETURN(ModelMetadata metadata, store.Describe(ref));
  std::shared_ptr<ModelSession> session = ThreadSessions()[metadata.sha256].lock();
  if (session) return session;
  ASSIGN_OR_RETURN(LoadedModel loaded, store.Load(ref));
  session = std::move(loaded.session);
  ThreadSessions()[loaded.metadata.sha256] = session;
  return session;
}

// Routes the calls of a function naming NAME@stable (or NAME@canary) to the channel's current
// version, and splits NAME@stable between stable and canary. It re-resolves only when the
// store's channel generation moved, and loads the new sessions before dropping the old ones, so
// a switch fails no call: a call in flight keeps the session it started with (one shard runs
// one call at a time; other shards hold their own sessions).
class ChannelRouter {
 public:
  ChannelRouter(ModelStore* store, std::string name, std::string channel)
      : store_(store), name_(std::move(name)), channel_(std::move(channel)) {}

  // Brings the sessions up to date. Fails only the first time (CreateInstance reports it);
  // later a version that cannot be loaded is logged and the old sessions stay.
  Status Refresh() {
    const std::uint64_t generation = store_->ChannelGeneration();
    if (loaded_ && generation == generation_) return Status::Ok();
    Status refreshed = Load();
    generation_ = generation;
    if (!refreshed.ok()) {
      if (!loaded_) return refreshed;
      spdlog::warn("model {}@{}: keeping the previous version: {}", name_, channel_,
                   refreshed.message());
    }
    loaded_ = true;
    return Status::Ok();
  }

  // The session for this call. Deterministic split: of every 100 calls, the first `percent`
  // (by this router's call counter) go to the canary.
  ModelSession& Pick(bool& canary) {
    canary = canary_ != nullptr && static_cast<int>(calls_++ % 100) < percent_;
    return canary ? *canary_ : *stable_;
  }
  ModelSession& Stable() { return *stable_; }
  const std::string& StableVersion() const { return stable_version_; }
  const std::string& CanaryVersion() const { return canary_version_; }

  // A canary call's outcome. When the window of the last `window` canary calls is full and
  // more than max_error_rate of them failed, the canary is dropped for every shard.
  void RecordCanary(bool failed) {
    outcomes_.push_back(failed);
    failures_ += failed;
    if (static_cast<int>(outcomes_.size()) > window_) {
      failures_ -= outcomes_.front();
      outcomes_.pop_front();
    }
    if (static_cast<int>(outcomes_.size()) < window_ ||
        failures_ <= max_error_rate_ * static_cast<double>(window_)) {
      return;
    }
    const std::string reason = fmt::format("{} of the last {} canary calls failed (bound {:g})",
                                           failures_, window_, max_error_rate_);
    spdlog::warn("model {}: canary {} rolled back to stable: {}", name_, canary_version_, reason);
    CanaryRollbackCount().fetch_add(1, std::memory_order_relaxed);
    auto abandoned = store_->AbandonCanary(name_, canary_version_, reason);
    if (!abandoned.ok()) {
      spdlog::error("model {}: cannot record the canary rollback: {}", name_,
                    abandoned.status().message());
    }
    canary_.reset();  // at once on this shard; the others follow the store's generation
    ResetWindow();
  }

 private:
  Status Load() {
    ASSIGN_OR_RETURN(ModelChannels channels, store_->Channels(name_));
    const std::string& target = channel_ == "stable" ? channels.stable : channels.canary;
    if (target.empty()) {
      return NotFound(
          fmt::format("model '{}' has no {} channel (wisp model promote {}@V --channel {})", name_,
                      channel_, name_, channel_));
    }
    ASSIGN_OR_RETURN(auto stable, ThreadSession(*store_, name_ + "@" + target));
    std::shared_ptr<ModelSession> canary;
    if (channel_ == "stable" && !channels.canary.empty() && channels.canary_percent > 0) {
      ASSIGN_OR_RETURN(canary, ThreadSession(*store_, name_ + "@" + channels.canary));
    }
    if (channels.canary != canary_version_) ResetWindow();
    stable_ = std::move(stable);
    stable_version_ = target;
    canary_ = std::move(canary);
    canary_version_ = channels.canary;
    percent_ = channels.canary_percent;
    max_error_rate_ = channels.canary_max_error_rate;
    window_ = std::max(1, channels.canary_window);
    return Status::Ok();
  }
  void ResetWindow() {
    outcomes_.clear();
    failures_ = 0;
  }

  ModelStore* store_;
  std::string name_, channel_;
  bool loaded_ = false;
  std::uint64_t generation_ = 0;
  std::shared_ptr<ModelSession> stable_, canary_;
  std::string stable_version_, canary_version_;
  int percent_ = 0;
  double max_error_rate_ = 0.2;
  int window_ = 20;
  std::uint64_t calls_ = 0;
  std::deque<bool> outcomes_;
  int failures_ = 0;
};

class ModelInstance final : public Instance {
 public:
  ModelInstance(FunctionSpecPtr spec, ModelFunctionConfig config,
                std::shared_ptr<ModelSession> session, std::unique_ptr<ChannelRouter> router,
                std::shared_ptr<Windows> windows)
      : spec_(std::move(spec)),
        config_(std::move(config)),
        session_(std::move(session)),
        router_(std::move(router)),
        windows_(std::move(windows)) {}

  Result<Reply> Invoke(const Event& event, HostApi& host) override {
    event_body_ = event.body;
    json parsed;
    const json* doc = event.json;
    if (doc == nullptr) {
      parsed = json::parse(event.body, nullptr, /*allow_exceptions=*/false);
      if (parsed.is_discarded()) {
        return FunctionError("a model function needs a JSON event (fields become the tensor)");
      }
      doc = &parsed;
    }
    std::vector<float> row;
    if (!config_.array_field.empty()) {
      const json* values = FindDottedField(*doc, config_.array_field);
      if (values == nullptr || !values->is_array()) {
        return FunctionError(
            fmt::format("event field {} is missing or not an array", config_.array_field));
      }
      for (const json& v : *values) {
        if (!v.is_number()) {
          return FunctionError(
              fmt::format("event field {} holds a non-number", config_.array_field));
        }
        row.push_back(Scaled(v.get<double>()));
      }
    } else {
      row.reserve(config_.fields.size());
      for (const std::string& field : config_.fields) {
        const json* v = FindDottedField(*doc, field);
        if (v == nullptr || !v->is_number()) {
          return FunctionError(fmt::format("event field {} is missing or not a number", field));
        }
        row.push_back(Scaled(v->get<double>()));
      }
    }

    Tensor& tensor = input_.second;
    tensor.data.clear();
    if (config_.window > 1) {
      std::string key = spec_->name;
      key += '\0';
      if (!config_.key_field.empty()) {
        if (const json* k = FindDottedField(*doc, config_.key_field)) {
          key += k->is_string() ? k->get<std::string>() : k->dump();
        }
      }
      std::lock_guard lock(windows_->mu);
      auto& rows = windows_->rows[key];
      rows.push_back(std::move(row));
      while (rows.size() > config_.window) rows.pop_front();
      if (rows.size() < config_.window) {
        Reply reply;
        reply.status = 202;
        reply.content_type = "application/json";
        reply.body =
            json{{"status", "warming"}, {"have", rows.size()}, {"need", config_.window}}.dump();
        return reply;
      }
      for (const auto& r : rows) tensor.data.insert(tensor.data.end(), r.begin(), r.end());
    } else {
      tensor.data = std::move(row);
    }
    if (!router_) return RunOn(*session_, host);
    RETURN_IF_ERROR(router_->Refresh());
    bool canary = false;
    ModelSession& session = router_->Pick(canary);
    answered_by_ = canary ? &router_->CanaryVersion() : &router_->StableVersion();
    auto reply = RunOn(session, host);
    if (!canary) return reply;
    if (reply.ok()) {
      router_->RecordCanary(/*failed=*/false);
      return reply;
    }
    // The canary failed: answer with stable. Only a failure stable does not share counts
    // against the canary (a bad event fails both).
    answered_by_ = &router_->StableVersion();
    auto fallback = RunOn(router_->Stable(), host);
    if (fallback.ok()) router_->RecordCanary(/*failed=*/true);
    return fallback;
  }

  bool Reusable() const override { return true; }
  std::uint64_t MemoryBytes() const override { return 0; }

 private:
  // Fits the prepared input to `session`'s declared input, runs it and post-processes.
  Result<Reply> RunOn(ModelSession& session, HostApi& host) {
    if (&session != shaped_for_) {
      const auto& declared = session.Info().inputs;
      if (declared.size() != 1) {
        return FunctionError(fmt::format("a model function's model must have one input; it has {}",
                                         declared.size()));
      }
      input_shape_ = declared.front().shape;
      input_name_ = declared.front().name;
      shaped_for_ = &session;
    }
    RETURN_IF_ERROR(FitShape(input_.second));
    input_.first = input_name_;
    inputs_.resize(1);
    std::swap(inputs_[0], input_);
    auto outputs = session.Run(inputs_);
    std::swap(inputs_[0], input_);
    if (!outputs.ok()) return outputs.status();
    return PostProcess(*outputs, host);
  }

  float Scaled(double x) const { return static_cast<float>((x + config_.offset) * config_.scale); }

  Status FitShape(Tensor& tensor) const {
    tensor.shape.clear();
    std::size_t fixed = 1;
    int open = -1;
    for (std::size_t i = 0; i < input_shape_.size(); ++i) {
      if (input_shape_[i] < 0) {
        if (open >= 0) {
          return FunctionError("the model's input has more than one open dimension");
        }
        open = static_cast<int>(i);
      } else {
        fixed *= static_cast<std::size_t>(input_shape_[i]);
      }
    }
    tensor.shape = input_shape_;
    if (tensor.shape.empty())
      tensor.shape = {1, static_cast<std::int64_t>(tensor.data.size())};
    else if (open >= 0 && fixed > 0 && tensor.data.size() % fixed == 0)
      tensor.shape[open] = static_cast<std::int64_t>(tensor.data.size() / fixed);
    if (tensor.ElementCount() != tensor.data.size()) {
      return FunctionError(
          fmt::format("the event gives {} numbers; the model's input {} has shape {}",
                      tensor.data.size(), input_name_, ShapeToString(input_shape_)));
    }
    return Status::Ok();
  }

  Result<Reply> PostProcess(const NamedTensors& outputs, HostApi& host) {
    const Tensor& out = outputs.front().second;
    json body;
    bool alert = false;
    switch (config_.kind) {
      case OutputKind::kArgmax: {
        if (out.data.empty()) return FunctionError("the model returned an empty output");
        auto best = std::max_element(out.data.begin(), out.data.end()) - out.data.begin();
        body["class"] = best;
        body["label"] = static_cast<std::size_t>(best) < config_.labels.size()
                            ? json(config_.labels[best])
                            : json(std::to_string(best));
        body["confidence"] = out.data[best];
        body["scores"] = out.data;
        break;
      }
      case OutputKind::kThreshold: {
        if (out.data.empty()) return FunctionError("the model returned an empty output");
        alert = out.data[0] > config_.threshold;
        body = {{"score", out.data[0]}, {"alert", alert}};
        break;
      }
      case OutputKind::kReconstructionError: {
        const Tensor& input = input_.second;
        if (out.data.size() != input.data.size()) {
          return FunctionError(
              fmt::format("reconstruction_error needs an output the size of the input ({} vs {})",
                          out.data.size(), input.data.size()));
        }
        double sum = 0;
        for (std::size_t i = 0; i < out.data.size(); ++i) {
          double d = static_cast<double>(out.data[i]) - input.data[i];
          sum += d * d;
        }
        double error = out.data.empty() ? 0 : sum / out.data.size();
        alert = error > config_.threshold;
        body = {{"error", error}, {"anomaly", alert}, {"threshold", config_.threshold}};
        break;
      }
      case OutputKind::kRaw:
        body = {{"outputs", TensorsToJson(outputs)}};
        break;
    }
    if (answered_by_ != nullptr) body["version"] = *answered_by_;  // which channel answered
    if (config_.kind == OutputKind::kArgmax && !config_.upstream_url.empty() &&
        body["confidence"].get<double>() < config_.upstream_confidence) {
      Escalate(body);
    }
    Reply reply;
    reply.content_type = "application/json";
    reply.body = body.dump();
    if (alert && !config_.alert_topic.empty()) {
      RETURN_IF_ERROR(host.Emit(config_.alert_topic, reply.body, EmitOptions{}));
    }
    return reply;
  }

  // Asks the upstream node; its answer replaces `body`, or `body` is marked degraded.
  void Escalate(json& body) {
    UpstreamMetrics& metrics = ModelUpstreamMetrics();
    metrics.escalations.fetch_add(1, std::memory_order_relaxed);
    UpstreamCaller caller = CurrentUpstreamCaller();
    const auto start = std::chrono::steady_clock::now();
    Result<UpstreamReply> reply =
        caller
            ? caller(config_.upstream_url, "/v1/functions/" + config_.upstream_function + "/invoke",
                     std::string(event_body_), config_.upstream_deadline)
            : Result<UpstreamReply>(Unavailable("no upstream caller on this node"));
    metrics.latency_microseconds.fetch_add(std::chrono::duration_cast<std::chrono::microseconds>(
                                               std::chrono::steady_clock::now() - start)
                                               .count(),
                                           std::memory_order_relaxed);
    if (reply.ok() && reply->status == 200) {
      json answer = json::parse(reply->body, nullptr, /*allow_exceptions=*/false);
      if (answer.is_object()) {
        answer["escalated"] = true;
        answer["local"] = {{"label", body["label"]}, {"confidence", body["confidence"]}};
        body = std::move(answer);
        return;
      }
    }
    metrics.degraded.fetch_add(1, std::memory_order_relaxed);
    body["degraded"] = true;
    body["upstream_error"] = reply.ok() ? fmt::format("upstream answered {}", reply->status)
                                        : std::string(reply.status().message());
  }

  FunctionSpecPtr spec_;
  ModelFunctionConfig config_;
  std::string_view event_body_;            // of the call in progress
  std::shared_ptr<ModelSession> session_;  // null when router_ picks the session
  std::unique_ptr<ChannelRouter> router_;  // for NAME@stable and NAME@canary
  std::shared_ptr<Windows> windows_;
  const ModelSession* shaped_for_ = nullptr;
  const std::string* answered_by_ =
      nullptr;  // router_'s version for this call  // the session input_shape_ was read from
  std::vector<std::int64_t> input_shape_;
  std::string input_name_;
  NamedTensor input_;    // reused: its buffer survives across calls
  NamedTensors inputs_;  // what Run sees
};

std::atomic<ModelStore*> g_store{nullptr};

class ModelRuntime final : public Runtime {
 public:
  explicit ModelRuntime(ModelStore* store, bool use_global)
      : store_(store), use_global_(use_global) {}

  Result<InstancePtr> CreateInstance(const FunctionSpecPtr& spec,
                                     const std::string& function_dir) override {
    const fs::path config_path = fs::path(function_dir) / spec->handler_file;
    std::ifstream in(config_path, std::ios::binary);
    if (!in) return InvalidArgument(fmt::format("cannot read {}", spec->handler_file));
    std::ostringstream text;
    text << in.rdbuf();
    ASSIGN_OR_RETURN(ModelFunctionConfig config, ParseConfig(text.str(), spec->handler_file));

    std::string bytes, sha;
    ModelStore* store = use_global_ ? g_store.load() : store_;
    std::shared_ptr<Windows> windows;
    {
      std::lock_guard lock(mu_);
      auto& w = windows_[spec->name];
      if (!w) w = std::make_shared<Windows>();
      windows = w;
    }
    if (!config.model_ref.empty()) {
      if (store == nullptr) return InvalidArgument("this node has no model registry");
      ASSIGN_OR_RETURN(ModelRef ref, ParseModelRef(config.model_ref));
      if (ref.version == "stable" || ref.version == "canary") {
        auto router = std::make_unique<ChannelRouter>(store, ref.name, ref.version);
        RETURN_IF_ERROR(router->Refresh());
        if (router->Stable().Info().inputs.size() != 1) {
          return InvalidArgument("a model function's model must have one input");
        }
        return InstancePtr(std::make_unique<ModelInstance>(spec, std::move(config), nullptr,
                                                           std::move(router), std::move(windows)));
      }
    }
    if (!config.model_ref.empty()) {
      if (store == nullptr) return InvalidArgument("this node has no model registry");
      ASSIGN_OR_RETURN(ModelMetadata metadata, store->Describe(config.model_ref));
      sha = metadata.sha256;
    } else {
      const fs::path model_path = fs::path(function_dir) / config.model_file;
      std::ifstream model_in(model_path, std::ios::binary);
      if (!model_in) return InvalidArgument(fmt::format("cannot read {}", config.model_file));
      std::ostringstream model_bytes;
      model_bytes << model_in.rdbuf();
      bytes = model_bytes.str();
      sha = Sha256Hex(bytes);
    }

    std::shared_ptr<ModelSession> session = ThreadSessions()[sha].lock();
    if (!session) {
      if (!config.model_ref.empty()) {
        ASSIGN_OR_RETURN(LoadedModel loaded, store->Load(config.model_ref));
        if (loaded.metadata.sha256 != sha) sha = loaded.metadata.sha256;  // pushed meanwhile
        session = std::move(loaded.session);
      } else {
        const auto* factory = InferenceBackendRegistry::Get().Find("opencv");
        if (factory == nullptr) return Internal("no inference backend named 'opencv'");
        ASSIGN_OR_RETURN(ModelSessionPtr loaded, (*factory)()->Load(bytes));
        session = std::move(loaded);
      }
      ThreadSessions()[sha] = session;
    }
    if (session->Info().inputs.size() != 1) {
      return InvalidArgument(fmt::format("a model function's model must have one input; it has {}",
                                         session->Info().inputs.size()));
    }
    return InstancePtr(std::make_unique<ModelInstance>(spec, std::move(config), std::move(session),
                                                       nullptr, std::move(windows)));
  }

 private:
  ModelStore* store_;
  bool use_global_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Windows>> windows_;
};

struct CachedSession {
  std::shared_ptr<ModelSession> session;
  std::string sha256;
  std::chrono::steady_clock::time_point resolved_at;
};

}  // namespace

Result<std::string> InferWithThreadSessions(ModelStore* store, std::string_view model,
                                            std::string_view inputs_json) {
  if (store == nullptr) return Unavailable("this node has no model registry");
  thread_local std::map<std::string, CachedSession, std::less<>> cache;
  const auto now = std::chrono::steady_clock::now();
  auto it = cache.find(model);
  const bool pinned = model.find('@') != std::string_view::npos;
  if (it == cache.end() || (!pinned && now - it->second.resolved_at > std::chrono::seconds(5))) {
    ASSIGN_OR_RETURN(ModelMetadata metadata, store->Describe(model));
    if (it == cache.end() || it->second.sha256 != metadata.sha256) {
      const std::string ref = metadata.name + "@" + metadata.version;
      ASSIGN_OR_RETURN(LoadedModel loaded, store->Load(ref));
      CachedSession entry{std::shared_ptr<ModelSession>(std::move(loaded.session)),
                          loaded.metadata.sha256, now};
      it = cache.insert_or_assign(std::string(model), std::move(entry)).first;
    } else {
      it->second.resolved_at = now;
    }
  }
  json doc = json::parse(inputs_json, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return InvalidArgument("inputs are not JSON");
  ModelSession& session = *it->second.session;
  ASSIGN_OR_RETURN(NamedTensors inputs, InputsFromJson(doc, session.Info()));
  ASSIGN_OR_RETURN(NamedTensors outputs, session.Run(inputs));
  return TensorsToJson(outputs).dump();
}

namespace {
std::mutex g_upstream_mu;
UpstreamCaller g_upstream_caller;
}  // namespace

void SetModelUpstreamCaller(UpstreamCaller caller) {
  std::lock_guard lock(g_upstream_mu);
  g_upstream_caller = std::move(caller);
}

UpstreamCaller CurrentUpstreamCaller() {
  std::lock_guard lock(g_upstream_mu);
  return g_upstream_caller;
}

UpstreamMetrics& ModelUpstreamMetrics() {
  static UpstreamMetrics metrics;
  return metrics;
}

std::atomic<std::uint64_t>& CanaryRollbackCount() {
  static std::atomic<std::uint64_t> count{0};
  return count;
}

RuntimePtr MakeModelRuntime(ModelStore* store) {
  return std::make_shared<ModelRuntime>(store, /*use_global=*/false);
}

void SetModelRuntimeStore(ModelStore* store) { g_store.store(store); }

void RegisterModelRuntime() {
  RuntimeRegistry::Get().Register(
      "model", [] { return std::make_shared<ModelRuntime>(nullptr, /*use_global=*/true); });
}

}  // namespace wisp
