// Node metrics, rendered in the Prometheus text format at GET /metrics.
//
// Hot-path design: every counter is split per shard (one cache line each), so a shard thread
// only ever writes its own slot with relaxed atomics: no lock and no contended cache line on
// the invoke path. A scrape sums the slots. The registry's map (which functions exist) changes
// only on deploy/delete and is guarded by a mutex that the hot path never takes: shards hold a
// shared_ptr to their function's FunctionMetrics.
//
// Labels are bounded: function names (one per deployed function), runtime, trigger, status and
// error kind (closed sets), and filter stages (a trigger index and "<index>:<kind>", fixed by the
// manifest). Never a topic, key or device id.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "wisp/autoscaler.h"
#include "wisp/event.h"
#include "wisp/status.h"

namespace wisp {

// Upper bounds, in seconds, shared by the duration and cold-start histograms.
inline constexpr std::array<double, 16> kLatencyBuckets = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,   0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   10.0};

// A histogram written by one thread and read by a scraper. Not cumulative inside; rendering
// makes the buckets cumulative as Prometheus wants.
class ShardHistogram {
 public:
  void Record(std::chrono::nanoseconds value);
  std::uint64_t BucketCount(std::size_t i) const { return buckets_[i].load(kRelaxed); }
  std::uint64_t Count() const { return count_.load(kRelaxed); }
  std::uint64_t SumNanos() const { return sum_nanos_.load(kRelaxed); }

 private:
  static constexpr auto kRelaxed = std::memory_order_relaxed;
  std::array<std::atomic<std::uint64_t>, kLatencyBuckets.size() + 1> buckets_{};  // last: +Inf
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_nanos_{0};
};

// Single-writer counter: the owning shard adds without a locked instruction.
class ShardCounter {
 public:
  void Add(std::uint64_t n = 1) { value_.store(value_.load(kRelaxed) + n, kRelaxed); }
  std::uint64_t Get() const { return value_.load(kRelaxed); }

 private:
  static constexpr auto kRelaxed = std::memory_order_relaxed;
  std::atomic<std::uint64_t> value_{0};
};

inline constexpr std::size_t kStatusCodeCount = static_cast<std::size_t>(StatusCode::kInternal) + 1;

inline constexpr std::size_t kTriggerKindCount = 3;  // TriggerKind: http, mqtt, timer

// Invocations that one kind of trigger caused.
struct TriggerMetrics {
  ShardCounter ok;
  ShardCounter error;
  ShardHistogram duration;
};

// One function's counters on one shard.
struct alignas(64) FunctionShardMetrics {
  std::array<TriggerMetrics, kTriggerKindCount> by_trigger;
  TriggerMetrics& trigger(TriggerKind kind) { return by_trigger[static_cast<std::size_t>(kind)]; }
  std::array<ShardCounter, kStatusCodeCount> errors_by_kind;
  ShardCounter cold_starts;
  ShardCounter emits;
  ShardCounter emit_failures;  // no broker connection, or it refused
  ShardCounter dead_letters;   // events refused before the function ran (malformed payload)
  ShardHistogram cold_start_duration;
  ShardCounter warm_starts;   // calls that found a ready instance (no cold start on their path)
  ShardCounter rejected;      // calls refused with 429: the wait queue was full
  ShardHistogram queue_wait;  // time calls waited for an instance
  std::atomic<std::int64_t> instances{0};
  std::atomic<std::int64_t> in_flight{0};
  std::atomic<std::int64_t> queue_depth{0};
  // Instances by lifecycle state: starting, idle, busy, draining (InstanceState order).
  std::array<std::atomic<std::int64_t>, 4> instances_by_state{};
  // The autoscaler's last recommendation on this shard, and its decisions that changed the
  // instance count, by ScaleReason (docs/autoscaling.md).
  std::atomic<std::int64_t> desired_instances{0};
  std::array<ShardCounter, kScaleReasonCount> autoscaler_decisions;
};

class FunctionMetrics {
 public:
  FunctionMetrics(std::string name, std::string runtime, int shards);
  const std::string& name() const { return name_; }
  const std::string& runtime() const { return runtime_; }
  FunctionShardMetrics& shard(int i) { return *shards_[i]; }
  const FunctionShardMetrics& shard(int i) const { return *shards_[i]; }

  struct Totals {
    std::uint64_t invocations = 0, errors = 0, cold_starts = 0;
    std::int64_t instances = 0;
    double duration_seconds_sum = 0;
  };
  Totals Sum() const;

 private:
  friend class MetricsRegistry;
  std::string name_;
  std::string runtime_;
  std::vector<std::unique_ptr<FunctionShardMetrics>> shards_;
};
using FunctionMetricsPtr = std::shared_ptr<FunctionMetrics>;

