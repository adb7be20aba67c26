// FunctionSpec: a deployed function's manifest, validated, plus the parser of `wisp.yaml`.
//
// Manifest form (OpenFaaS-style stack; see docs/manifest.md):
//
//   version: 1
//   functions:
//     pump-alert:
//       runtime: lua
//       handler: ./handler.lua:handle
//       command: [python3, main.py]   # runtime: process only; optional
//       environment: { VIBRATION_LIMIT: "7.1" }
//       limits: { memory: 32Mi, timeout: 2s }
//       concurrency: { max: 4, target: 2 }
//       scale: { min: 1, max: 8 }
//       auth: public            # or token
//
// A single-function form is accepted too: the same keys at top level plus `name:`.
//
// Thread safety: a FunctionSpec is an immutable value once parsed; share it as
// FunctionSpecPtr between shards.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "wisp/status.h"

namespace wisp {

enum class AuthMode { kPublic, kToken };

struct FunctionLimits {
  std::chrono::milliseconds timeout{5000};
  std::uint64_t memory_bytes = 64ull << 20;
};

// Gateway filters of an mqtt trigger (`filters:`), run in order in C++ before the function, with
// state per key (see docs/manifest.md, "Filters"). `field` is a dotted path into a JSON object
// payload ("a.b"); empty means the payload itself is the number. Durations are whole ms.

// `range: { field: v, min: 0, max: 50, action: drop }`: a value outside [min, max] is dropped,
// or with `action: clamp` replaced by the nearer bound. At least one bound is set.
struct RangeFilterSpec {
  std::string field;
  std::optional<double> min;
  std::optional<double> max;
  bool clamp = false;  // false: drop
};

// `deadband: { field: v, delta: 0.2 }`: passes the first value of a key, then only values that
// differ from the last passed one by at least delta.
struct DeadbandFilterSpec {
  std::string field;
  double delta = 0;  // > 0
};

// `ewma: { field: v, alpha: 0.3 }`: replaces the value by s = alpha*v + (1-alpha)*s_prev (the
// first value of a key starts s).
struct EwmaFilterSpec {
  std::string field;
  double alpha = 1;  // in (0, 1]
};

// `downsample: { every: 10 }` passes the 1st, 11th, 21st... event of a key;
// `downsample: { interval: 1s }` passes an event when at least `interval` passed since the last
// one it passed. Exactly one of the two is set.
struct DownsampleFilterSpec {
  std::int64_t every = 0;                 // >= 1, or 0 when `interval` is set
  std::chrono::milliseconds interval{0};  // > 0, or zero when `every` is set
};

// `rate_limit: { rate: 5/s, burst: 10 }`: a token bucket per key; an event without a token is
// dropped.
struct RateLimitFilterSpec {
  double per_second = 0;  // > 0
  double burst = 1;       // >= 1; the bucket starts full
};

// `window: { count: 10 }`, `{ count: 10, slide: 5 }`, `{ duration: 10s }` or
// `{ duration: 10s, slide: 2s }`: collects events into batches per key, tumbling (slide equal
// to the size) or sliding. Exactly one of count and duration is set; time windows are aligned
// to multiples of `slide` since the Unix epoch.
struct WindowFilterSpec {
  std::int64_t count = 0;                 // >= 1, or 0 for a time window
  std::int64_t count_slide = 0;           // 1..count (count == tumbling)
  std::chrono::milliseconds duration{0};  // > 0, or zero for a count window
  std::chrono::milliseconds slide{0};     // 1ms..duration (duration == tumbling)
};

using FilterSpec = std::variant<RangeFilterSpec, DeadbandFilterSpec, EwmaFilterSpec,
                                DownsampleFilterSpec, RateLimitFilterSpec, WindowFilterSpec>;

// The manifest name of a filter: "range", "deadband", "ewma", "downsample", "rate_limit",
// "window".
std::string_view FilterName(const FilterSpec& filter);

// `- mqtt: { topic: plant/+/pump/#, qos: 1, group: alerts }`: run the function on each message
// whose topic matches the filter. With a group the node subscribes `$share/<group>/<topic>`, so
// the nodes of one group split the messages between them.
struct MqttTriggerSpec {
  std::string topic;  // a valid MQTT topic filter ('+' and '#' wildcards)
  int qos = 1;        // 0 or 1
  std::string group;  // empty: every node gets every message
  // The key that filter state is kept per: empty = the topic, else a dotted payload field.
  std::string key;
  std::vector<FilterSpec> filters;  // run in this order; empty: every message runs the function
  std::size_t max_keys = 10000;     // keys with filter state per shard; the least recent go
  // How payloads are decoded: "" (auto: CBOR by content type, JSON by content type or look),
  // "json" or "cbor" (whatever the content type says; one that does not decode is a dead
  // letter), or "raw" (never decoded: the handler gets the bytes).
  std::string format;
};

// `- timer: { interval: 30s }` or `- timer: { schedule: "*/5 * * * *" }`: run the function
// every interval (at least 100ms), or at each minute a 5-field cron schedule matches, in UTC
// (see src/common/cron.h for the syntax). Exactly one of the two is set.
struct TimerTriggerSpec {
  std::chrono::milliseconds interval{0};  // zero when `schedule` is set
  std::string schedule;                   // a valid cron expression; empty when `interval` is set
};

// `detector:` (runtime detector only; docs/manifest.md): runs an anomaly detector on each event
// and emits its score and flag. Names are checked when the function is deployed (the detector
// library is not part of manifest parsing).
struct DetectorFunctionSpec {
  std::string algorithm = "best";  // a registered detector (include/wisp/anomaly_detector.h)
  std::map<std::string, std::string> params;  // detector parameters, as text
  // Which stream an event belongs to: "topic:N" (the N-th topic segment, from 0), "field:PATH"
  // (a dotted payload field), or empty (one stream for the whole function).
  std::string key;
  std::string value = "value";  // dotted field holding the number (or an array of numbers);
                                // empty: the payload itself is the number
  std::string emit;             // topic for {key, score, anomaly, ...}; "{key}" is replaced;
                                // empty: no action (the reply still carries the score)
  bool emit_all = false;        // emit every score, not only flagged ones
};

struct FunctionSpec {
  std::string name;           // [a-z0-9][a-z0-9-]{0,62}, DNS-label like OpenFaaS
  std::string runtime;        // a registered Runtime's name: "lua"
  std::string handler_file;   // relative to the function directory, e.g. "handler.lua"
  std::string handler_entry;  // function name in the module the file returns, e.g. "handle"
  // `command: [python3, main.py]` (runtime process only): the program and its arguments, run
  // in the function's directory; argv[0] is a name looked up in PATH or a path relative to the
  // directory. Empty: the runtime chooses from the handler (see process_runtime.h).
  std::vector<std::string> command;
  std::string version;  // free text, "0.0.0" when absent
  std::map<std::string, std::string> environment;
  std::map<std::string, std::string> labels;
  FunctionLimits limits;
  int concurrency_max = 1;  // calls in flight per instance
  // `concurrency.target`: the calls in flight per instance the autoscaler aims for (1 to
  // concurrency_max); 0 when absent (the autoscaler then aims for 70% of concurrency_max).
  int concurrency_target = 0;
  int scale_min = 1;  // instances kept warm per shard
  int scale_max = 8;  // instances per shard at most
  // Calls that may wait per shard for a free instance (scale.queue); past it: 429.
  int scale_queue = 100;
  AuthMode auth = AuthMode::kPublic;
  std::vector<MqttTriggerSpec> mqtt_triggers;  // HTTP invoke needs no trigger entry
  std::vector<TimerTriggerSpec> timer_triggers;
  std::optional<DetectorFunctionSpec> detector;  // set exactly when runtime is "detector"
};

using FunctionSpecPtr = std::shared_ptr<const FunctionSpec>;

// Parses a manifest. `source` names the file in error messages. Returns every function the
// manifest declares, or InvalidArgument naming the file, the function and the field at fault,
// e.g. "wisp.yaml: functions.pump-alert.limits.memory: '32Q' is not a byte size".
// Never throws; any bytes are safe to pass (this parser is fuzzed).
Result<std::vector<FunctionSpec>> ParseManifest(std::string_view yaml_text,
                                                std::string_view source = "wisp.yaml");

// True if `name` is a valid function name.
bool IsValidFunctionName(std::string_view name);

}  // namespace wisp
