// KeepAlivePolicy: decides how long an application's idle instance stays loaded ("warm") after
// an invocation ends, and whether to unload it and load it again ("pre-warm") shortly before the
// next expected invocation. The node and the trace simulator (bench/prewarm) drive the same
// policies, so a policy sees only what both can give it: the arrival time of each invocation
// that finds the application idle, and the moment the application becomes idle again.
//
// Model: one warm instance per application serves every concurrent invocation of it (the model
// of Shahrad et al., ATC 2020). An "arrival" here is an invocation that arrives while no other
// invocation of the same application is running; invocations that overlap a running one never
// need a cold start and are not reported. Times are milliseconds on the caller's monotonic
// clock; per application they never go backwards.
//
// Ownership and threads: a policy owns its per-application state and nothing else; the caller
// owns the policy. A policy is not thread-safe: one thread at a time may call it (the node gives
// each shard its own policy, the simulator uses one per run). Policies never fail at run time:
// bad options are refused by CreateKeepAlivePolicy.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "wisp/status.h"

namespace wisp {

// Dense application number chosen by the caller (index into its own table).
using PolicyAppId = uint32_t;
using PolicyTimeMs = int64_t;

inline constexpr PolicyTimeMs kMsPerMinute = 60'000;

// What to do with an application's instance when it becomes idle at time T.
//  - prewarm_delay_ms == 0: keep the instance loaded until T + keep_alive_ms.
//  - prewarm_delay_ms > 0: unload it now and load it again at T + prewarm_delay_ms, then keep it
//    loaded for keep_alive_ms.
// keep_alive_ms == 0 with no pre-warm unloads at once. An arrival inside the loaded period is
// warm; any other arrival is a cold start.
struct WarmWindow {
  PolicyTimeMs prewarm_delay_ms = 0;
  PolicyTimeMs keep_alive_ms = 0;

  bool operator==(const WarmWindow&) const = default;
};

class KeepAlivePolicy {
 public:
  virtual ~KeepAlivePolicy() = default;

  // The registered name ("fixed", "hybrid", "wisp").
  virtual std::string_view Name() const = 0;

  // The size of `app`'s instance, given before its first arrival and again when it changes.
  // Policies that do not weigh memory ignore it.
  virtual void OnAppMemory(PolicyAppId app, int64_t memory_mb) {}

  // An invocation of `app` arrived at `at` while the application was idle (warm or not).
  virtual void OnArrival(PolicyAppId app, PolicyTimeMs at) = 0;

  // The last running invocation of `app` ended at `at`: returns what to do with the instance.
  virtual WarmWindow OnIdle(PolicyAppId app, PolicyTimeMs at) = 0;

  // Under memory pressure the caller unloads idle instances with the highest priority first
  // (ties: least recently used first). `memory_mb` is the instance's size. The default, 0 for
  // everyone, gives plain LRU.
  virtual double EvictionPriority(PolicyAppId app, PolicyTimeMs now, int64_t memory_mb) const {
    return 0;
  }
};

// Numeric options by name, e.g. {"keep_alive_minutes": 10}. Each policy lists its own in
// docs/prewarm.md; an unknown name or an out-of-range value is an InvalidArgument error.
using KeepAlivePolicyOptions = std::map<std::string, double, std::less<>>;
using KeepAlivePolicyFactory =
    std::function<Result<std::unique_ptr<KeepAlivePolicy>>(const KeepAlivePolicyOptions&)>;

// Registers "fixed", "hybrid" and "wisp" in Registry<KeepAlivePolicyFactory>. Idempotent; call
// before looking policies up (RegisterBuiltinExtensions does).
void RegisterBuiltinKeepAlivePolicies();

// Builds the policy registered as `name`. NotFound for an unknown name (the message lists the
// known ones), InvalidArgument for bad options.
Result<std::unique_ptr<KeepAlivePolicy>> CreateKeepAlivePolicy(
    std::string_view name, const KeepAlivePolicyOptions& options = {});

}  // namespace wisp