// Counters of one filter stage (one entry of an mqtt trigger's `filters:`) on one shard.
struct FilterStageCounters {
  ShardCounter in;             // events that reached the stage
  ShardCounter out;            // events it passed on; a closed window counts once
  ShardCounter without_field;  // passed unchanged: the numeric field was missing
  ShardCounter overflow;       // dropped: the chain's window buffers were full
};

// One function's filter counters on one shard: the stages of all its mqtt triggers, in order.
struct alignas(64) FilterShardMetrics {
  FilterShardMetrics(std::size_t stage_count, std::size_t trigger_count)
      : stages(stage_count), keys_evicted(trigger_count) {}
  std::vector<FilterStageCounters> stages;
  std::vector<ShardCounter> keys_evicted;  // per mqtt trigger
};

// The filter stages of one deployed function and their per-shard counters. The layout is fixed
// at construction; a redeploy that changes the filters gets a new object.
class FilterMetrics {
 public:
  struct Stage {
    std::size_t trigger = 0;  // index into the function's mqtt triggers
    std::string filter;       // "<index in filters>:<kind>", e.g. "0:deadband"
    bool operator==(const Stage&) const = default;
  };
  // `stages` in trigger order (all of trigger 0's, then trigger 1's...); every `trigger` is
  // below `trigger_count`.
  FilterMetrics(std::string function, std::vector<Stage> stages, std::size_t trigger_count,
                int shards);
  const std::string& function() const { return function_; }
  const std::vector<Stage>& stages() const { return stages_; }
  std::size_t trigger_count() const { return first_stage_.size() - 1; }
  const FilterShardMetrics& shard(int i) const { return *shards_[i]; }

  // What shard `shard` writes for trigger `trigger`: its stages' counters, in filter order.
  std::span<FilterStageCounters> TriggerStages(int shard, std::size_t trigger);
  ShardCounter& KeysEvicted(int shard, std::size_t trigger);

 private:
  std::string function_;
  std::vector<Stage> stages_;
  std::vector<std::size_t> first_stage_;  // per trigger, plus the end
  std::vector<std::unique_ptr<FilterShardMetrics>> shards_;
};
using FilterMetricsPtr = std::shared_ptr<FilterMetrics>;

// Node-wide HTTP counters per shard, by status class (1xx..5xx).
struct alignas(64) HttpShardMetrics {
  std::array<ShardCounter, 6> responses_by_class;
  ShardCounter connections_accepted;
  std::atomic<std::int64_t> connections_open{0};
};

// The event archive's writer on one shard (src/archive/).
struct alignas(64) ArchiveShardMetrics {
  ShardCounter records;       // records appended
  ShardCounter bytes;         // bytes written to segments
  ShardCounter write_errors;  // failed writes (their records are dropped)
};

class MetricsRegistry {
 public:
  explicit MetricsRegistry(int shards);

  // The function's metrics, created on first deploy; a redeploy keeps counting. Thread-safe.
  FunctionMetricsPtr ForFunction(const std::string& name, const std::string& runtime);
  // Forgets a deleted function (shards still holding the pointer may write to it harmlessly).
  void RemoveFunction(const std::string& name);
  // The function's filter counters for this layout: the current object when the stages are the
  // same (a redeploy keeps counting), else a new one that replaces it. Thread-safe.
  FilterMetricsPtr ForFilters(const std::string& function, std::vector<FilterMetrics::Stage> stages,
                              std::size_t trigger_count);

  HttpShardMetrics& http(int shard) { return *http_[shard]; }
  ArchiveShardMetrics& archive(int shard) { return *archive_[shard]; }

  // A component's own metric families (the MQTT connection, the HTTP action sender, ...),
  // appended to every scrape. `render` runs on the scraping thread while the registry's
  // collector mutex is held, so it must only read atomics (or take its own short lock);
  // RemoveCollector waits for a running scrape, after which the component may go away.
  using Collector = std::function<void(std::string& out)>;
  int AddCollector(Collector render);
  void RemoveCollector(int id);

  // The whole exposition text. Thread-safe; takes the map's mutex only.
  std::string RenderPrometheus(std::string_view version, std::string_view commit) const;

 private:
  int shards_;
  std::vector<std::unique_ptr<HttpShardMetrics>> http_;
  std::vector<std::unique_ptr<ArchiveShardMetrics>> archive_;
  mutable std::mutex mu_;
  std::map<std::string, FunctionMetricsPtr> functions_;  // guarded by mu_
  std::map<std::string, FilterMetricsPtr> filters_;      // guarded by mu_
  mutable std::mutex collectors_mu_;
  std::map<int, Collector> collectors_;  // guarded by collectors_mu_
  int next_collector_id_ = 0;            // guarded by collectors_mu_
};

// Writes the HELP and TYPE lines of a metric family.
void AppendMetricFamily(std::string& out, std::string_view name, std::string_view type,
                        std::string_view help);

}  // namespace wisp
