#include "node/shard.h"

#include "common/cbor.h"

#include "common/quote.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

namespace wisp {

Shard::Shard(int index, NodeServices& services) : index_(index), services_(services) {}

Shard::~Shard() {
  if (archive_) archive_->Stop();  // its timer is on io_, which goes with this shard
  // Waiting calls are dropped with their sessions (the loop no longer runs); dropping them
  // also breaks the pool -> waiter -> call -> pool reference cycle.
  for (auto& [name, sf] : functions_) {
    std::deque<InstancePool::Waiter> waiting;
    (void)sf.instances->pool.Drain(&waiting);
  }
}

Status Shard::Init(std::uint16_t port) {
  ASSIGN_OR_RETURN(state_, services_.state_backend->Connect());
  listener_ = std::make_unique<HttpListener>(io_, *this, services_.config->http,
                                             services_.metrics->http(index_));
  RETURN_IF_ERROR(listener_->Listen(services_.config->listen_host, port));
  listener_->Start();
  if (services_.archive) {
    archive_ = &services_.archive->shard(index_);
    archive_->Start(io_);
  }
  const SchedulingConfig& scheduling = services_.config->scheduling;
  RegisterBuiltinKeepAlivePolicies();
  ASSIGN_OR_RETURN(keepalive_, CreateKeepAlivePolicy(scheduling.keepalive, scheduling.options));
  ArmScaleTimer();
  return Status::Ok();
}

PolicyTimeMs Shard::NowMs() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               epoch_)
      .count();
}

void Shard::UpdateScaler(const std::string& name, const DeployedFunctionPtr& fn) {
  auto it = scalers_.find(name);
  if (it != scalers_.end() && it->second.configured_for == fn.get()) return;
  const PolicyAppId app = it != scalers_.end() ? it->second.app : next_app_++;
  auto autoscaler = CreateAutoscaler(AutoscalerConfigOf(services_.config->scheduling, *fn->spec),
                                     keepalive_.get(), app);
  if (!autoscaler.ok()) {  // manifests and the node config are validated before this
    spdlog::error("function {} shard {}: not autoscaled: {}", name, index_,
                  autoscaler.status().message());
    if (it != scalers_.end()) scalers_.erase(it);
    return;
  }
  // Memory-aware policies (wisp) weigh the instance size: the manifest's memory limit.
  keepalive_->OnAppMemory(app, static_cast<std::int64_t>(fn->spec->limits.memory_bytes >> 20));
  if (it == scalers_.end()) {
    scalers_.emplace(name, ScalerEntry{FunctionScaler(std::move(*autoscaler)), app, fn.get()});
  } else {
    it->second.scaler.Replace(std::move(*autoscaler));
    it->second.configured_for = fn.get();
  }
}

void Shard::CallBegins(std::string_view function) {
  if (auto it = scalers_.find(function); it != scalers_.end()) {
    it->second.scaler.CallBegins(NowMs());
  }
}

void Shard::CallEnds(std::string_view function) {
  if (auto it = scalers_.find(function); it != scalers_.end()) it->second.scaler.CallEnds(NowMs());
}

void Shard::ArmScaleTimer() {
  if (draining_ || !keepalive_) return;
  scale_timer_.expires_after(services_.config->scheduling.tick);
  scale_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || draining_) return;
    ScaleTick();
    ArmScaleTimer();
  });
}

