// A shard: one thread, one event loop, its own function instances and state connection.
//
// Shared-nothing in the Seastar sense: a request accepted by a shard is parsed, routed, run and
// answered on that shard's thread, against instances only that shard touches, so the invoke
// path takes no lock. What shards share is read-mostly and reached without locks on the hot
// path: the function catalog (checked by generation number) and per-shard metric slots.
#pragma once

#include <utility>  // before Asio (see http/server.h)

#include <array>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "archive/event_archive.h"
#include "common/cron.h"
#include "gateway/filter_chain.h"
#include "http/request.h"
#include "http/server.h"
#include "metrics/metrics.h"
#include "node/async_calls.h"
#include "node/function_catalog.h"
#include "node/function_scaler.h"
#include "node/http_actions.h"
#include "node/instance_pool.h"
#include "node/node.h"
#include "wisp/keepalive_policy.h"
#include "wisp/runtime.h"
#include "wisp/state_store.h"

namespace wisp {

// An MQTT message routed to a shard; owned by the routing code until delivered.
struct MqttDelivery {
  std::string topic;
  std::string payload;
  std::string content_type;
  int qos = 0;
  bool retain = false;
  std::chrono::system_clock::time_point received_at;
};

// What every shard shares. Owned by RunNode, outlives the shards; all members thread-safe.
class ModelStore;

struct NodeServices {
  const NodeConfig* config = nullptr;
  FunctionCatalog* catalog = nullptr;
  MetricsRegistry* metrics = nullptr;
  StateBackend* state_backend = nullptr;
  std::string token;  // the control API's bearer token
  std::atomic<bool> draining{false};
  int shard_count = 1;
  EventArchive* archive = nullptr;  // null when archive.enabled is false
  // Asks every shard to create the warm instances the catalog now calls for, and the MQTT
  // triggers to follow the catalog's subscriptions. Called after every deploy or delete.
  std::function<void()> on_catalog_changed;
  // Publishes an action through the broker; empty when no broker is configured. Thread-safe.
  std::function<Status(std::string_view topic, std::string_view payload, const EmitOptions&)>
      publish;
  // Sends ctx.http_post and async callbacks (allowlisted URLs only). Never null once running.
  HttpActions* http_actions = nullptr;
  // Durable async invocations; null only in tests that build a shard by hand.
  AsyncCalls* async_calls = nullptr;
  // The model registry (models/model_store.h); null only in tests that build a shard by hand.
  ModelStore* models = nullptr;
  // Records a dead letter beyond the function's log (a dead-letter topic); may be empty.
  std::function<void(const std::string& function, const MqttDelivery&, const Status& why)>
      dead_letter;
};

class Shard final : public HttpHandler {
 public:
  Shard(int index, NodeServices& services);
  ~Shard() override;

  // Connects the state store and binds the listener (port 0 picks one). Before Run().
  Status Init(std::uint16_t port);
  std::uint16_t port() const { return listener_->port(); }

  boost::asio::io_context& io() { return io_; }
  // Runs the event loop until it has no more work (after Drain) or is stopped.
  void Run();

  // Both are posted to the shard's loop by other threads.
  void Prewarm();  // brings every function up to its scale.min warm instances
  void Drain();    // stops accepting; in-flight requests finish

  // Runs an accepted async call and delivers its result (record, callback URL, reply topic).
  // Posted by the shard that accepted it, or at start for calls a previous run left
  // unfinished. Shard thread only.
  void RunAsync(const AsyncCall& call);

  // Runs `function` on an MQTT message that matched its mqtt trigger number `trigger`, through
  // that trigger's filters if it has any; posted by the MQTT trigger. Shard thread only. Returns
  // once the message is consumed: run, dropped by a filter or held in a window.
  void DeliverMqtt(const std::string& function, std::size_t trigger, const MqttDelivery& delivery);

  // HttpHandler
  std::uint64_t BodyLimit(const HttpRequestHead& head) const override;
  void Handle(HttpRequest& request, HttpResponse& response) override;
  // HTTP invokes answer once the call ran, which may be after waiting for an instance; every
  // other route is answered at once by Handle.
  void HandleDeferred(HttpRequest& request, HttpResponse& response,
                      std::function<void()> done) override;

