// The node's deployed functions: validated, persisted in the data directory, shared by shards.
//
// Deploy and delete are control-plane operations (any thread, serialised by a mutex, may do
// file I/O). Shards read the catalog on the hot path through generation(): one relaxed atomic
// load per request; only when it moved does a shard take the mutex to copy the new snapshot.
// A snapshot and the DeployedFunctions in it are immutable and shared by shared_ptr, so a
// redeploy never changes a function under a running call.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "metrics/metrics.h"
#include "wisp/bundle.h"
#include "wisp/function_spec.h"
#include "wisp/runtime.h"
#include "wisp/status.h"

namespace wisp {

// Recent log lines of one function (its handler's ctx.log calls and the node's notes about
// it), kept in memory for `wisp logs`. Thread-safe: handlers on every shard append.
class FunctionLog {
 public:
  struct Entry {
    std::chrono::system_clock::time_point time;
    LogLevel level;
    std::string message;
  };
  static constexpr std::size_t kCapacity = 1000;
  static constexpr std::size_t kMaxMessageBytes = 4096;

  void Append(LogLevel level, std::string_view message);
  // The last `n` entries, oldest first.
  std::vector<Entry> Tail(std::size_t n) const;

 private:
  mutable std::mutex mu_;
  std::deque<Entry> entries_;  // guarded by mu_
};

struct DeployedFunction {
  FunctionSpecPtr spec;
  std::string dir;  // where its files live in the data directory
  RuntimePtr runtime;
  FunctionMetricsPtr metrics;
  FilterMetricsPtr filter_metrics;  // counters of its mqtt triggers' filter stages
  std::shared_ptr<FunctionLog> log;
  std::chrono::system_clock::time_point deployed_at;
  std::vector<std::string> files;
};
using DeployedFunctionPtr = std::shared_ptr<const DeployedFunction>;
using FunctionMap = std::map<std::string, DeployedFunctionPtr, std::less<>>;

class FunctionCatalog {
 public:
  FunctionCatalog(std::string data_dir, MetricsRegistry* metrics);

  // Loads the functions deployed before a restart. A function that no longer loads is logged
  // and skipped, never fatal: the node must come up and serve the others.
  void LoadFromDisk();

  // Validates every function of the bundle (manifest, runtime, handler compiles), then
  // persists and publishes them all, or none. InvalidArgument says what is wrong.
  Result<std::vector<DeployedFunctionPtr>> Deploy(const Bundle& bundle);

  // NotFound if absent.
  Status Remove(std::string_view name);

  std::uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  std::shared_ptr<const FunctionMap> Snapshot() const;
  DeployedFunctionPtr Find(std::string_view name) const;

 private:
  Result<DeployedFunctionPtr> Prepare(const FunctionSpec& spec, const std::string& dir,
                                      std::chrono::system_clock::time_point deployed_at,
                                      std::vector<std::string> files);
  void Publish(std::shared_ptr<const FunctionMap> next);  // requires change_mu_

  const std::string functions_dir_;
  MetricsRegistry* metrics_;
  // Serialises changes (deploy, remove, load), which do file I/O; readers never take it.
  std::mutex change_mu_;
  std::map<std::string, std::shared_ptr<FunctionLog>> logs_;  // guarded by change_mu_
  // Guards only the pointer swap, so a shard refreshing its snapshot never waits on disk.
  mutable std::mutex mu_;
  std::shared_ptr<const FunctionMap> functions_;  // written under both mutexes
  std::atomic<std::uint64_t> generation_{1};
};

}  // namespace wisp