// Samples every function's active calls, asks its autoscaler and applies the answer: starts
// instances up to it, retires idle ones above it (busy ones finish first; the pool keeps
// scale.min). Only changes of the instance count are logged and counted.
void Shard::ScaleTick() {
  SyncCatalog();
  const PolicyTimeMs now = NowMs();
  for (auto& [name, sf] : functions_) {
    auto entry = scalers_.find(name);
    if (entry == scalers_.end()) continue;
    const FunctionInstancesPtr fi = sf.instances;
    const int before = fi->pool.live();
    const ScaleRecommendation wanted = entry->second.scaler.Tick(now, before);
    FunctionShardMetrics& metrics = fi->fn->metrics->shard(index_);
    metrics.desired_instances.store(wanted.instances, std::memory_order_relaxed);
    if (wanted.instances == before) continue;
    InstancePool::Actions actions = fi->pool.ScaleTo(wanted.instances);
    const int after = fi->pool.live();
    if (after == before) continue;  // only busy instances above it, or at a limit
    metrics.autoscaler_decisions[static_cast<std::size_t>(wanted.reason)].Add();
    spdlog::info("function {} shard {}: instances {} -> {} ({}: {})", name, index_, before, after,
                 ScaleReasonName(wanted.reason), wanted.detail);
    ApplyActions(fi, std::move(actions));
  }
}

void Shard::Run() { io_.run(); }

void Shard::Drain() {
  draining_ = true;
  listener_->Drain();
  if (archive_) archive_->Stop();  // its flush timer would keep the loop alive
  filter_timer_.cancel();          // open windows are dropped (docs/decisions.md)
  scale_timer_.cancel();
  filter_timer_at_.reset();
  // A pending timer is work: the loop would never run dry with one armed.
  for (auto& [name, states] : timers_) {
    for (auto& state : states) {
      state->cancelled = true;
      state->timer.cancel();
    }
  }
  timers_.clear();
}