 private:
  // One deployed version's instances on this shard: their lifecycle (the pool and its wait
  // queue) and the instance objects. Shared with the starts and calls in flight, so that a
  // redeploy can replace the entry while the old version's instances drain.
  struct FunctionInstances {
    FunctionInstances(DeployedFunctionPtr function, const PoolLimits& limits)
        : fn(std::move(function)), pool(limits) {}
    DeployedFunctionPtr fn;
    InstancePool pool;
    std::unordered_map<InstancePool::InstanceId, InstancePtr> objects;
    std::unordered_set<InstancePool::InstanceId> fresh;  // started, no call served yet
    // What PublishGauges last added to the shard's gauges, so it can add the difference.
    std::array<std::int64_t, 4> published_states{};
    std::int64_t published_instances = 0;
    std::int64_t published_queue = 0;
  };
  using FunctionInstancesPtr = std::shared_ptr<FunctionInstances>;

  struct ShardFunction {
    DeployedFunctionPtr fn;
    FunctionInstancesPtr instances;
    // Per mqtt trigger: its filter chain on this shard, null when it has no filters. Rebuilt
    // with the entry when the function is redeployed.
    std::vector<std::unique_ptr<FilterChain>> chains;
  };

  // The HostApi handlers see during a call; one per shard, bound to the function being run.
  class Host final : public HostApi {
   public:
    explicit Host(Shard& shard) : shard_(shard) {}
    void Bind(const DeployedFunction* fn, FunctionShardMetrics* metrics, const Event* event) {
      fn_ = fn;
      metrics_ = metrics;
      event_ = event;
    }
    StateStore& State() override { return *shard_.state_; }
    std::string_view Namespace() const override { return fn_->spec->name; }
    void Log(LogLevel level, std::string_view message) override;
    Status Emit(std::string_view topic, std::string_view payload,
                const EmitOptions& options) override;
    std::chrono::system_clock::time_point Now() const override;
    Status HttpPost(std::string_view url, std::string_view body,
                    const HttpPostOptions& options) override;
    Result<std::string> Infer(std::string_view model,
                              std::string_view inputs_json) override;  // node/models_api.cc

   private:
    Shard& shard_;
    const DeployedFunction* fn_ = nullptr;
    FunctionShardMetrics* metrics_ = nullptr;
    const Event* event_ = nullptr;  // the event being handled, for the archive's action records
  };

  // One timer trigger of one function. Each function's timers live on one shard (by name
  // hash), so a node fires each schedule once.
  struct TimerState {
    DeployedFunctionPtr fn;
    TimerTriggerSpec spec;
    std::optional<CronSchedule> cron;
    boost::asio::steady_timer timer;
    bool cancelled = false;
    TimerState(boost::asio::io_context& io) : timer(io) {}
  };
  void SyncTimers();
  void ArmTimer(const std::shared_ptr<TimerState>& state);
  void FireTimer(const std::shared_ptr<TimerState>& state);

  // Gateway filters: chains are built per function and trigger; one timer closes time windows.
  void BuildChains(ShardFunction& sf);
  void RunFilterOutputs(ShardFunction& sf, const MqttDelivery* delivery, bool payload_is_json);
  void FlushFilters();
  void ArmFilterTimer();

  // Autoscaling (docs/autoscaling.md): one keep-alive policy per shard, one FunctionScaler per
  // function name (it outlives redeploys, so calls of the old version still end on it).
  struct ScalerEntry {
    FunctionScaler scaler;
    PolicyAppId app = 0;
    const DeployedFunction* configured_for = nullptr;  // the version its autoscaler follows
  };
  void UpdateScaler(const std::string& name, const DeployedFunctionPtr& fn);
  PolicyTimeMs NowMs() const;
  void CallBegins(std::string_view function);
  void CallEnds(std::string_view function);
  void ArmScaleTimer();
  void ScaleTick();

  ShardFunction* FindFunction(std::string_view name);
  void SyncCatalog();
  static PoolLimits LimitsOf(const FunctionSpec& spec);

