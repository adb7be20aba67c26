// FilterChain: an mqtt trigger's gateway filters (`filters:` in the manifest), run in C++ on the
// owning shard between decoding a message and running the function.
//
// A chain is built from a validated MqttTriggerSpec and runs its filters in manifest order: each
// stage gets what the previous one passed on. State is kept per key (the topic, or the payload
// field the trigger's `key:` names), for at most `max_keys` keys: a new key beyond that evicts
// the least recently seen one, with its state (a half-filled window is dropped), and counts it,
// so a flood of distinct topics cannot grow memory without bound. Windows together hold at most
// kMaxBufferedEvents events per chain; more are dropped and counted as overflow.
//
// Time is what the caller says it is: Push takes the message's receive time and Flush the
// current time, both on the system clock. Nothing in here reads a clock, so tests inject time.
// Time windows are closed either by a later Push (whose time is past the window's end) or by
// Flush(now) at NextDeadline(): the shard arms a timer on it so that a window closes on time when
// no further message arrives.
//
// Semantics of each filter and the batch format: docs/manifest.md, "Filters".
//
// Thread safety: none; a chain belongs to one shard thread. Counters are that shard's slots.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "metrics/metrics.h"
#include "wisp/function_spec.h"
#include "wisp/status.h"

namespace wisp {

using FilterTime = std::chrono::system_clock::time_point;

// Events held in all windows of one chain at most.
inline constexpr std::size_t kMaxBufferedEvents = 100'000;
// A sliding time window's duration / slide at most: each event is in that many batches.
inline constexpr std::int64_t kMaxSlidesPerWindow = 1000;
// A `key:` field value longer than this (bytes) is not used as a key; the topic is.
inline constexpr std::size_t kMaxKeyLength = 256;

// An event leaving the chain: the message (maybe changed by ewma or clamp) or a window's batch.
struct FilterOutput {
  nlohmann::json value;
  FilterTime time;          // the message's receive time; a batch: its window's end or last event
  bool modified = false;    // value is no longer the payload that came in
  bool batch = false;       // value is a window's batch (docs/manifest.md)
  std::string_view topic;   // not a batch: the topic given to Push
  std::string batch_topic;  // a batch: the topic of its last event

  std::string_view Topic() const { return batch ? std::string_view(batch_topic) : topic; }
};

// Where a chain counts: its stages' counters (one per filter, in order) and evicted keys.
struct FilterChainCounters {
  std::span<FilterStageCounters> stages;
  ShardCounter* keys_evicted = nullptr;
};

// What filters see of a payload that is neither JSON nor CBOR: a number when the text is one
// ("21.5", surrounding white space allowed), else the text as a JSON string.
nlohmann::json PlainPayloadValue(std::string_view payload);

// The metric labels of every filter stage of `spec`, for MetricsRegistry::ForFilters.
std::vector<FilterMetrics::Stage> FilterStagesOf(const FunctionSpec& spec);

class FilterChain {
 public:
  // InvalidArgument if a filter's settings are out of range (the manifest parser refuses them,
  // so this only guards specs from elsewhere) or `counters` does not have one slot per filter.
  // `counters` must outlive the chain.
  static Result<std::unique_ptr<FilterChain>> Create(const MqttTriggerSpec& trigger,
                                                     FilterChainCounters counters);
  ~FilterChain();

  // Runs one message through the filters and appends what comes out (0..n events) to `out`.
  // `payload` is the decoded message (a number, object, text as a JSON string...); `time` its
  // receive time. The `topic` views of the outputs point at `topic`, so consume `out` before
  // `topic` goes away. Never fails: a value a filter cannot use passes it unchanged.
  void Push(std::string_view topic, nlohmann::json payload, FilterTime time,
            std::vector<FilterOutput>& out);

  // Closes every time window that ended at or before `now` and appends the batches to `out`.
  void Flush(FilterTime now, std::vector<FilterOutput>& out);

  // When the next time window ends (call Flush then); nullopt when no time window holds events.
  std::optional<FilterTime> NextDeadline() const;

  std::size_t key_count() const { return keys_.size(); }
  std::size_t buffered_events() const { return buffered_; }

 private:
  struct Stage;
  struct KeyState;
  struct StageState;
  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };

  FilterChain(const MqttTriggerSpec& trigger, FilterChainCounters counters);
  KeyState& Touch(std::string_view key);
  void Evict(KeyState& key);
  // Runs `event` through stages [first, end) of `key`, appending what passes them all to `out`.
  void Run(std::size_t first, KeyState& key, FilterOutput event, std::vector<FilterOutput>& out);
  // A time window stage: closes the windows of `key` that end at or before `now`, running each
  // batch through the stages after it.
  void CloseTimeWindows(std::size_t stage, KeyState& key, FilterTime now,
                        std::vector<FilterOutput>& out);
  void Reschedule(std::size_t stage, KeyState& key);
  FilterOutput MakeBatch(KeyState& key, std::size_t stage, std::size_t begin, std::size_t end,
                         FilterTime start, FilterTime finish, bool move);

  std::vector<Stage> stages_;
  std::vector<std::string> key_field_;  // empty: the topic is the key
  std::size_t max_keys_;
  FilterChainCounters counters_;
  std::unordered_map<std::string, std::unique_ptr<KeyState>, StringHash, std::equal_to<>> keys_;
  std::list<KeyState*> recent_;  // front: most recently seen
  // Ends of open time windows: (end, key, stage). Flush pops from the front.
  std::set<std::tuple<FilterTime, KeyState*, std::size_t>> deadlines_;
  std::size_t buffered_ = 0;
  std::string key_scratch_;  // reused for keys that are not plain strings
};

}  // namespace wisp