void Shard::SyncTimers() {
  if (draining_) return;
  const auto snapshot = services_.catalog->Snapshot();
  // Drop the timers of deleted or redeployed functions.
  for (auto it = timers_.begin(); it != timers_.end();) {
    auto now = snapshot->find(it->first);
    if (now == snapshot->end() || it->second.empty() || now->second != it->second.front()->fn) {
      for (auto& state : it->second) {
        state->cancelled = true;
        state->timer.cancel();
      }
      it = timers_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [name, fn] : *snapshot) {
    if (fn->spec->timer_triggers.empty() || timers_.contains(name)) continue;
    if (std::hash<std::string>{}(name) % static_cast<std::size_t>(services_.shard_count) !=
        static_cast<std::size_t>(index_)) {
      continue;  // another shard owns this function's timers
    }
    auto& states = timers_[name];
    for (const TimerTriggerSpec& spec : fn->spec->timer_triggers) {
      auto state = std::make_shared<TimerState>(io_);
      state->fn = fn;
      state->spec = spec;
      if (!spec.schedule.empty()) {
        auto cron = CronSchedule::Parse(spec.schedule);
        if (!cron.ok()) {  // validated at deploy; a manifest from an older node could differ
          fn->log->Append(LogLevel::kError, cron.status().message());
          continue;
        }
        state->cron = std::move(*cron);
      }
      states.push_back(state);
      ArmTimer(state);
    }
  }
}

void Shard::ArmTimer(const std::shared_ptr<TimerState>& state) {
  if (state->cron) {
    const auto now = std::chrono::system_clock::now();
    const auto next = state->cron->Next(now);
    if (next == std::chrono::system_clock::time_point::max()) return;  // never fires
    state->timer.expires_after(next - now);
  } else {
    state->timer.expires_after(state->spec.interval);
  }
  state->timer.async_wait([this, state](boost::system::error_code ec) {
    if (ec || state->cancelled) return;
    FireTimer(state);
    ArmTimer(state);
  });
}

void Shard::FireTimer(const std::shared_ptr<TimerState>& state) {
  ShardFunction* sf = FindFunction(state->fn->spec->name);
  if (sf == nullptr || sf->fn != state->fn) return;  // changed since; SyncTimers will follow
  Event event;
  event.trigger = TriggerKind::kTimer;
  event.id = (static_cast<std::uint64_t>(index_) << 56) | ++next_event_seq_;
  event.timestamp = std::chrono::system_clock::now();
  bool cold = false;
  (void)RunFunction(*sf, event, &cold);  // failures are counted and logged by RunFunction
}

void Shard::Prewarm() {
  SyncCatalog();
  SyncTimers();
  for (auto& [name, sf] : functions_) {
    const FunctionInstancesPtr fi = sf.instances;
    ApplyActions(fi, fi->pool.Prewarm());
  }
}

PoolLimits Shard::LimitsOf(const FunctionSpec& spec) {
  return PoolLimits{.min_instances = spec.scale_min,
                    .max_instances = spec.scale_max,
                    .max_concurrency = spec.concurrency_max,
                    .queue_capacity = spec.scale_queue};
}

void Shard::SyncCatalog() {
  const std::uint64_t generation = services_.catalog->generation();
  if (generation == catalog_generation_) return;
  auto snapshot = services_.catalog->Snapshot();
  // Old versions drain: idle instances go now, busy ones after their calls. Their waiting
  // calls are resumed (and re-admitted to the new version) only once the catalog is in step.
  std::vector<std::pair<FunctionInstancesPtr, InstancePool::Actions>> drained;
  for (auto it = functions_.begin(); it != functions_.end();) {
    auto now = snapshot->find(it->first);
    if (now == snapshot->end() || now->second != it->second.fn) {
      const FunctionInstancesPtr& fi = it->second.instances;
      spdlog::debug("function {} shard {}: {} instances drain ({})", it->first, index_,
                    fi->pool.live(), now == snapshot->end() ? "deleted" : "redeployed");
      drained.emplace_back(fi, fi->pool.Drain(nullptr));
      if (now == snapshot->end()) scalers_.erase(it->first);
      it = functions_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [name, fn] : *snapshot) {
    if (functions_.contains(name)) continue;
    auto [it, inserted] = functions_.try_emplace(
        name, ShardFunction{fn, std::make_shared<FunctionInstances>(fn, LimitsOf(*fn->spec)), {}});
    BuildChains(it->second);
    if (keepalive_) UpdateScaler(name, fn);
  }
  catalog_generation_ = generation;
  for (auto& [fi, actions] : drained) ApplyActions(fi, std::move(actions));
}

Shard::ShardFunction* Shard::FindFunction(std::string_view name) {
  SyncCatalog();
  auto it = functions_.find(name);
  return it == functions_.end() ? nullptr : &it->second;
}

void Shard::PublishGauges(FunctionInstances& fi) {
  FunctionShardMetrics& metrics = fi.fn->metrics->shard(index_);
  constexpr auto kRelaxed = std::memory_order_relaxed;
  for (std::size_t st = 0; st < fi.published_states.size(); ++st) {
    const std::int64_t now = fi.pool.count(static_cast<InstanceState>(st));
    metrics.instances_by_state[st].fetch_add(now - fi.published_states[st], kRelaxed);
    fi.published_states[st] = now;
  }
  // `instances` counts warm ones: idle, busy or finishing their calls (not yet started ones).
  const std::int64_t warm = fi.pool.count(InstanceState::kIdle) +
                            fi.pool.count(InstanceState::kBusy) +
                            fi.pool.count(InstanceState::kDraining);
  metrics.instances.fetch_add(warm - fi.published_instances, kRelaxed);
  fi.published_instances = warm;
  const auto queued = static_cast<std::int64_t>(fi.pool.queue_depth());
  metrics.queue_depth.fetch_add(queued - fi.published_queue, kRelaxed);
  fi.published_queue = queued;
}

void Shard::ApplyActions(const FunctionInstancesPtr& fi, InstancePool::Actions actions) {
  for (InstancePool::InstanceId id : actions.destroy) {
    fi->objects.erase(id);
    fi->fresh.erase(id);
    spdlog::debug("function {} shard {}: instance {} gone", fi->fn->spec->name, index_, id);
  }
  PublishGauges(*fi);
  for (InstancePool::InstanceId id : actions.start) StartInstance(fi, id);
  for (auto& [waiter, instance] : actions.resume) waiter(std::move(instance));
  PublishGauges(*fi);
}

void Shard::RecordStart(FunctionInstances& fi, const Status& outcome,
                        std::chrono::steady_clock::duration elapsed) {
  const std::string& name = fi.fn->spec->name;
  if (!outcome.ok()) {
    fi.fn->log->Append(LogLevel::kError,
                       fmt::format("cannot start an instance: {}", outcome.message()));
    spdlog::info("function {} shard {}: instance failed to start: {}", name, index_,
                 outcome.message());
    return;
  }
  FunctionShardMetrics& metrics = fi.fn->metrics->shard(index_);
  metrics.cold_starts.Add();
  metrics.cold_start_duration.Record(elapsed);
  const double ms = std::chrono::duration<double, std::milli>(elapsed).count();
  fi.fn->log->Append(LogLevel::kDebug,
                     fmt::format("cold start on shard {}: {:.3f} ms", index_, ms));
  spdlog::debug("function {} shard {}: cold start {:.3f} ms", name, index_, ms);
}

void Shard::StartInstance(const FunctionInstancesPtr& fi, InstancePool::InstanceId id) {
  spdlog::debug("function {} shard {}: starting instance {} ({} waiting, {} live)",
                fi->fn->spec->name, index_, id, fi->pool.queue_depth(), fi->pool.live());
  const auto start = std::chrono::steady_clock::now();
  fi->fn->runtime->CreateInstanceAsync(
      fi->fn->spec, fi->fn->dir, io_, [this, fi, id, start](Result<InstancePtr> created) {
        RecordStart(*fi, created.status(), std::chrono::steady_clock::now() - start);
        Status outcome = created.status();
        if (created.ok()) {
          fi->objects[id] = std::move(*created);
          fi->fresh.insert(id);
        } else {
          outcome = outcome.WithContext("cannot start an instance of the function");
        }
        auto actions = fi->pool.Started(id, outcome);
        if (!actions.ok()) {
          spdlog::error("function {}: {}", fi->fn->spec->name, actions.status().message());
          return;
        }
        ApplyActions(fi, std::move(*actions));
      });
}

void Shard::CountFailure(ShardFunction& sf, const Event& event, const Status& status) {
  FunctionShardMetrics& metrics = sf.fn->metrics->shard(index_);
  metrics.trigger(event.trigger).error.Add();
  metrics.errors_by_kind[static_cast<std::size_t>(status.code())].Add();
}

// The synchronous path (MQTT, timers, async calls): it cannot wait in the queue, so it takes a
// free instance when there is one and otherwise makes one for itself, handed to the pool
// afterwards when the pool has room for it.
Result<Reply> Shard::RunFunction(ShardFunction& sf, const Event& event, bool* cold) {
  const FunctionInstancesPtr fi = sf.instances;
  FunctionShardMetrics& metrics = sf.fn->metrics->shard(index_);
  const std::string& name = sf.fn->spec->name;
  CallBegins(name);
  const std::optional<InstancePool::InstanceId> id = fi->pool.TryAcquire();
  InstancePtr own;
  Instance* instance = nullptr;
  if (id) {
    instance = fi->objects.at(*id).get();
    *cold = fi->fresh.erase(*id) > 0;
    if (!*cold) metrics.warm_starts.Add();
    PublishGauges(*fi);
  } else {
    *cold = true;
    const auto start = std::chrono::steady_clock::now();
    Result<InstancePtr> created = sf.fn->runtime->CreateInstance(sf.fn->spec, sf.fn->dir);
    RecordStart(*fi, created.status(), std::chrono::steady_clock::now() - start);
    if (!created.ok()) {
      Status status = created.status().WithContext("cannot start an instance of the function");
      CountFailure(sf, event, status);
      if (archive_) archive_->RecordEvent(event, sf.fn->spec->name, status, {});
      CallEnds(name);
      return status;
    }
    own = std::move(*created);
    instance = own.get();
  }
  host_.Bind(sf.fn.get(), &metrics, &event);
  metrics.in_flight.fetch_add(1, std::memory_order_relaxed);
  const auto start = std::chrono::steady_clock::now();
  Result<Reply> reply = instance->Invoke(event, host_);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  metrics.in_flight.fetch_sub(1, std::memory_order_relaxed);
  metrics.trigger(event.trigger).duration.Record(elapsed);
  if (archive_) archive_->RecordEvent(event, sf.fn->spec->name, reply.status(), elapsed);
  const bool reusable = instance->Reusable();
  if (!reusable) {
    sf.fn->log->Append(LogLevel::kWarn,
                       fmt::format("instance replaced after {}", reply.status().ToString()));
  }
  if (!reply.ok()) {
    sf.fn->log->Append(LogLevel::kError, reply.status().ToString());
    CountFailure(sf, event, reply.status());
  } else {
    metrics.trigger(event.trigger).ok.Add();
  }
  if (id) {
    auto actions = fi->pool.Release(*id, reusable, elapsed);
    if (actions.ok()) ApplyActions(fi, std::move(*actions));
  } else if (reusable) {
    InstancePool::Actions actions;
    if (auto adopted = fi->pool.Adopt(actions)) fi->objects[*adopted] = std::move(own);
    ApplyActions(fi, std::move(actions));
  }
  CallEnds(name);
  return reply;
}

namespace {
const std::string kAutoFormat;
}  // namespace

void Shard::DeliverMqtt(const std::string& function, std::size_t trigger,
                        const MqttDelivery& delivery) {
  ShardFunction* sf = FindFunction(function);
  if (sf == nullptr) return;  // deleted since the message was routed
  Event event;
  event.trigger = TriggerKind::kMqtt;
  event.id = (static_cast<std::uint64_t>(index_) << 56) | ++next_event_seq_;
  event.timestamp = delivery.received_at;
  event.topic = delivery.topic;
  event.content_type = delivery.content_type;
  event.body = delivery.payload;

  // Payloads are decoded once here: by the trigger's `format`, else JSON by content type or by
  // its look and CBOR by content type. One that does not decode is a dead letter: recorded
  // with its reason, never run.
  std::optional<nlohmann::json> decoded;
  Status bad_payload;
  const std::string& format = trigger < sf->fn->spec->mqtt_triggers.size()
                                  ? sf->fn->spec->mqtt_triggers[trigger].format
                                  : kAutoFormat;
  if (format == "raw") {
    // the handler gets the bytes as they came
  } else if (format == "cbor" ||
             (format.empty() && delivery.content_type.starts_with("application/cbor"))) {
    auto value = DecodeCbor(delivery.payload);
    if (!value.ok())
      bad_payload = value.status();
    else
      decoded.emplace(std::move(*value));
  } else if (format == "json" || IsJsonContentType(delivery.content_type) ||
             (delivery.content_type.empty() && LooksLikeJson(delivery.payload))) {
    auto parsed = DecodeJsonBody(delivery.payload);
    if (parsed.ok())
      decoded.emplace(std::move(*parsed));
    else
      bad_payload = parsed.status();
  }
  if (!bad_payload.ok()) {
    sf->fn->metrics->shard(index_).dead_letters.Add();
    constexpr std::size_t kPreview = 256;
    sf->fn->log->Append(LogLevel::kWarn,
                        fmt::format("dead letter from {}: {} (payload: {}{})", delivery.topic,
                                    bad_payload.message(),
                                    QuoteUntrusted(delivery.payload.substr(0, kPreview), kPreview),
                                    delivery.payload.size() > kPreview ? "..." : ""));
    if (services_.dead_letter) services_.dead_letter(function, delivery, bad_payload);
    if (archive_)
      archive_->RecordDeadLetter(function, delivery.topic, delivery.payload, delivery.qos,
                                 bad_payload);
    return;
  }
  FilterChain* chain = trigger < sf->chains.size() ? sf->chains[trigger].get() : nullptr;
  if (chain != nullptr) {
    // Filters need a value: a payload that is neither JSON nor CBOR goes in as a number when it
    // is one ("21.5"), else as its text; the function still sees the payload as it came.
    const bool payload_is_json = decoded.has_value();
    if (!decoded) decoded.emplace(PlainPayloadValue(delivery.payload));
    chain->Push(delivery.topic, std::move(*decoded), delivery.received_at, filter_outputs_);
    RunFilterOutputs(*sf, &delivery, payload_is_json);
    ArmFilterTimer();
    return;
  }
  if (decoded) event.json = &*decoded;
  bool cold = false;
  (void)RunFunction(*sf, event, &cold);  // failures are counted and logged by RunFunction
}

void Shard::BuildChains(ShardFunction& sf) {
  const auto& triggers = sf.fn->spec->mqtt_triggers;
  sf.chains.resize(triggers.size());
  for (std::size_t t = 0; t < triggers.size(); ++t) {
    if (triggers[t].filters.empty() || !sf.fn->filter_metrics) continue;
    FilterChainCounters counters{sf.fn->filter_metrics->TriggerStages(index_, t),
                                 &sf.fn->filter_metrics->KeysEvicted(index_, t)};
    auto chain = FilterChain::Create(triggers[t], counters);
    if (!chain.ok()) {  // validated at deploy; a manifest from an older node could differ
      sf.fn->log->Append(LogLevel::kError, fmt::format("mqtt trigger {} runs unfiltered: {}", t,
                                                       chain.status().message()));
      continue;
    }
    sf.chains[t] = std::move(*chain);
  }
}

// Runs the function once per event in filter_outputs_. A message that passed unchanged is
// shown as it came; a changed one or a window's batch as JSON text of the new value.
void Shard::RunFilterOutputs(ShardFunction& sf, const MqttDelivery* delivery,
                             bool payload_is_json) {
  std::string body;
  for (FilterOutput& output : filter_outputs_) {
    Event event;
    event.trigger = TriggerKind::kMqtt;
    event.id = (static_cast<std::uint64_t>(index_) << 56) | ++next_event_seq_;
    event.timestamp = output.time;
    event.topic = output.Topic();
    if (output.modified || delivery == nullptr) {
      body = output.value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      event.content_type = "application/json";
      event.body = body;
      event.json = &output.value;
    } else {
      event.content_type = delivery->content_type;
      event.body = delivery->payload;
      event.json = payload_is_json ? &output.value : nullptr;
    }
    bool cold = false;
    (void)RunFunction(sf, event, &cold);  // failures are counted and logged by RunFunction
  }
  filter_outputs_.clear();
}

void Shard::FlushFilters() {
  SyncCatalog();
  const FilterTime now = std::chrono::system_clock::now();
  for (auto& [name, sf] : functions_) {
    for (auto& chain : sf.chains) {
      if (!chain) continue;
      chain->Flush(now, filter_outputs_);
      RunFilterOutputs(sf, nullptr, true);
    }
  }
  ArmFilterTimer();
}

// One timer per shard, at the earliest end of an open time window of any chain. The deadlines
// are wall-clock times (a message's receive time); the timer waits the distance to them.
void Shard::ArmFilterTimer() {
  if (draining_) return;
  std::optional<FilterTime> earliest;
  for (auto& [name, sf] : functions_) {
    for (auto& chain : sf.chains) {
      if (!chain) continue;
      if (auto deadline = chain->NextDeadline(); deadline && (!earliest || *deadline < *earliest)) {
        earliest = deadline;
      }
    }
  }
  if (earliest == filter_timer_at_) return;
  filter_timer_at_ = earliest;
  if (!earliest) {
    filter_timer_.cancel();
    return;
  }
  const auto wait = *earliest - std::chrono::system_clock::now();
  filter_timer_.expires_after(
      std::max(std::chrono::duration_cast<std::chrono::steady_clock::duration>(wait),
               std::chrono::steady_clock::duration::zero()));
  filter_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec == boost::asio::error::operation_aborted) return;  // re-armed or drained
    filter_timer_at_.reset();
    FlushFilters();
  });
}

