// Runtime and Instance: how a function's code is run.
//
// A Runtime (registered by name: "lua" now; "process", "model", "detector" later) turns a
// FunctionSpec and its directory into Instances. An Instance is one warm, isolated copy of the
// function (for Lua: its own lua_State with its own memory cap). The node keeps instances in a
// per-shard pool; creating one is the function's cold start.
//
// Threads: a Runtime is shared and thread-safe. An Instance belongs to the shard thread that
// created it and is only ever called from that thread, one call at a time.
//
// Asynchronous forms (CreateInstanceAsync, InvokeAsync) let a runtime whose work happens in
// another process wait on the shard's event loop instead of blocking it; their defaults run the
// synchronous form inline (the Lua runtime keeps those).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "wisp/event.h"
#include "wisp/function_spec.h"
#include "wisp/registry.h"
#include "wisp/state_store.h"
#include "wisp/status.h"

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace wisp {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

struct EmitOptions {
  int qos = 0;
  bool retain = false;
};

struct HttpPostOptions {
  std::string_view content_type;  // empty: the runtime picks from the body's type
  std::vector<std::pair<std::string, std::string>> headers;
};

// The services a handler may use during one call (ctx.state, ctx.log, ctx.emit, ctx.now).
// Provided by the node for the duration of Invoke; valid only during that call.
class HostApi {
 public:
  virtual ~HostApi() = default;
  // The shard's store; the namespace to use is the function's name (Namespace()).
  virtual StateStore& State() = 0;
  virtual std::string_view Namespace() const = 0;
  virtual void Log(LogLevel level, std::string_view message) = 0;
  // Records an action for the event triggers (published to MQTT once a broker is configured).
  // Fails with InvalidArgument for an empty or wildcard topic.
  virtual Status Emit(std::string_view topic, std::string_view payload,
                      const EmitOptions& options) = 0;
  virtual std::chrono::system_clock::time_point Now() const = 0;
  // Queues an HTTP POST (an action, sent by the node after it is queued; the handler does not
  // wait for the reply). PermissionDenied when the node's allowlist (actions.http_allow) does
  // not allow `url`, InvalidArgument for a malformed URL, ResourceExhausted or Unavailable when
  // it cannot be queued now. Hosts without HTTP actions refuse every URL.
  virtual Status HttpPost(std::string_view url, std::string_view body,
                          const HttpPostOptions& options) {
    (void)url, (void)body, (void)options;
    return PermissionDenied("HTTP actions are not available here");
  }
  // Runs the registry model `model` (NAME or NAME@VERSION) on `inputs_json` (nested arrays, or
  // {"input name": nested arrays}; inference/tensor_json.h) with this shard's session for it,
  // and returns the outputs as JSON text {"output name": nested arrays}. NotFound for an
  // unknown model, InvalidArgument for inputs that do not fit it. Hosts without a model
  // registry answer Unavailable.
  virtual Result<std::string> Infer(std::string_view model, std::string_view inputs_json) {
    (void)model, (void)inputs_json;
    return Unavailable("models are not available here");
  }
};

class Instance {
 public:
  virtual ~Instance() = default;

  // Runs the handler on `event`. Errors: FunctionError (the handler raised, with its text and
  // location, or returned something that is not a reply), DeadlineExceeded (ran past
  // limits.timeout), ResourceExhausted (went past limits.memory). `event` and `host` are
  // borrowed for the call only.
  virtual Result<Reply> Invoke(const Event& event, HostApi& host) = 0;

  // Like Invoke, but may return before the call ends: `done` is called exactly once, on the
  // thread running `io` (the shard's), possibly before InvokeAsync returns. `event` and `host`
  // must stay valid until then; the instance must not be destroyed while a call runs. The
  // default runs Invoke inline.
  using InvokeDone = std::function<void(Result<Reply>)>;
  virtual void InvokeAsync(const Event& event, HostApi& host, boost::asio::io_context& io,
                           InvokeDone done) {
    (void)io;
    done(Invoke(event, host));
  }

  // False once the instance may be in a bad state (after a timeout or memory exhaustion): the
  // pool then destroys it and makes a fresh one, so one bad call never poisons the next.
  virtual bool Reusable() const = 0;

  // Bytes the instance holds now, for metrics.
  virtual std::uint64_t MemoryBytes() const = 0;
};
using InstancePtr = std::unique_ptr<Instance>;

class Runtime {
 public:
  virtual ~Runtime() = default;
  // Loads the function from `function_dir` (which holds the handler file). InvalidArgument with
  // the loader's message when the code does not compile or the entry point is missing.
  virtual Result<InstancePtr> CreateInstance(const FunctionSpecPtr& spec,
                                             const std::string& function_dir) = 0;

  // Like CreateInstance, but may return before the instance is ready: `done` is called exactly
  // once on the thread running `io`, possibly before this returns. The default is inline.
  using CreateDone = std::function<void(Result<InstancePtr>)>;
  virtual void CreateInstanceAsync(const FunctionSpecPtr& spec, const std::string& function_dir,
                                   boost::asio::io_context& io, CreateDone done) {
    (void)io;
    done(CreateInstance(spec, function_dir));
  }
};
using RuntimePtr = std::shared_ptr<Runtime>;

using RuntimeFactory = std::function<RuntimePtr()>;
using RuntimeRegistry = Registry<RuntimeFactory>;

}  // namespace wisp