  // Carries out what the pool decided: starts, destroys, resumes waiting calls; then updates
  // the gauges.
  void ApplyActions(const FunctionInstancesPtr& fi, InstancePool::Actions actions);
  void StartInstance(const FunctionInstancesPtr& fi, InstancePool::InstanceId id);
  void PublishGauges(FunctionInstances& fi);
  // Counts a created instance's cold start (or logs why it failed).
  void RecordStart(FunctionInstances& fi, const Status& outcome,
                   std::chrono::steady_clock::duration elapsed);

  // An HTTP invoke on its way: the event and what it points into, the reply to fill and the
  // session's completion. Lives until answered.
  struct PendingInvoke {
    explicit PendingInvoke(Shard& shard) : host(shard) {}
    FunctionInstancesPtr target;
    std::string function;
    Event event;
    std::vector<HeaderView> headers;
    std::optional<nlohmann::json> decoded;
    HttpResponse* response = nullptr;
    std::function<void()> done;
    Host host;
    bool cold = false;
    std::chrono::steady_clock::time_point queued_at;
    std::chrono::steady_clock::time_point started_at;
  };
  using PendingInvokePtr = std::shared_ptr<PendingInvoke>;
  void Admit(const PendingInvokePtr& call);
  void RunOn(const PendingInvokePtr& call, Result<InstancePool::InstanceId> instance);
  void FinishInvoke(const PendingInvokePtr& call, InstancePool::InstanceId id, Result<Reply> reply);

  // Acquire an instance, run, release, account. Errors are counted and logged here.
  Result<Reply> RunFunction(ShardFunction& sf, const Event& event, bool* cold);
  void CountFailure(ShardFunction& sf, const Event& event, const Status& status);

  bool Authorized(std::string_view authorization) const;  // constant-time token check
  // The function a request invokes, once it exists, the caller may call it and the node is
  // not draining; else the error to answer with.
  Result<ShardFunction*> FunctionToInvoke(const Route& route, const HttpRequest& request);
  void HandleInvoke(const Route& route, HttpRequest& request, HttpResponse& response,
                    std::function<void()> done);
  void HandleInvokeAsync(const Route& route, HttpRequest& request, HttpResponse& response);
  void HandleCall(const Route& route, HttpRequest& request, HttpResponse& response);
  void DeliverAsyncResult(const AsyncCall& call, const AsyncResult& result);
  void HandleDeploy(HttpRequest& request, HttpResponse& response);
  void HandleList(HttpResponse& response);
  void HandleDescribe(const Route& route, HttpResponse& response);
  void HandleDelete(const Route& route, HttpResponse& response);
  void HandleLogs(const Route& route, HttpResponse& response);
  void HandleHealth(HttpResponse& response);
  void HandleMetrics(HttpResponse& response);
  void HandleEvents(const Route& route, HttpResponse& response);  // node/events_api.cc
  void HandleModels(const Route& route, HttpRequest& request,
                    HttpResponse& response);  // node/models_api.cc

  const int index_;
  NodeServices& services_;
  // One thread does all I/O of this context, so the reactor needs no locks; posts from other
  // threads (Prewarm, Drain) still go through the scheduler's lock, which stays on.
  boost::asio::io_context io_{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
  std::unique_ptr<HttpListener> listener_;
  StateStorePtr state_;
  Host host_{*this};
  ShardArchive* archive_ = nullptr;  // this shard's archive writer; null when disabled

  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, ShardFunction, StringHash, std::equal_to<>> functions_;
  std::uint64_t catalog_generation_ = 0;
  std::uint64_t next_event_seq_ = 0;
  std::vector<HeaderView> header_views_;  // reused per request to avoid an allocation
  std::unordered_map<std::string, std::vector<std::shared_ptr<TimerState>>> timers_;
  bool draining_ = false;
  boost::asio::steady_timer filter_timer_{io_};
  std::optional<FilterTime> filter_timer_at_;  // the deadline armed; nullopt: none
  std::vector<FilterOutput> filter_outputs_;   // reused per message to avoid an allocation
  std::unique_ptr<KeepAlivePolicy> keepalive_;
  std::unordered_map<std::string, ScalerEntry, StringHash, std::equal_to<>> scalers_;
  PolicyAppId next_app_ = 0;
  boost::asio::steady_timer scale_timer_{io_};
  const std::chrono::steady_clock::time_point epoch_ = std::chrono::steady_clock::now();
};

}  // namespace wisp