void Shard::Host::Log(LogLevel level, std::string_view message) {
  fn_->log->Append(level, message);
}

Status Shard::Host::Emit(std::string_view topic, std::string_view payload,
                         const EmitOptions& options) {
  if (topic.empty() || topic.find_first_of("+#") != std::string_view::npos) {
    return InvalidArgument(
        fmt::format("emit: '{}' is not a topic to publish to (no wildcards)", topic));
  }
  if (options.qos < 0 || options.qos > 2) {
    return InvalidArgument(fmt::format("emit: qos must be 0, 1 or 2, not {}", options.qos));
  }
  Status published;
  if (shard_.services_.publish) published = shard_.services_.publish(topic, payload, options);
  if (shard_.archive_) {
    shard_.archive_->RecordAction(event_, fn_->spec->name, topic, payload, options.qos, published);
  }
  if (shard_.services_.publish) {
    if (!published.ok()) {
      metrics_->emit_failures.Add();
      fn_->log->Append(LogLevel::kWarn,
                       fmt::format("emit {} not sent: {}", topic, published.message()));
      // With the outbox an error means the emit was refused (full, disk, malformed): the
      // handler must know. Without it, the handler carries on as before (documented loss).
      if (shard_.services_.config != nullptr && shard_.services_.config->mqtt.outbox) {
        return published;
      }
      return Status::Ok();
    }
    metrics_->emits.Add();
    return Status::Ok();
  }
  metrics_->emits.Add();
  // With no broker configured the action is recorded in the function's log.
  constexpr std::size_t kPreview = 512;
  fn_->log->Append(
      LogLevel::kInfo,
      fmt::format("emit {} qos={}{} {}{}", topic, options.qos, options.retain ? " retain" : "",
                  payload.substr(0, kPreview), payload.size() > kPreview ? "..." : ""));
  return Status::Ok();
}

