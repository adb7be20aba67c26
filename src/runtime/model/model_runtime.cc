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
#include <optional>
#include <sstream>
#include <thread>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

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
  // batching: concurrent calls share one backend run of up to max_batch rows (1: off).
  std::size_t max_batch = 1;
  std::chrono::milliseconds max_delay{0};
};

Result<ModelFunctionConfig> ParseConfig(const std::string& text, const std::string& source) {
  ModelFunctionConfig config;
  try {
    YAML::Node root = YAML::Load(text);
    if (!root.IsMap()) return InvalidArgument(source + ": must be a map (model:, input:, output:)");
    for (const auto& item : root) {
      const std::string key = item.first.as<std::string>();
      if (key != "model" && key != "file" && key != "input" && key != "output" &&
          key != "upstream" && key != "batching") {
        return InvalidArgument(fmt::format(
            "{}: unknown key '{}' (known: model, file, input, output, upstream, batching)", source,
            key));
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
    if (YAML::Node batching = root["batching"]) {
      if (!batching.IsMap()) {
        return InvalidArgument(source + ": batching must be a map {max_batch: N, max_delay: 2ms}");
      }
      const int max_batch = batching["max_batch"] ? batching["max_batch"].as<int>() : 8;
      if (max_batch < 1 || max_batch > 1024) {
        return InvalidArgument(source + ": batching.max_batch must be 1..1024");
      }
      config.max_batch = static_cast<std::size_t>(max_batch);
      if (batching["max_delay"]) {
        auto delay = ParseDuration(batching["max_delay"].as<std::string>());
        if (!delay.ok() || *delay > std::chrono::seconds(1)) {
          return InvalidArgument(source + ": batching.max_delay must be a duration from 0ms to 1s");
        }
        config.max_delay = *delay;
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
  const std::shared_ptr<ModelSession>& Pick(bool& canary) {
    canary = canary_ != nullptr && static_cast<int>(calls_++ % 100) < percent_;
    return canary ? canary_ : stable_;
  }
  const std::shared_ptr<ModelSession>& Stable() const { return stable_; }
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

// What a model call produces before it is turned into a reply: the JSON body and whether it is
// an alert (threshold) or an anomaly (reconstruction error).
struct Answer {
  json body;
  bool alert = false;
};

// Checks that `session` can take a batch on its first input dimension: that dimension is 1 or
// open, the others are fixed, and two rows of zeros give two output rows, the first equal to
// the answer for one row alone (a model mixing rows, or with a sequence first, fails this).
// Returns the number of floats one row holds.
Result<std::size_t> ProbeBatching(ModelSession& session) {
  const TensorInfo& input = session.Info().inputs.front();
  const std::string shape = ShapeToString(input.shape);
  if (input.shape.empty() || (input.shape[0] != 1 && input.shape[0] != -1)) {
    return InvalidArgument(fmt::format(
        "batching needs the model's input {} to start with a batch dimension of 1 or N; its shape "
        "is {}",
        input.name, shape));
  }
  std::size_t row_size = 1;
  for (std::size_t i = 1; i < input.shape.size(); ++i) {
    if (input.shape[i] <= 0) {
      return InvalidArgument(fmt::format(
          "batching needs the model's input {} to be fixed after its batch dimension; its shape "
          "is {}",
          input.name, shape));
    }
    row_size *= static_cast<std::size_t>(input.shape[i]);
  }
  auto run_rows = [&](std::int64_t rows) -> Result<NamedTensors> {
    NamedTensors inputs(1);
    inputs[0].first = input.name;
    inputs[0].second.shape = input.shape;
    inputs[0].second.shape[0] = rows;
    inputs[0].second.data.assign(row_size * static_cast<std::size_t>(rows), 0.0f);
    return session.Run(inputs);
  };
  ASSIGN_OR_RETURN(NamedTensors one, run_rows(1));
  auto two = run_rows(2);
  if (!two.ok()) {
    return InvalidArgument(
        fmt::format("batching: the model cannot run two rows at once: {}", two.status().message()));
  }
  for (std::size_t o = 0; o < one.size() && o < two->size(); ++o) {
    const Tensor& single = one[o].second;
    const Tensor& pair = (*two)[o].second;
    const bool batched = !pair.shape.empty() && pair.shape[0] == 2 &&
                         pair.data.size() == 2 * single.data.size() &&
                         std::equal(single.data.begin(), single.data.end(), pair.data.begin(),
                                    [](float a, float b) { return std::fabs(a - b) <= 1e-5f; });
    if (!batched) {
      return InvalidArgument(fmt::format(
          "batching: the model's output {} does not keep rows apart (shape {} for two rows; one "
          "row gives {})",
          one[o].first, ShapeToString(pair.shape), ShapeToString(single.shape)));
    }
  }
  return row_size;
}

class ModelInstance final : public Instance {
 public:
  ModelInstance(FunctionSpecPtr spec, ModelFunctionConfig config,
                std::shared_ptr<ModelSession> session, std::unique_ptr<ChannelRouter> router,
                std::shared_ptr<Windows> windows, std::size_t batch_row_size)
      : spec_(std::move(spec)),
        config_(std::move(config)),
        session_(std::move(session)),
        router_(std::move(router)),
        windows_(std::move(windows)),
        metrics_(ModelFunctionMetricsFor(spec_->name)),
        batch_row_size_(batch_row_size) {
    if (config_.max_batch > 1) queue_ = std::make_shared<BatchQueue>();
  }

  Result<Reply> Invoke(const Event& event, HostApi& host) override {
    std::vector<float> row;
    ASSIGN_OR_RETURN(std::optional<Reply> warming, Prepare(event, row));
    if (warming) return std::move(*warming);
    ASSIGN_OR_RETURN(Answer answer, AnswerOne(std::move(row)));
    if (NeedsEscalation(answer.body)) EscalateBlocking(answer.body, event.body);
    return Finish(std::move(answer), host);
  }

  // Batches concurrent calls when `batching:` is on, and escalates without holding the shard
  // when `upstream:` is set; otherwise the same as Invoke.
  void InvokeAsync(const Event& event, HostApi& host, boost::asio::io_context& io,
                   InvokeDone done) override {
    if (!queue_ && config_.upstream_url.empty()) return done(Invoke(event, host));
    std::vector<float> row;
    auto warming = Prepare(event, row);
    if (!warming.ok()) return done(warming.status());
    if (*warming) return done(std::move(**warming));
    PendingCall call{std::move(row), event.body, &host, std::move(done)};
    if (!queue_ || call.row.size() != batch_row_size_) {
      // Unbatched, or a row that cannot share a batch: run it now (a size mismatch gets its
      // error from the shape check).
      return Complete(AnswerOne(std::move(call.row)), call, io);
    }
    Enqueue(std::move(call), io);
  }

  bool Reusable() const override { return true; }
  std::uint64_t MemoryBytes() const override { return 0; }

 private:
  // A call waiting in a batch. `event_body` and `host` stay valid until `done` runs (the
  // InvokeAsync contract).
  struct PendingCall {
    std::vector<float> row;
    std::string_view event_body;
    HostApi* host = nullptr;
    InvokeDone done;
  };
  struct PendingBatch {
    std::shared_ptr<ModelSession> session;
    std::string version;  // "" unless the function names a channel
    bool canary = false;
    std::vector<PendingCall> calls;
  };
  // Held by the instance only; timers and posted flushes keep a weak_ptr, so one that fires
  // after the instance is gone does nothing (an instance and its handlers share one thread).
  struct BatchQueue {
    std::vector<PendingBatch> batches;  // one per session: stable, and canary when splitting
    std::unique_ptr<boost::asio::steady_timer> timer;
    bool flush_armed = false;
  };

  // The event's numbers, scaled, into `row` (or the window's rows, oldest first). A 202 reply
  // while a window is still filling.
  Result<std::optional<Reply>> Prepare(const Event& event, std::vector<float>& row) {
    json parsed;
    const json* doc = event.json;
    if (doc == nullptr) {
      parsed = json::parse(event.body, nullptr, /*allow_exceptions=*/false);
      if (parsed.is_discarded()) {
        return FunctionError(
            "a model function needs a JSON or CBOR event (its fields become the tensor)");
      }
      doc = &parsed;
    }
    if (!config_.array_field.empty()) {
      const json* values = FindDottedField(*doc, config_.array_field);
      if (values == nullptr || !values->is_array()) {
        return FunctionError(
            fmt::format("event field {} is missing or not an array", config_.array_field));
      }
      // The hot loop of large inputs (a 1024-number array costs a few microseconds): read each
      // number by its stored type, into a row sized once.
      row.resize(values->size());
      float* out = row.data();
      for (const json& v : *values) {
        double x;
        switch (v.type()) {
          case json::value_t::number_float:
            x = *v.get_ptr<const json::number_float_t*>();
            break;
          case json::value_t::number_integer:
            x = static_cast<double>(*v.get_ptr<const json::number_integer_t*>());
            break;
          case json::value_t::number_unsigned:
            x = static_cast<double>(*v.get_ptr<const json::number_unsigned_t*>());
            break;
          default:
            return FunctionError(
                fmt::format("event field {} holds a non-number", config_.array_field));
        }
        *out++ = Scaled(x);
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
    if (config_.window <= 1) return std::optional<Reply>();

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
      return std::optional<Reply>(std::move(reply));
    }
    row.clear();
    for (const auto& r : rows) row.insert(row.end(), r.begin(), r.end());
    return std::optional<Reply>();
  }

  // One call alone: on the function's session, or on the version its channel picks. A canary
  // call that fails where stable succeeds is answered by stable and counted against the canary.
  Result<Answer> AnswerOne(std::vector<float> row) {
    if (!router_) return RunOne(*session_, std::move(row), "");
    RETURN_IF_ERROR(router_->Refresh());
    bool canary = false;
    const std::shared_ptr<ModelSession> session = router_->Pick(canary);
    if (!canary) return RunOne(*session, std::move(row), router_->StableVersion());
    std::vector<float> kept = row;
    auto answer = RunOne(*session, std::move(row), router_->CanaryVersion());
    if (answer.ok()) {
      router_->RecordCanary(/*failed=*/false);
      return answer;
    }
    // Only a failure stable does not share counts against the canary (a bad event fails both).
    auto fallback = RunOne(*router_->Stable(), std::move(kept), router_->StableVersion());
    if (fallback.ok()) router_->RecordCanary(/*failed=*/true);
    return fallback;
  }

  // Runs one call's `data` on `session`, fitted to the model's declared shape (an open dimension
  // takes what the data holds), and answers it. Batches go through AnswerBatch.
  Result<Answer> RunOne(ModelSession& session, std::vector<float> data,
                        const std::string& version) {
    ASSIGN_OR_RETURN(const NamedTensors* outputs, Run(session, std::move(data), /*batch_rows=*/0));
    return AnswerRow(*outputs, 0, 1, version);
  }

  // Fits the input in input_ to `session`'s declared input (with `batch_rows` rows on the first
  // dimension when batching), runs it and keeps the outputs in outputs_.
  Result<const NamedTensors*> Run(ModelSession& session, std::vector<float> data,
                                  std::size_t batch_rows) {
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
    input_.second.data = std::move(data);
    RETURN_IF_ERROR(FitShape(input_.second, batch_rows));
    input_.first = input_name_;
    inputs_.resize(1);
    std::swap(inputs_[0], input_);
    const auto start = std::chrono::steady_clock::now();
    auto outputs = session.Run(inputs_);
    metrics_->run_nanoseconds.fetch_add(
        static_cast<std::uint64_t>((std::chrono::steady_clock::now() - start).count()),
        std::memory_order_relaxed);
    metrics_->runs.fetch_add(1, std::memory_order_relaxed);
    metrics_->rows.fetch_add(std::max<std::size_t>(batch_rows, 1), std::memory_order_relaxed);
    std::swap(inputs_[0], input_);
    if (!outputs.ok()) return outputs.status();
    outputs_ = std::move(*outputs);
    if (outputs_.empty()) return FunctionError("the model returned no output");
    return &outputs_;
  }

  float Scaled(double x) const { return static_cast<float>((x + config_.offset) * config_.scale); }

  Status FitShape(Tensor& tensor, std::size_t batch_rows) const {
    tensor.shape = input_shape_;
    if (batch_rows > 0 && !tensor.shape.empty()) {
      tensor.shape[0] = static_cast<std::int64_t>(batch_rows);  // checked by ProbeBatching
    } else {
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
      if (tensor.shape.empty())
        tensor.shape = {1, static_cast<std::int64_t>(tensor.data.size())};
      else if (open >= 0 && fixed > 0 && tensor.data.size() % fixed == 0)
        tensor.shape[open] = static_cast<std::int64_t>(tensor.data.size() / fixed);
    }
    if (tensor.ElementCount() != tensor.data.size()) {
      return FunctionError(
          fmt::format("the event gives {} numbers; the model's input {} has shape {}",
                      tensor.data.size(), input_name_, ShapeToString(input_shape_)));
    }
    return Status::Ok();
  }

  // Post-processing of row `index` of `rows` in `outputs` (the input rows are in input_).
  Result<Answer> AnswerRow(const NamedTensors& outputs, std::size_t index, std::size_t rows,
                           const std::string& version) {
    const Tensor& out = outputs.front().second;
    if (out.data.size() % rows != 0 ||
        (rows > 1 && (out.shape.empty() || out.shape[0] != static_cast<std::int64_t>(rows)))) {
      return FunctionError(fmt::format("the model's output {} has shape {} for a batch of {}",
                                       outputs.front().first, ShapeToString(out.shape), rows));
    }
    const std::size_t per_row = out.data.size() / rows;
    const float* values = out.data.data() + index * per_row;
    const std::size_t input_per_row = input_.second.data.size() / rows;
    const float* input = input_.second.data.data() + index * input_per_row;
    Answer answer;
    json& body = answer.body;
    switch (config_.kind) {
      case OutputKind::kArgmax: {
        if (per_row == 0) return FunctionError("the model returned an empty output");
        const auto best = std::max_element(values, values + per_row) - values;
        body["class"] = best;
        body["label"] = static_cast<std::size_t>(best) < config_.labels.size()
                            ? json(config_.labels[best])
                            : json(std::to_string(best));
        body["confidence"] = values[best];
        body["scores"] = std::vector<float>(values, values + per_row);
        break;
      }
      case OutputKind::kThreshold: {
        if (per_row == 0) return FunctionError("the model returned an empty output");
        answer.alert = values[0] > config_.threshold;
        body = {{"score", values[0]}, {"alert", answer.alert}};
        break;
      }
      case OutputKind::kReconstructionError: {
        if (per_row != input_per_row) {
          return FunctionError(
              fmt::format("reconstruction_error needs an output the size of the input ({} vs {})",
                          per_row, input_per_row));
        }
        double sum = 0;
        for (std::size_t i = 0; i < per_row; ++i) {
          const double d = static_cast<double>(values[i]) - input[i];
          sum += d * d;
        }
        const double error = per_row == 0 ? 0 : sum / per_row;
        answer.alert = error > config_.threshold;
        body = {{"error", error}, {"anomaly", answer.alert}, {"threshold", config_.threshold}};
        break;
      }
      case OutputKind::kRaw:
        if (rows == 1) {
          body = {{"outputs", TensorsToJson(outputs)}};
        } else {
          body = {{"outputs", TensorsToJson(RowOf(outputs, index, rows))}};
        }
        break;
    }
    if (!version.empty()) body["version"] = version;  // which channel answered
    return answer;
  }

  // Row `index` of every output of a batch of `rows`, shaped [1, ...].
  static NamedTensors RowOf(const NamedTensors& outputs, std::size_t index, std::size_t rows) {
    NamedTensors row;
    row.reserve(outputs.size());
    for (const auto& [name, tensor] : outputs) {
      Tensor part;
      part.shape = tensor.shape;
      if (!part.shape.empty()) part.shape[0] = 1;
      const std::size_t per_row = tensor.data.size() / rows;
      part.data.assign(tensor.data.begin() + static_cast<std::ptrdiff_t>(index * per_row),
                       tensor.data.begin() + static_cast<std::ptrdiff_t>((index + 1) * per_row));
      row.emplace_back(name, std::move(part));
    }
    return row;
  }

  bool NeedsEscalation(const json& body) const {
    return config_.kind == OutputKind::kArgmax && !config_.upstream_url.empty() &&
           body["confidence"].get<double>() < config_.upstream_confidence;
  }

  std::string UpstreamTarget() const {
    return "/v1/functions/" + config_.upstream_function + "/invoke";
  }

  // The upstream's answer replaces `body`, or `body` is marked degraded.
  static void ApplyUpstream(json& body, const Result<UpstreamReply>& reply,
                            std::chrono::steady_clock::duration waited) {
    UpstreamMetrics& metrics = ModelUpstreamMetrics();
    metrics.latency_microseconds.fetch_add(
        std::chrono::duration_cast<std::chrono::microseconds>(waited).count(),
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

  // The synchronous path (MQTT and timer triggers): holds the shard for at most the deadline.
  void EscalateBlocking(json& body, std::string_view event_body) {
    ModelUpstreamMetrics().escalations.fetch_add(1, std::memory_order_relaxed);
    UpstreamCaller caller = CurrentUpstreamCaller();
    const auto start = std::chrono::steady_clock::now();
    Result<UpstreamReply> reply =
        caller ? caller(config_.upstream_url, UpstreamTarget(), std::string(event_body),
                        config_.upstream_deadline)
               : Result<UpstreamReply>(Unavailable("no upstream caller on this node"));
    ApplyUpstream(body, reply, std::chrono::steady_clock::now() - start);
  }

  // The reply, after emitting an alert or anomaly to alert_topic.
  Result<Reply> Finish(Answer answer, HostApi& host) {
    Reply reply;
    reply.content_type = "application/json";
    reply.body = answer.body.dump();
    if (answer.alert && !config_.alert_topic.empty()) {
      RETURN_IF_ERROR(host.Emit(config_.alert_topic, reply.body, EmitOptions{}));
    }
    return reply;
  }

  // Ends an asynchronous call: escalates on the shard's loop when the answer is unsure and the
  // node has an asynchronous caller, else finishes at once.
  void Complete(Result<Answer> answer, PendingCall& call, boost::asio::io_context& io) {
    if (!answer.ok()) return call.done(answer.status());
    if (!NeedsEscalation(answer->body)) return call.done(Finish(std::move(*answer), *call.host));
    AsyncUpstreamCaller caller = CurrentAsyncUpstreamCaller();
    if (!caller) {
      EscalateBlocking(answer->body, call.event_body);
      return call.done(Finish(std::move(*answer), *call.host));
    }
    ModelUpstreamMetrics().escalations.fetch_add(1, std::memory_order_relaxed);
    const auto start = std::chrono::steady_clock::now();
    // The instance outlives the call (the pool keeps it while a call runs).
    caller(io, config_.upstream_url, UpstreamTarget(), std::string(call.event_body),
           config_.upstream_deadline,
           [this, start, answer = std::move(*answer), host = call.host,
            done = std::move(call.done)](Result<UpstreamReply> reply) mutable {
             ApplyUpstream(answer.body, reply, std::chrono::steady_clock::now() - start);
             done(Finish(std::move(answer), *host));
           });
  }

  // Adds `call` to the batch of the session it is routed to; runs the batch when it is full,
  // else makes sure a flush is due (after max_delay, or once the loop has run the handlers
  // already waiting when max_delay is 0).
  void Enqueue(PendingCall call, boost::asio::io_context& io) {
    std::shared_ptr<ModelSession> session = session_;
    std::string version;
    bool canary = false;
    if (router_) {
      if (Status refreshed = router_->Refresh(); !refreshed.ok()) return call.done(refreshed);
      session = router_->Pick(canary);
      version = canary ? router_->CanaryVersion() : router_->StableVersion();
    }
    auto& batches = queue_->batches;
    auto it = std::find_if(batches.begin(), batches.end(),
                           [&](const PendingBatch& b) { return b.session == session; });
    if (it == batches.end()) {
      batches.push_back(PendingBatch{session, std::move(version), canary, {}});
      it = std::prev(batches.end());
    }
    it->calls.push_back(std::move(call));
    if (it->calls.size() >= config_.max_batch) {
      PendingBatch full = std::move(*it);
      batches.erase(it);
      if (batches.empty() && queue_->timer) queue_->timer->cancel();
      if (batches.empty()) queue_->flush_armed = false;
      return RunBatch(std::move(full), io);
    }
    if (queue_->flush_armed) return;
    queue_->flush_armed = true;
    std::weak_ptr<BatchQueue> weak = queue_;
    auto flush = [this, weak, &io] {
      if (auto queue = weak.lock()) {
        queue->flush_armed = false;
        FlushAll(io);
      }
    };
    if (config_.max_delay.count() == 0) return boost::asio::post(io, flush);
    if (!queue_->timer) queue_->timer = std::make_unique<boost::asio::steady_timer>(io);
    queue_->timer->expires_after(config_.max_delay);
    queue_->timer->async_wait([flush](const boost::system::error_code& error) {
      if (error != boost::asio::error::operation_aborted) flush();
    });
  }

  void FlushAll(boost::asio::io_context& io) {
    // Moved out first: finishing a call may start the next one on this instance.
    std::vector<PendingBatch> batches = std::move(queue_->batches);
    queue_->batches.clear();
    for (PendingBatch& batch : batches) RunBatch(std::move(batch), io);
  }

  // One backend run for the whole batch, then each call finishes with its own row. A canary
  // batch's failed calls run again on stable, and count against the canary when stable
  // answers them.
  void RunBatch(PendingBatch batch, boost::asio::io_context& io) {
    std::vector<Result<Answer>> answers = AnswerBatch(*batch.session, batch.calls, batch.version);
    if (batch.canary) {
      std::vector<std::size_t> failed;
      for (std::size_t i = 0; i < answers.size(); ++i) {
        if (!answers[i].ok()) failed.push_back(i);
      }
      for (std::size_t i = answers.size() - failed.size(); i > 0; --i) {
        router_->RecordCanary(/*failed=*/false);
      }
      if (!failed.empty()) {
        std::vector<PendingCall> again;
        again.reserve(failed.size());
        for (std::size_t i : failed) {
          again.push_back(PendingCall{batch.calls[i].row, {}, nullptr, {}});
        }
        std::vector<Result<Answer>> fallback =
            AnswerBatch(*router_->Stable(), again, router_->StableVersion());
        for (std::size_t k = 0; k < failed.size(); ++k) {
          if (fallback[k].ok()) router_->RecordCanary(/*failed=*/true);
          answers[failed[k]] = std::move(fallback[k]);
        }
      }
    }
    for (std::size_t i = 0; i < batch.calls.size(); ++i) {
      Complete(std::move(answers[i]), batch.calls[i], io);
    }
  }

  std::vector<Result<Answer>> AnswerBatch(ModelSession& session,
                                          const std::vector<PendingCall>& calls,
                                          const std::string& version) {
    std::vector<float> data;
    data.reserve(calls.size() * batch_row_size_);
    for (const PendingCall& call : calls) data.insert(data.end(), call.row.begin(), call.row.end());
    std::vector<Result<Answer>> answers;
    answers.reserve(calls.size());
    auto outputs = Run(session, std::move(data), calls.size());
    for (std::size_t i = 0; i < calls.size(); ++i) {
      if (outputs.ok()) {
        answers.push_back(AnswerRow(**outputs, i, calls.size(), version));
      } else {
        answers.push_back(outputs.status());
      }
    }
    return answers;
  }

  FunctionSpecPtr spec_;
  ModelFunctionConfig config_;
  std::shared_ptr<ModelSession> session_;  // null when router_ picks the session
  std::unique_ptr<ChannelRouter> router_;  // for NAME@stable and NAME@canary
  std::shared_ptr<Windows> windows_;
  std::shared_ptr<ModelFunctionMetrics> metrics_;
  const std::size_t batch_row_size_;          // floats per row when batching
  std::shared_ptr<BatchQueue> queue_;         // null unless batching
  const ModelSession* shaped_for_ = nullptr;  // the session input_shape_ was read from
  std::vector<std::int64_t> input_shape_;
  std::string input_name_;
  NamedTensor input_;     // reused: its buffer survives across calls
  NamedTensors inputs_;   // what Run sees
  NamedTensors outputs_;  // of the last run
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
    // Floats per batch row, checked on the session (0: batching is off).
    auto batch_row_size = [&](ModelSession& session) -> Result<std::size_t> {
      if (config.max_batch <= 1) return std::size_t{0};
      if (spec->concurrency_max < 2) {
        return InvalidArgument(fmt::format(
            "{}: batching needs calls to reach one instance together: set concurrency.max in "
            "wisp.yaml (to max_batch, {}), it is {}",
            spec->handler_file, config.max_batch, spec->concurrency_max));
      }
      auto rows = ProbeBatching(session);
      if (!rows.ok()) {
        return InvalidArgument(fmt::format("{}: {}", spec->handler_file, rows.status().message()));
      }
      return rows;
    };
    if (!config.model_ref.empty()) {
      if (store == nullptr) return InvalidArgument("this node has no model registry");
      ASSIGN_OR_RETURN(ModelRef ref, ParseModelRef(config.model_ref));
      if (ref.version == "stable" || ref.version == "canary") {
        auto router = std::make_unique<ChannelRouter>(store, ref.name, ref.version);
        RETURN_IF_ERROR(router->Refresh());
        if (router->Stable()->Info().inputs.size() != 1) {
          return InvalidArgument("a model function's model must have one input");
        }
        ASSIGN_OR_RETURN(std::size_t row_size, batch_row_size(*router->Stable()));
        return InstancePtr(std::make_unique<ModelInstance>(
            spec, std::move(config), nullptr, std::move(router), std::move(windows), row_size));
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
    ASSIGN_OR_RETURN(std::size_t row_size, batch_row_size(*session));
    return InstancePtr(std::make_unique<ModelInstance>(spec, std::move(config), std::move(session),
                                                       nullptr, std::move(windows), row_size));
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
AsyncUpstreamCaller g_async_upstream_caller;
}  // namespace

void SetModelUpstreamCaller(UpstreamCaller caller) {
  std::lock_guard lock(g_upstream_mu);
  g_upstream_caller = std::move(caller);
}

UpstreamCaller CurrentUpstreamCaller() {
  std::lock_guard lock(g_upstream_mu);
  return g_upstream_caller;
}

void SetModelAsyncUpstreamCaller(AsyncUpstreamCaller caller) {
  std::lock_guard lock(g_upstream_mu);
  g_async_upstream_caller = std::move(caller);
}

AsyncUpstreamCaller CurrentAsyncUpstreamCaller() {
  std::lock_guard lock(g_upstream_mu);
  return g_async_upstream_caller;
}

namespace {
std::mutex g_function_metrics_mu;
std::map<std::string, std::shared_ptr<ModelFunctionMetrics>>& FunctionMetricsMap() {
  static std::map<std::string, std::shared_ptr<ModelFunctionMetrics>> metrics;
  return metrics;
}
}  // namespace

std::shared_ptr<ModelFunctionMetrics> ModelFunctionMetricsFor(const std::string& function) {
  std::lock_guard lock(g_function_metrics_mu);
  auto& slot = FunctionMetricsMap()[function];
  if (!slot) slot = std::make_shared<ModelFunctionMetrics>();
  return slot;
}

void ForEachModelFunctionMetrics(
    const std::function<void(const std::string&, const ModelFunctionMetrics&)>& visit) {
  std::lock_guard lock(g_function_metrics_mu);
  for (const auto& [function, metrics] : FunctionMetricsMap()) visit(function, *metrics);
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
