#include "node/shard.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace wisp {

Shard::Shard(int index, NodeServices& services) : index_(index), services_(services) {}

Shard::~Shard() {
  for (auto& [name, sf] : functions_) DropInstances(sf);
}

Status Shard::Init(std::uint16_t port) {
  ASSIGN_OR_RETURN(state_, services_.state_backend->Connect());
  listener_ = std::make_unique<HttpListener>(io_, *this, services_.config->http,
                                             services_.metrics->http(index_));
  RETURN_IF_ERROR(listener_->Listen(services_.config->listen_host, port));
  listener_->Start();
  return Status::Ok();
}

void Shard::Run() { io_.run(); }

void Shard::Drain() { listener_->Drain(); }

void Shard::Prewarm() {
  SyncCatalog();
  for (auto& [name, sf] : functions_) {
    while (sf.instances < sf.fn->spec->scale_min) {
      bool cold = false;
      auto instance = AcquireInstance(sf, &cold);
      if (!instance.ok()) break;  // already logged to the function's log
      sf.idle.push_back(std::move(*instance));
    }
  }
}

void Shard::SyncCatalog() {
  const std::uint64_t generation = services_.catalog->generation();
  if (generation == catalog_generation_) return;
  auto snapshot = services_.catalog->Snapshot();
  for (auto it = functions_.begin(); it != functions_.end();) {
    auto now = snapshot->find(it->first);
    if (now == snapshot->end() || now->second != it->second.fn) {
      DropInstances(it->second);  // deleted or redeployed: its old instances must go
      it = functions_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [name, fn] : *snapshot) {
    functions_.try_emplace(name, ShardFunction{fn, {}, 0});
  }
  catalog_generation_ = generation;
}

Shard::ShardFunction* Shard::FindFunction(std::string_view name) {
  SyncCatalog();
  auto it = functions_.find(name);
  return it == functions_.end() ? nullptr : &it->second;
}

void Shard::DropInstances(ShardFunction& sf) {
  sf.fn->metrics->shard(index_).instances.fetch_sub(static_cast<std::int64_t>(sf.idle.size()),
                                                    std::memory_order_relaxed);
  sf.instances -= static_cast<int>(sf.idle.size());
  sf.idle.clear();
}

Result<InstancePtr> Shard::AcquireInstance(ShardFunction& sf, bool* cold) {
  if (!sf.idle.empty()) {
    InstancePtr instance = std::move(sf.idle.back());
    sf.idle.pop_back();
    *cold = false;
    return instance;
  }
  *cold = true;
  FunctionShardMetrics& metrics = sf.fn->metrics->shard(index_);
  const auto start = std::chrono::steady_clock::now();
  Result<InstancePtr> instance = sf.fn->runtime->CreateInstance(sf.fn->spec, sf.fn->dir);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  if (!instance.ok()) {
    sf.fn->log->Append(LogLevel::kError,
                       fmt::format("cannot start an instance: {}", instance.status().message()));
    return instance.status().WithContext("cannot start an instance of the function");
  }
  metrics.cold_starts.Add();
  metrics.cold_start_duration.Record(elapsed);
  metrics.instances.fetch_add(1, std::memory_order_relaxed);
  ++sf.instances;
  sf.fn->log->Append(LogLevel::kDebug,
                     fmt::format("cold start on shard {}: {:.3f} ms", index_,
                                 std::chrono::duration<double, std::milli>(elapsed).count()));
  return instance;
}

void Shard::ReleaseInstance(ShardFunction& sf, InstancePtr instance, const Status& outcome) {
  if (instance->Reusable() && static_cast<int>(sf.idle.size()) < sf.fn->spec->scale_max) {
    sf.idle.push_back(std::move(instance));
    return;
  }
  if (!instance->Reusable()) {
    sf.fn->log->Append(LogLevel::kWarn,
                       fmt::format("instance replaced after {}", outcome.ToString()));
  }
  sf.fn->metrics->shard(index_).instances.fetch_sub(1, std::memory_order_relaxed);
  --sf.instances;
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
  metrics_->emits.Add();
  // Until the MQTT action sink exists the action is recorded in the function's log.
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

}  // namespace wisp