std::chrono::system_clock::time_point Shard::Host::Now() const {
  return std::chrono::system_clock::now();
}

Status Shard::Host::HttpPost(std::string_view url, std::string_view body,
                             const HttpPostOptions& options) {
  HttpActions* actions = shard_.services_.http_actions;
  if (actions == nullptr) return PermissionDenied("HTTP actions are not available on this node");
  wisp::HttpPost post;
  post.url = std::string(url);
  post.body = std::string(body);
  post.content_type = std::string(options.content_type);
  post.headers = options.headers;
  post.origin = fn_->spec->name;
  Status queued = actions->Enqueue(std::move(post));
  if (queued.ok()) {
    metrics_->emits.Add();
  } else if (queued.code() != StatusCode::kInvalidArgument &&
             queued.code() != StatusCode::kPermissionDenied) {
    metrics_->emit_failures.Add();
    fn_->log->Append(LogLevel::kWarn, fmt::format("http_post {} not queued: {}", url.substr(0, 128),
                                                  queued.message()));
  }
  return queued;
}

void Shard::RunAsync(const AsyncCall& call) {
  // Left queued: the next start runs it (the record is durable).
  if (services_.draining.load(std::memory_order_relaxed)) return;
  const AsyncRequest& request = call.request;
  AsyncResult result;
  auto fail = [&](const Status& status) {
    result.ok = false;
    result.status = HttpStatusFor(status.code());
    result.error_kind = std::string(status.kind());
    result.error_message = status.message();
  };
  ShardFunction* sf = FindFunction(request.function);
  if (sf == nullptr) {
    fail(NotFound(fmt::format("function '{}' was removed before the call ran", request.function)));
  } else {
    header_views_.clear();
    for (const auto& [name, value] : request.headers) header_views_.push_back({name, value});
    const std::string path = fmt::format("/v1/functions/{}/invoke-async", request.function);
    Event event;
    event.trigger = TriggerKind::kHttp;
    event.id = (static_cast<std::uint64_t>(index_) << 56) | ++next_event_seq_;
    event.timestamp = call.accepted_at;
    event.method = "POST";
    event.path = path;
    event.query = request.query;
    event.content_type = request.content_type;
    event.headers = header_views_;
    event.body = request.body;
    std::optional<nlohmann::json> decoded;
    Status bad_body;
    if (auto parsed = DecodeInvokeBody(event.content_type, event.body); !parsed.ok()) {
      bad_body = parsed.status();
    } else if (*parsed) {
      decoded = std::move(*parsed);
      event.json = &*decoded;
    }
    if (!bad_body.ok()) {
      CountFailure(*sf, event, bad_body);
      fail(bad_body);
    } else {
      bool cold = false;
      Result<Reply> reply = RunFunction(*sf, event, &cold);
      if (!reply.ok()) {
        fail(reply.status());
      } else {
        result.ok = true;
        result.status = reply->status;
        result.content_type = std::move(reply->content_type);
        result.headers = std::move(reply->headers);
        result.body = std::move(reply->body);
      }
    }
  }
  if (Status recorded = services_.async_calls->Finish(call.id, result); !recorded.ok()) {
    spdlog::error("async call {}: the result could not be recorded: {}", call.id,
                  recorded.message());
  }
  DeliverAsyncResult(call, result);
}

