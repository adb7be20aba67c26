// FunctionSpec: a deployed function's manifest, validated, plus the parser of `wisp.yaml`.
//
// Manifest form (OpenFaaS-style stack; see docs/manifest.md):
//
//   version: 1
//   functions:
//     pump-alert:
//       runtime: lua
//       handler: ./handler.lua:handle
//       environment: { VIBRATION_LIMIT: "7.1" }
//       limits: { memory: 32Mi, timeout: 2s }
//       concurrency: { max: 4 }
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
#include <string>
#include <string_view>
#include <vector>

#include "wisp/status.h"

namespace wisp {

enum class AuthMode { kPublic, kToken };

struct FunctionLimits {
  std::chrono::milliseconds timeout{5000};
  std::uint64_t memory_bytes = 64ull << 20;
};

// `- mqtt: { topic: plant/+/pump/#, qos: 1, group: alerts }`: run the function on each message
// whose topic matches the filter. With a group the node subscribes `$share/<group>/<topic>`, so
// the nodes of one group split the messages between them.
struct MqttTriggerSpec {
  std::string topic;  // a valid MQTT topic filter ('+' and '#' wildcards)
  int qos = 1;        // 0 or 1
  std::string group;  // empty: every node gets every message
};

// `- timer: { interval: 30s }` or `- timer: { schedule: "*/5 * * * *" }`: run the function
// every interval (at least 100ms), or at each minute a 5-field cron schedule matches, in UTC
// (see src/common/cron.h for the syntax). Exactly one of the two is set.
struct TimerTriggerSpec {
  std::chrono::milliseconds interval{0};  // zero when `schedule` is set
  std::string schedule;                   // a valid cron expression; empty when `interval` is set
};

struct FunctionSpec {
  std::string name;           // [a-z0-9][a-z0-9-]{0,62}, DNS-label like OpenFaaS
  std::string runtime;        // a registered Runtime's name: "lua"
  std::string handler_file;   // relative to the function directory, e.g. "handler.lua"
  std::string handler_entry;  // function name in the module the file returns, e.g. "handle"
  std::string version;        // free text, "0.0.0" when absent
  std::map<std::string, std::string> environment;
  std::map<std::string, std::string> labels;
  FunctionLimits limits;
  int concurrency_max = 1;  // calls in flight per instance
  int scale_min = 1;        // instances kept warm per shard
  int scale_max = 8;        // instances per shard at most
  AuthMode auth = AuthMode::kPublic;
  std::vector<MqttTriggerSpec> mqtt_triggers;  // HTTP invoke needs no trigger entry
  std::vector<TimerTriggerSpec> timer_triggers;
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
