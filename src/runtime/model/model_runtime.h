// The "model" runtime: a function that is an ONNX model with declared pre- and post-processing,
// no code (docs/manifest.md, "Model functions").
//
// The function's `handler` names its model file, a YAML map in the function directory
// (handler: ./model.yaml):
//   model: pump-ae@1            # a registry reference (NAME or NAME@VERSION), or
//   file: ./pump.onnx           #   a model file deployed with the function
//   input:
//     fields: [a, b.c]          # dotted fields of the event's JSON, one number each, or
//     field: bands              #   one field holding an array of numbers
//     offset: -1.0              # x' = (x + offset) * scale, per element
//     scale: 10.0
//     window: 8                 # the last 8 events' rows, oldest first (per key)
//     key: feeder               # dotted field the window is kept per; default: one window
//   output:
//     kind: argmax              # argmax | threshold | reconstruction_error | raw
//     labels: [normal, sag]     # argmax: names of the classes
//     threshold: 0.01           # threshold: alert when output[0] > it; reconstruction_error:
//                               #   anomaly when mean squared error > it
//     alert_topic: plant/alerts # ctx.emit the reply there when it is an alert or anomaly
//   batching:                   # optional: concurrent calls share one backend run
//     max_batch: 16             #   rows per run at most (needs concurrency.max >= 2)
//     max_delay: 2ms            #   wait at most this for more calls; 0: batch only the calls
//                               #   already waiting on the shard's loop (no added delay)
// The model must have one input; the rows are fitted to its declared shape.
//
// Replies (JSON): argmax {"label", "class", "confidence", "scores"}; threshold {"score",
// "alert"}; reconstruction_error {"error", "anomaly", "threshold"}; raw {"outputs": {...}}.
// A function naming a channel adds "version": the version that answered.
// While a window fills the reply is 202 {"status": "warming", "have": k, "need": N}.
//
// Sessions: CreateInstance loads the model (that is the function's cold start). Instances on
// the same thread (a shard) share one session per model sha256, held while any instance uses
// it; sessions are not thread-safe, and a shard runs one call at a time. Windows are shared by
// all instances of a function on the node, under a mutex.
//
// `model: NAME@stable` follows the registry's stable channel and sends the canary's share of the
// calls to the canary version; a canary call that fails where stable succeeds is answered by
// stable and counted against the canary, which is rolled back automatically when its failures in
// a window exceed the bound (docs/inference.md, "Rollout"). `model: NAME@canary` follows the
// canary channel alone.
//
// Failures: CreateInstance InvalidArgument for a bad model file or a model the registry refuses
// (NotFound when the reference does not exist); Invoke InvalidArgument (as FunctionError) when
// the event lacks a field or is not JSON.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "wisp/runtime.h"

namespace wisp {

class ModelStore;

// A "model" runtime resolving registry references in `store` (may be null: only `file:` models).
// `store` must outlive the runtime.
RuntimePtr MakeModelRuntime(ModelStore* store);

// The store the registered "model" runtime uses; set by the node before it deploys anything.
void SetModelRuntimeStore(ModelStore* store);

// HostApi::Infer for hosts backed by `store` (Lua's ctx.infer): sessions are cached per thread
// (a shard) and reference; a reference without a version is re-resolved at most every 5 s, so a
// newly pushed version is picked up without a registry read on every call.
Result<std::string> InferWithThreadSessions(ModelStore* store, std::string_view model,
                                            std::string_view inputs_json);

// Automatic canary rollbacks in this process (every shard), for /metrics.
std::atomic<std::uint64_t>& CanaryRollbackCount();

// Hierarchical inference (`upstream:` in model.yaml, docs/inference.md): a call whose argmax
// confidence is below upstream.confidence is POSTed to URL/v1/functions/FUNCTION/invoke with the
// event's body, waiting at most upstream.deadline; a 200 JSON answer replaces the local one
// (marked "escalated": true, with "local": {label, confidence}); otherwise the local answer is
// returned marked "degraded": true with "upstream_error". HTTP invokes wait for the upstream
// on the shard's loop (AsyncUpstreamCaller); MQTT and timer calls block their shard for at most
// the deadline (UpstreamCaller).
struct UpstreamReply {
  int status = 0;
  std::string body;
};
using UpstreamCaller = std::function<Result<UpstreamReply>(
    const std::string& url, const std::string& target, const std::string& body,
    std::chrono::milliseconds timeout)>;
// Set by the node (node/model_upstream.cc: the blocking HTTP client); tests set a fake. Any
// thread; calls in progress keep the caller they started with.
void SetModelUpstreamCaller(UpstreamCaller caller);
UpstreamCaller CurrentUpstreamCaller();
// The same without blocking: starts the request on `io` (the shard's loop) and calls `done` once,
// on that loop's thread, never inline. Set by the node (node/model_upstream.cc); when none is set
// the blocking caller is used. Used by asynchronous calls (HTTP invokes); MQTT and timer events
// still run synchronously and use the blocking caller.
using AsyncUpstreamDone = std::function<void(Result<UpstreamReply>)>;
using AsyncUpstreamCaller = std::function<void(
    boost::asio::io_context& io, const std::string& url, const std::string& target,
    std::string body, std::chrono::milliseconds timeout, AsyncUpstreamDone done)>;
void SetModelAsyncUpstreamCaller(AsyncUpstreamCaller caller);
AsyncUpstreamCaller CurrentAsyncUpstreamCaller();

struct UpstreamMetrics {
  std::atomic<std::uint64_t> escalations{0};
  std::atomic<std::uint64_t> degraded{0};
  std::atomic<std::uint64_t> latency_microseconds{0};  // summed over escalations
};
// Process-wide, for /metrics.
UpstreamMetrics& ModelUpstreamMetrics();

// Inference work per model function (every shard, every instance), for /metrics: backend runs,
// rows inferred (more rows than runs when calls were batched) and the time spent in the backend.
struct ModelFunctionMetrics {
  std::atomic<std::uint64_t> runs{0};
  std::atomic<std::uint64_t> rows{0};
  std::atomic<std::uint64_t> run_nanoseconds{0};
};
// The counters of `function`, created on first use and kept for the process's life (a
// redeploy continues them). Any thread.
std::shared_ptr<ModelFunctionMetrics> ModelFunctionMetricsFor(const std::string& function);
// Calls `visit` for every model function's counters, under a lock (do not call back in).
void ForEachModelFunctionMetrics(
    const std::function<void(const std::string& function, const ModelFunctionMetrics&)>& visit);

// Registers "model" in RuntimeRegistry::Get() (using the store set above at each
// CreateInstance). Calling it again is harmless.
void RegisterModelRuntime();

}  // namespace wisp