void Shard::DeliverAsyncResult(const AsyncCall& call, const AsyncResult& result) {
  const AsyncRequest& request = call.request;
  std::string error_body;
  if (!result.ok) {
    error_body =
        nlohmann::json{{"error", {{"kind", result.error_kind}, {"message", result.error_message}}}}
            .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  if (!request.callback_url.empty() && services_.http_actions != nullptr) {
    wisp::HttpPost post;
    post.url = request.callback_url;
    post.origin = request.function;
    post.body = result.ok ? result.body : error_body;
    post.content_type = result.ok ? (result.content_type.empty() ? "text/plain; charset=utf-8"
                                                                 : result.content_type)
                                  : "application/json";
    post.headers = {{"X-Call-Id", call.id},
                    {"X-Function-Name", request.function},
                    {"X-Function-Status", std::to_string(result.status)}};
    if (!result.ok) post.headers.emplace_back("X-Wisp-Error", result.error_kind);
    if (Status queued = services_.http_actions->Enqueue(std::move(post)); !queued.ok()) {
      spdlog::warn("async call {}: callback to {} not sent: {}", call.id, request.callback_url,
                   queued.message());
    }
  }
  if (!request.reply_topic.empty() && services_.publish) {
    nlohmann::json envelope = {{"id", call.id},
                               {"function", request.function},
                               {"status", result.status},
                               {"ok", result.ok}};
    if (!result.ok) {
      envelope["error"] = {{"kind", result.error_kind}, {"message", result.error_message}};
    } else if (IsJsonContentType(result.content_type) || LooksLikeJson(result.body)) {
      auto parsed = DecodeJsonBody(result.body);
      envelope["body"] = parsed.ok() ? std::move(*parsed) : nlohmann::json(result.body);
    } else {
      envelope["body"] = result.body;
    }
    EmitOptions options;
    options.qos = 1;
    Status published = services_.publish(
        request.reply_topic,
        envelope.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), options);
    if (!published.ok()) {
      spdlog::warn("async call {}: reply to {} not published: {}", call.id, request.reply_topic,
                   published.message());
    }
  }
}

}  // namespace wisp
