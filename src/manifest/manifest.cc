// ParseManifest: wisp.yaml -> validated FunctionSpecs. The accepted keys, their defaults and
// limits are documented in docs/manifest.md; keep the two in step.
//
// The parser reads untrusted text (a deploy request carries it) and is fuzzed, so it never
// throws: every yaml-cpp call runs inside one try block, and every error is a Status naming the
// file, the function and the field at fault.

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include "common/cron.h"
#include "common/quote.h"
#include "common/utf8.h"
#include "wisp/bundle.h"
#include "wisp/function_spec.h"
#include "wisp/units.h"

namespace wisp {
namespace {

// A manifest is a few kilobytes; the cap keeps a hostile deploy from making yaml-cpp build a
// huge node tree in memory.
constexpr std::size_t kMaxManifestBytes = 1 << 20;

// Bounds on the work of one parse, whatever aliases repeat (see ManifestParser::Spend): a few
// hundred ms at most. Real manifests are orders of magnitude below: without aliases a map
// entry takes at least 4 bytes of YAML, and each scalar is copied once.
constexpr std::size_t kMaxEntriesVisited = 300'000;
constexpr std::size_t kMaxBytesTaken = 8 << 20;

constexpr std::uint64_t kMinMemory = 1ull << 20;
constexpr std::uint64_t kMaxMemory = 4ull << 30;
constexpr std::chrono::milliseconds kMinTimeout{1};
constexpr std::chrono::milliseconds kMaxTimeout{15 * 60 * 1000};
constexpr int kMaxConcurrency = 1024;
constexpr int kMaxScale = 1000;
constexpr int kMaxScaleQueue = 10000;
constexpr std::size_t kMaxVersionLength = 128;
constexpr std::size_t kMaxDescriptionLength = 4096;
constexpr std::size_t kMaxEnvNameLength = 256;
constexpr std::size_t kMaxEnvValueLength = 64 << 10;
constexpr std::size_t kMaxLabelKeyLength = 63;
constexpr std::size_t kMaxLabelValueLength = 256;
constexpr std::size_t kMaxRuntimeLength = 64;
constexpr std::size_t kMaxEntryLength = 128;

constexpr std::string_view kFunctionKeys[] = {
    "runtime", "handler", "command",     "version", "description", "environment", "secrets",
    "labels",  "limits",  "concurrency", "scale",   "auth",        "triggers",    "detector"};
constexpr std::string_view kDetectorKeys[] = {"algorithm", "params", "key",
                                              "value",     "emit",   "emit_all"};
constexpr std::size_t kMaxCommandArgs = 64;
constexpr std::size_t kMaxCommandArgLength = 4096;
constexpr std::string_view kTopLevelKeys[] = {"version", "functions"};
constexpr std::string_view kLimitsKeys[] = {"memory", "timeout"};
constexpr std::string_view kConcurrencyKeys[] = {"max", "target"};
constexpr std::string_view kScaleKeys[] = {"min", "max", "queue"};
constexpr std::string_view kTriggerKinds[] = {"http", "mqtt", "timer"};
constexpr std::string_view kMqttTriggerKeys[] = {"topic",   "qos",      "group", "key",
                                                 "filters", "max_keys", "format"};
constexpr std::string_view kPayloadFormats[] = {"auto", "json", "cbor", "raw"};
constexpr std::string_view kFilterKinds[] = {"range",      "deadband",   "ewma",
                                             "downsample", "rate_limit", "window"};
constexpr std::string_view kRangeKeys[] = {"field", "min", "max", "action"};
constexpr std::string_view kDeadbandKeys[] = {"field", "delta"};
constexpr std::string_view kEwmaKeys[] = {"field", "alpha"};
constexpr std::string_view kDownsampleKeys[] = {"every", "interval"};
constexpr std::string_view kRateLimitKeys[] = {"rate", "burst"};
constexpr std::string_view kWindowKeys[] = {"count", "duration", "slide"};
// Filter state lives in memory per key, so sizes are capped: a window holds at most
// kMaxWindowCount events, and a chain keeps at most kMaxFilterKeys keys.
constexpr std::size_t kMaxFilters = 16;
constexpr std::int64_t kMaxWindowCount = 10000;
constexpr std::int64_t kMaxSlidesPerWindow = 1000;  // each event is in that many time windows
constexpr std::int64_t kMaxEvery = 1'000'000;
constexpr std::int64_t kMaxFilterKeys = 1'000'000;
constexpr std::size_t kMaxFieldPathLength = 256;
constexpr std::chrono::milliseconds kMaxFilterDuration{24 * 3600 * 1000};
constexpr std::string_view kTimerTriggerKeys[] = {"interval", "schedule"};
constexpr std::chrono::milliseconds kMinTimerInterval{100};
constexpr std::size_t kMaxTopicLength = 65535;  // an MQTT string's 16-bit length prefix
constexpr std::string_view kSharePrefix = "$share/";

bool IsLower(char c) { return c >= 'a' && c <= 'z'; }
bool IsUpper(char c) { return c >= 'A' && c <= 'Z'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAlnum(char c) { return IsLower(c) || IsUpper(c) || IsDigit(c); }

// [A-Za-z_][A-Za-z0-9_]*: an environment variable name or a Lua/Python function name.
bool IsIdentifier(std::string_view s) {
  if (s.empty() || IsDigit(s[0])) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return IsAlnum(c) || c == '_'; });
}

// [a-z][a-z0-9_-]*: runtime names are registered in lower case ("lua", "process").
bool IsRuntimeName(std::string_view s) {
  if (s.empty() || s.size() > kMaxRuntimeLength || !IsLower(s[0])) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return IsLower(c) || IsDigit(c) || c == '_' || c == '-'; });
}

// Kubernetes-like label keys: 1..63 of [A-Za-z0-9._/-], starting and ending alphanumeric.
bool IsLabelKey(std::string_view s) {
  if (s.empty() || s.size() > kMaxLabelKeyLength) return false;
  if (!IsAlnum(s.front()) || !IsAlnum(s.back())) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return IsAlnum(c) || c == '.' || c == '_' || c == '/' || c == '-';
  });
}

bool HasControlChars(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

std::string Quote(std::string_view s) { return QuoteUntrusted(s, 64); }

// Why `filter` is not a valid MQTT topic filter (MQTT 3.1.1 section 4.7, MQTT 5 section 4.7),
// or nullopt if it is one. Written here rather than taken from libmosquitto so that the base
// library does not depend on it; the node's MQTT client checks again when it subscribes.
std::optional<std::string> TopicFilterProblem(std::string_view filter) {
  if (filter.empty()) return "is empty (a topic filter needs at least one character)";
  if (filter.size() > kMaxTopicLength) {
    return fmt::format("is {} bytes long; MQTT allows at most {}", filter.size(), kMaxTopicLength);
  }
  if (filter.find('\0') != std::string_view::npos) {
    return fmt::format("{} contains a NUL character, which MQTT forbids", Quote(filter));
  }
  // Not quoted: the bytes that are not UTF-8 would go into the message as they are.
  if (!IsValidUtf8(filter)) return "is not valid UTF-8 (MQTT topics are UTF-8 text)";
  if (HasControlChars(filter)) {
    return fmt::format("{} contains control characters", Quote(filter));
  }
  if (filter.substr(0, kSharePrefix.size()) == kSharePrefix) {
    return fmt::format(
        "{} is a shared subscription; write the filter in topic: and the share "
        "name in group: (e.g. {{ topic: a/b, group: workers }})",
        Quote(filter));
  }
  std::size_t start = 0;
  while (true) {
    std::size_t end = filter.find('/', start);
    bool last = end == std::string_view::npos;
    std::string_view level = filter.substr(start, last ? std::string_view::npos : end - start);
    if (level.find('+') != std::string_view::npos && level != "+") {
      return fmt::format("{}: '+' must be a whole level (e.g. a/+/c, not a/b+/c)", Quote(filter));
    }
    if (level.find('#') != std::string_view::npos && (level != "#" || !last)) {
      return fmt::format("{}: '#' must be the whole last level (e.g. a/b/#, not a/#/b or a/b#)",
                         Quote(filter));
    }
    if (last) break;
    start = end + 1;
  }
  return std::nullopt;
}

std::string JoinKeys(std::span<const std::string_view> keys) {
  std::string out;
  for (std::string_view k : keys) {
    if (!out.empty()) out += ", ";
    out += k;
  }
  return out;
}

// Edit distance, for "did you mean" on unknown keys (keys are short; O(n*m) is fine).
std::size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string UnknownKeyProblem(std::string_view key, std::span<const std::string_view> known) {
  std::string_view best;
  std::size_t best_distance = 3;  // further than 2 edits away is not a typo
  if (key.size() <= 64) {
    for (std::string_view k : known) {
      std::size_t d = EditDistance(key, k);
      if (d < best_distance) {
        best_distance = d;
        best = k;
      }
    }
  }
  if (!best.empty()) {
    return fmt::format("unknown key; did you mean '{}'? (known keys: {})", best, JoinKeys(known));
  }
  return fmt::format("unknown key (known keys: {})", JoinKeys(known));
}

bool Contains(std::span<const std::string_view> list, std::string_view s) {
  return std::find(list.begin(), list.end(), s) != list.end();
}

const char* TypeName(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "nothing";
    case YAML::NodeType::Scalar:
      return "a value";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

// Parses one manifest. Holds the source name and builds "<source>: <path>: <problem>" errors.
class ManifestParser {
 public:
  explicit ManifestParser(std::string_view source) : source_(source) {}

  Result<std::vector<FunctionSpec>> Parse(const YAML::Node& root) {
    if (root.IsNull() || !root.IsDefined()) return FileError("manifest is empty");
    if (!root.IsMap()) {
      return FileError(fmt::format("expected a map with 'version: 1' and 'functions:', found {}",
                                   TypeName(root)));
    }
    if (root["functions"]) return ParseStack(root);
    if (root["name"]) return ParseSingle(root);
    return FileError(
        "no functions: declare them under 'functions:' (or give a single function a 'name:')");
  }

 private:
  Status FileError(std::string_view problem) const {
    return InvalidArgument(fmt::format("{}: {}", source_, problem));
  }
  Status Error(std::string_view path, std::string_view problem) const {
    if (path.empty()) return FileError(problem);
    return InvalidArgument(fmt::format("{}: {}: {}", source_, path, problem));
  }
  static std::string Join(std::string_view prefix, std::string_view key) {
    if (prefix.empty()) return std::string(key);
    return fmt::format("{}.{}", prefix, key);
  }

  // Calls fn(key, value, path) for each entry of a map, refusing non-string and duplicate keys
  // (yaml-cpp keeps duplicates; silently taking one of them would hide a mistake).
  template <typename Fn>
  Status ForEachEntry(const YAML::Node& map, std::string_view path, Fn&& fn) const {
    std::set<std::string> seen;
    for (const auto& entry : map) {
      RETURN_IF_ERROR(Spend(1, 0));
      const YAML::Node& key_node = entry.first;
      if (!key_node.IsScalar()) return Error(path, "keys must be plain strings");
      const std::string& key = key_node.Scalar();
      std::string key_path = Join(path, key.size() <= 64 && !HasControlChars(key) ? key : "?");
      if (!seen.insert(key).second) return Error(key_path, "appears twice");
      RETURN_IF_ERROR(fn(key, entry.second, key_path));
    }
    return Status::Ok();
  }

  Status ExpectMap(const YAML::Node& node, std::string_view path, std::string_view what) const {
    if (node.IsMap()) return Status::Ok();
    return Error(path, fmt::format("expected {}, found {}", what, TypeName(node)));
  }

  // A scalar as text; null and collections are refused.
  Result<std::string> String(const YAML::Node& node, std::string_view path) const {
    if (node.IsScalar()) {
      RETURN_IF_ERROR(Spend(0, node.Scalar().size()));
      return node.Scalar();
    }
    if (node.IsNull()) {
      return Error(path, "needs a value (write \"\" for an empty string)");
    }
    return Error(path, fmt::format("expected a value, found {}", TypeName(node)));
  }

  Result<std::int64_t> Integer(const YAML::Node& node, std::string_view path, std::int64_t min,
                               std::int64_t max) const {
    ASSIGN_OR_RETURN(std::string text, String(node, path));
    std::int64_t value = 0;
    const char* end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (text.empty() || ec != std::errc() || ptr != end) {
      if (ec == std::errc::result_out_of_range) {
        return Error(path, fmt::format("{} is out of range ({}..{})", Quote(text), min, max));
      }
      return Error(path, fmt::format("{} is not a whole number", Quote(text)));
    }
    if (value < min || value > max) {
      return Error(path, fmt::format("{} is out of range ({}..{})", value, min, max));
    }
    return value;
  }

  // Form (a): version: 1 + functions: {name: spec}.
  Result<std::vector<FunctionSpec>> ParseStack(const YAML::Node& root) {
    std::vector<FunctionSpec> specs;
    RETURN_IF_ERROR(ForEachEntry(
        root, "",
        [&](const std::string& key, const YAML::Node& value, const std::string& path) -> Status {
          if (key == "version") {
            ASSIGN_OR_RETURN(std::string version, String(value, path));
            // OpenFaaS writes "1.0"; both mean the one format there is.
            if (version != "1" && version != "1.0") {
              return Error(path, fmt::format("manifest version {} is not supported (use 1)",
                                             Quote(version)));
            }
            return Status::Ok();
          }
          if (key == "functions") {
            if (value.IsNull() || (value.IsMap() && value.size() == 0)) {
              return Error(path, "no functions declared");
            }
            RETURN_IF_ERROR(ExpectMap(value, path, "a map of function name -> settings"));
            return ForEachEntry(value, path,
                                [&](const std::string& name, const YAML::Node& spec,
                                    const std::string& fn_path) -> Status {
                                  if (!IsValidFunctionName(name)) return InvalidName(fn_path, name);
                                  ASSIGN_OR_RETURN(FunctionSpec parsed,
                                                   ParseFunction(spec, name, fn_path, false));
                                  specs.push_back(std::move(parsed));
                                  return Status::Ok();
                                });
          }
          return Error(path, UnknownKeyProblem(key, kTopLevelKeys) +
                                 "; function settings go under functions.<name>");
        }));
    return specs;
  }

  // Form (b): the function's keys at top level, plus name:.
  Result<std::vector<FunctionSpec>> ParseSingle(const YAML::Node& root) {
    ASSIGN_OR_RETURN(std::string name, String(root["name"], "name"));
    if (!IsValidFunctionName(name)) return InvalidName("name", name);
    ASSIGN_OR_RETURN(FunctionSpec spec, ParseFunction(root, name, "", true));
    std::vector<FunctionSpec> specs;
    specs.push_back(std::move(spec));
    return specs;
  }

  Status InvalidName(std::string_view path, std::string_view name) const {
    return Error(path, fmt::format("{} is not a valid function name (use 1-63 lower-case letters, "
                                   "digits and '-', starting and ending with a letter or digit)",
                                   Quote(name)));
  }

  Result<FunctionSpec> ParseFunction(const YAML::Node& node, const std::string& name,
                                     const std::string& prefix, bool single_form) {
    RETURN_IF_ERROR(ExpectMap(node, prefix, "a map of settings (runtime, handler, ...)"));
    FunctionSpec spec;
    spec.name = name;
    spec.version = "0.0.0";
    bool has_runtime = false;
    bool has_handler = false;
    bool has_scale_max = false;
    std::optional<std::int64_t> concurrency_target;
    std::string target_path;
    std::string command_path;
    std::string detector_path;

    RETURN_IF_ERROR(ForEachEntry(
        node, prefix,
        [&](const std::string& key, const YAML::Node& value, const std::string& path) -> Status {
          if (key == "name" && single_form) return Status::Ok();  // read by ParseSingle
          if (key == "runtime") {
            ASSIGN_OR_RETURN(spec.runtime, String(value, path));
            if (!IsRuntimeName(spec.runtime)) {
              return Error(path,
                           fmt::format("{} is not a runtime name (e.g. lua)", Quote(spec.runtime)));
            }
            has_runtime = true;
            return Status::Ok();
          }
          if (key == "handler") {
            has_handler = true;
            return ParseHandler(value, path, &spec);
          }
          if (key == "command") {
            command_path = path;
            return ParseCommand(value, path, &spec.command);
          }
          if (key == "version") {
            ASSIGN_OR_RETURN(spec.version, String(value, path));
            if (spec.version.empty() || spec.version.size() > kMaxVersionLength ||
                HasControlChars(spec.version)) {
              return Error(path,
                           fmt::format("{} is not a version (1 to {} printable characters, e.g. "
                                       "1.0.0)",
                                       Quote(spec.version), kMaxVersionLength));
            }
            return Status::Ok();
          }
          if (key == "description") {
            ASSIGN_OR_RETURN(std::string description, String(value, path));
            if (description.size() > kMaxDescriptionLength) {
              return Error(path, fmt::format("is longer than {} bytes", kMaxDescriptionLength));
            }
            return Status::Ok();
          }
          if (key == "environment") return ParseEnvironment(value, path, &spec.environment);
          if (key == "labels") return ParseLabels(value, path, &spec.labels);
          if (key == "secrets") return ParseSecrets(value, path);
          if (key == "limits") return ParseLimits(value, path, &spec.limits);
          if (key == "concurrency") {
            RETURN_IF_ERROR(ExpectMap(value, path, "a map (max, target)"));
            return ForEachEntry(
                value, path,
                [&](const std::string& k, const YAML::Node& v, const std::string& p) -> Status {
                  if (k == "max") {
                    ASSIGN_OR_RETURN(auto max, Integer(v, p, 1, kMaxConcurrency));
                    spec.concurrency_max = static_cast<int>(max);
                    return Status::Ok();
                  }
                  if (k == "target") {
                    ASSIGN_OR_RETURN(concurrency_target, Integer(v, p, 1, kMaxConcurrency));
                    target_path = p;
                    return Status::Ok();
                  }
                  return Error(p, UnknownKeyProblem(k, kConcurrencyKeys));
                });
          }
          if (key == "scale") {
            RETURN_IF_ERROR(ExpectMap(value, path, "a map (min, max, queue)"));
            return ForEachEntry(
                value, path,
                [&](const std::string& k, const YAML::Node& v, const std::string& p) -> Status {
                  if (k == "min") {
                    ASSIGN_OR_RETURN(auto min, Integer(v, p, 0, kMaxScale));
                    spec.scale_min = static_cast<int>(min);
                    return Status::Ok();
                  }
                  if (k == "max") {
                    ASSIGN_OR_RETURN(auto max, Integer(v, p, 1, kMaxScale));
                    spec.scale_max = static_cast<int>(max);
                    has_scale_max = true;
                    return Status::Ok();
                  }
                  if (k == "queue") {
                    ASSIGN_OR_RETURN(auto queue, Integer(v, p, 0, kMaxScaleQueue));
                    spec.scale_queue = static_cast<int>(queue);
                    return Status::Ok();
                  }
                  return Error(p, UnknownKeyProblem(k, kScaleKeys));
                });
          }
          if (key == "auth") {
            ASSIGN_OR_RETURN(std::string auth, String(value, path));
            if (auth == "public") {
              spec.auth = AuthMode::kPublic;
            } else if (auth == "token") {
              spec.auth = AuthMode::kToken;
            } else {
              return Error(
                  path, fmt::format("{} is not an auth mode (use public or token)", Quote(auth)));
            }
            return Status::Ok();
          }
          if (key == "triggers") return ParseTriggers(value, path, &spec);
          if (key == "detector") {
            detector_path = path;
            return ParseDetector(value, path, &spec.detector.emplace());
          }
          return Error(path, UnknownKeyProblem(key, kFunctionKeys));
        }));

    if (has_runtime && spec.runtime == "detector") {
      // A detector function runs built-in code: no handler, and the detector block is required.
      if (!spec.detector) {
        return Error(Join(prefix, "detector"),
                     "is required for runtime: detector (e.g. detector: { algorithm: best })");
      }
      has_handler = true;
    } else if (!detector_path.empty()) {
      return Error(detector_path, "is only for runtime: detector");
    }

    if (!has_runtime) return Error(Join(prefix, "runtime"), "is required (e.g. runtime: lua)");
    if (!has_handler) {
      return Error(Join(prefix, "handler"), "is required (e.g. handler: ./handler.lua:handle)");
    }
    if (!command_path.empty() && spec.runtime != "process") {
      return Error(command_path, "is only for runtime: process");
    }
    // A lone `scale.min` above the default max raises max with it: asking for 10 warm instances
    // should not fail because of a default the user never wrote.
    if (!has_scale_max) spec.scale_max = std::max(FunctionSpec{}.scale_max, spec.scale_min);
    if (spec.scale_min > spec.scale_max) {
      return Error(Join(prefix, "scale.min"), fmt::format("{} is greater than scale.max ({})",
                                                          spec.scale_min, spec.scale_max));
    }
    if (concurrency_target && *concurrency_target > spec.concurrency_max) {
      return Error(target_path, fmt::format("{} is greater than concurrency.max ({})",
                                            *concurrency_target, spec.concurrency_max));
    }
    if (concurrency_target) spec.concurrency_target = static_cast<int>(*concurrency_target);
    return spec;
  }

  // [program, arg...]: 1 to kMaxCommandArgs non-empty strings without NUL bytes.
  Status ParseCommand(const YAML::Node& value, const std::string& path,
                      std::vector<std::string>* command) const {
    if (!value.IsSequence() || value.size() == 0 || value.size() > kMaxCommandArgs) {
      return Error(path, fmt::format("must be a list of 1 to {} strings (e.g. [python3, main.py])",
                                     kMaxCommandArgs));
    }
    for (std::size_t i = 0; i < value.size(); ++i) {
      const std::string item_path = fmt::format("{}[{}]", path, i);
      ASSIGN_OR_RETURN(std::string arg, String(value[i], item_path));
      if (arg.empty() || arg.size() > kMaxCommandArgLength || arg.find('\0') != std::string::npos) {
        return Error(item_path,
                     fmt::format("must be 1 to {} bytes without NUL", kMaxCommandArgLength));
      }
      command->push_back(std::move(arg));
    }
    return Status::Ok();
  }

  // "./handler.lua:handle", "handler.lua:handle" or "handler.lua" (entry "handle").
  Status ParseHandler(const YAML::Node& value, const std::string& path, FunctionSpec* spec) const {
    ASSIGN_OR_RETURN(std::string text, String(value, path));
    std::string_view rest = text;
    if (rest.substr(0, 2) == "./") rest.remove_prefix(2);
    std::string_view file = rest;
    std::string_view entry = "handle";
    if (auto colon = rest.find(':'); colon != std::string_view::npos) {
      file = rest.substr(0, colon);
      entry = rest.substr(colon + 1);
    }
    // The handler must be a file of the bundle, so it follows the bundle's path rules; that
    // also keeps it inside the function directory.
    if (!IsValidBundlePath(file)) {
      return Error(path, fmt::format("the file in {} must be a relative path inside the function "
                                     "directory (no '..', no leading '/' or '.', names of "
                                     "A-Z a-z 0-9 . _ -)",
                                     Quote(text)));
    }
    if (!IsIdentifier(entry) || entry.size() > kMaxEntryLength) {
      return Error(path, fmt::format("{} does not name a function after ':' (e.g. "
                                     "handler.lua:handle)",
                                     Quote(text)));
    }
    spec->handler_file = std::string(file);
    spec->handler_entry = std::string(entry);
    return Status::Ok();
  }

  Status ParseDetector(const YAML::Node& value, const std::string& path,
                       DetectorFunctionSpec* detector) const {
    RETURN_IF_ERROR(ExpectMap(value, path, "a map (algorithm, params, key, value, emit)"));
    return ForEachEntry(
        value, path,
        [&](const std::string& k, const YAML::Node& v, const std::string& p) -> Status {
          if (k == "algorithm") {
            ASSIGN_OR_RETURN(detector->algorithm, String(v, p));
            if (!IsRuntimeName(detector->algorithm)) {
              return Error(p, fmt::format("{} is not a detector name (e.g. best, contextual)",
                                          Quote(detector->algorithm)));
            }
            return Status::Ok();
          }
          if (k == "params") {
            RETURN_IF_ERROR(ExpectMap(v, p, "a map of name: value"));
            return ForEachEntry(v, p,
                                [&](const std::string& name, const YAML::Node& param,
                                    const std::string& param_path) -> Status {
                                  ASSIGN_OR_RETURN(detector->params[name],
                                                   String(param, param_path));
                                  return Status::Ok();
                                });
          }
          if (k == "key") {
            ASSIGN_OR_RETURN(detector->key, String(v, p));
            std::string_view key = detector->key;
            bool topic = key.starts_with("topic:") && key.size() > 6 &&
                         key.substr(6).find_first_not_of("0123456789") == std::string::npos &&
                         key.size() <= 9;
            bool field = key.starts_with("field:") && key.size() > 6;
            if (!key.empty() && !topic && !field) {
              return Error(p, fmt::format("{} is not a key source (use topic:N for the N-th topic "
                                          "segment, from 0, or field:PATH)",
                                          Quote(detector->key)));
            }
            return Status::Ok();
          }
          if (k == "value") {
            ASSIGN_OR_RETURN(detector->value, String(v, p));
            return Status::Ok();
          }
          if (k == "emit") {
            ASSIGN_OR_RETURN(detector->emit, String(v, p));
            if (detector->emit.find_first_of("+#") != std::string::npos ||
                HasControlChars(detector->emit)) {
              return Error(p, fmt::format("{} is not a topic to publish to (no wildcards)",
                                          Quote(detector->emit)));
            }
            return Status::Ok();
          }
          if (k == "emit_all") {
            ASSIGN_OR_RETURN(std::string all, String(v, p));
            if (all != "true" && all != "false") return Error(p, "must be true or false");
            detector->emit_all = all == "true";
            return Status::Ok();
          }
          return Error(p, UnknownKeyProblem(k, kDetectorKeys));
        });
  }

  Status ParseEnvironment(const YAML::Node& value, const std::string& path,
                          std::map<std::string, std::string>* env) const {
    if (value.IsNull()) return Status::Ok();
    RETURN_IF_ERROR(ExpectMap(value, path, "a map of NAME: value"));
    return ForEachEntry(
        value, path,
        [&](const std::string& k, const YAML::Node& v, const std::string& p) -> Status {
          if (!IsIdentifier(k) || k.size() > kMaxEnvNameLength) {
            return Error(p, fmt::format("{} is not a variable name (letters, digits and '_', not "
                                        "starting with a digit)",
                                        Quote(k)));
          }
          // Numbers and booleans arrive as the text the user wrote (7.1 -> "7.1", true -> "true"),
          // since every environment value is a string in the end.
          ASSIGN_OR_RETURN(std::string text, String(v, p));
          if (text.size() > kMaxEnvValueLength) {
            return Error(p, fmt::format("is longer than {} bytes", kMaxEnvValueLength));
          }
          (*env)[k] = std::move(text);
          return Status::Ok();
        });
  }

  Status ParseLabels(const YAML::Node& value, const std::string& path,
                     std::map<std::string, std::string>* labels) const {
    if (value.IsNull()) return Status::Ok();
    RETURN_IF_ERROR(ExpectMap(value, path, "a map of key: value"));
    return ForEachEntry(
        value, path,
        [&](const std::string& k, const YAML::Node& v, const std::string& p) -> Status {
          if (!IsLabelKey(k)) {
            return Error(p,
                         fmt::format("{} is not a label key (1-63 of A-Z a-z 0-9 . _ / -, starting "
                                     "and ending with a letter or digit)",
                                     Quote(k)));
          }
          ASSIGN_OR_RETURN(std::string text, String(v, p));
          if (text.size() > kMaxLabelValueLength || HasControlChars(text)) {
            return Error(p, fmt::format("{} is not a label value (at most {} printable characters)",
                                        Quote(text), kMaxLabelValueLength));
          }
          (*labels)[k] = std::move(text);
          return Status::Ok();
        });
  }

  // Secret names are validated now so a typo fails at deploy, not at the first ctx.secret().
  Status ParseSecrets(const YAML::Node& value, const std::string& path) const {
    if (value.IsNull()) return Status::Ok();
    if (!value.IsSequence()) {
      return Error(path, fmt::format("expected a list of secret names, found {}", TypeName(value)));
    }
    std::set<std::string> seen;
    for (std::size_t i = 0; i < value.size(); ++i) {
      RETURN_IF_ERROR(Spend(1, 0));
      std::string p = fmt::format("{}[{}]", path, i);
      ASSIGN_OR_RETURN(std::string name, String(value[i], p));
      if (!IsValidFunctionName(name)) {
        return Error(p, fmt::format("{} is not a secret name (use 1-63 lower-case letters, digits "
                                    "and '-', starting and ending with a letter or digit)",
                                    Quote(name)));
      }
      if (!seen.insert(name).second)
        return Error(p, fmt::format("{} is listed twice", Quote(name)));
    }
    return Status::Ok();
  }

  Status ParseLimits(const YAML::Node& value, const std::string& path,
                     FunctionLimits* limits) const {
    RETURN_IF_ERROR(ExpectMap(value, path, "a map (memory, timeout)"));
    return ForEachEntry(
        value, path,
        [&](const std::string& k, const YAML::Node& v, const std::string& p) -> Status {
          if (k == "memory") {
            ASSIGN_OR_RETURN(std::string text, String(v, p));
            Result<std::uint64_t> bytes = ParseByteSize(text);
            if (!bytes.ok()) return Error(p, bytes.status().message());
            if (*bytes < kMinMemory || *bytes > kMaxMemory) {
              return Error(p, fmt::format("{} is out of range ({}..{})", Quote(text),
                                          FormatByteSize(kMinMemory), FormatByteSize(kMaxMemory)));
            }
            limits->memory_bytes = *bytes;
            return Status::Ok();
          }
          if (k == "timeout") {
            ASSIGN_OR_RETURN(std::string text, String(v, p));
            Result<std::chrono::milliseconds> d = ParseDuration(text);
            if (!d.ok()) return Error(p, d.status().message());
            if (*d < kMinTimeout || *d > kMaxTimeout) {
              return Error(p,
                           fmt::format("{} is out of range ({}..{})", Quote(text),
                                       FormatDuration(kMinTimeout), FormatDuration(kMaxTimeout)));
            }
            limits->timeout = *d;
            return Status::Ok();
          }
          return Error(p, UnknownKeyProblem(k, kLimitsKeys));
        });
  }

  // Triggers: a list of single-key maps, each a known trigger kind with a map of settings.
  // mqtt and timer triggers are parsed into spec->mqtt_triggers and spec->timer_triggers; http
  // ones are accepted so manifests written for later versions deploy, but only their shape is
  // checked.
  Status ParseTriggers(const YAML::Node& value, const std::string& path, FunctionSpec* spec) const {
    if (value.IsNull()) return Status::Ok();
    if (!value.IsSequence()) {
      return Error(path, fmt::format("expected a list (e.g. - http: {{ path: /hello }}), found {}",
                                     TypeName(value)));
    }
    for (std::size_t i = 0; i < value.size(); ++i) {
      RETURN_IF_ERROR(Spend(1, 0));
      std::string p = fmt::format("{}[{}]", path, i);
      const YAML::Node& trigger = value[i];
      if (!trigger.IsMap() || trigger.size() != 1) {
        return Error(p,
                     "expected one trigger kind with its settings (e.g. - mqtt: { topic: a/b })");
      }
      const auto& entry = *trigger.begin();
      if (!entry.first.IsScalar() || !Contains(kTriggerKinds, entry.first.Scalar())) {
        return Error(p, fmt::format("unknown trigger {} (use http, mqtt or timer)",
                                    Quote(entry.first.Scalar())));
      }
      std::string kind_path = fmt::format("{}.{}", p, entry.first.Scalar());
      if (entry.first.Scalar() == "mqtt") {
        ASSIGN_OR_RETURN(MqttTriggerSpec mqtt, ParseMqttTrigger(entry.second, kind_path));
        spec->mqtt_triggers.push_back(std::move(mqtt));
        continue;
      }
      if (entry.first.Scalar() == "timer") {
        ASSIGN_OR_RETURN(TimerTriggerSpec timer, ParseTimerTrigger(entry.second, kind_path));
        spec->timer_triggers.push_back(std::move(timer));
        continue;
      }
      if (!entry.second.IsNull()) {
        RETURN_IF_ERROR(ExpectMap(entry.second, kind_path, "a map of trigger settings"));
      }
    }
    return Status::Ok();
  }

  // `mqtt: { topic: plant/+/pump/#, qos: 1, group: alerts, key: pump, filters: [...] }`.
  Result<MqttTriggerSpec> ParseMqttTrigger(const YAML::Node& value, const std::string& path) const {
    MqttTriggerSpec mqtt;
    bool has_topic = false;
    if (!value.IsNull()) {
      RETURN_IF_ERROR(ExpectMap(value, path, "a map (topic, qos, group, key, filters)"));
      RETURN_IF_ERROR(ForEachEntry(
          value, path,
          [&](const std::string& k, const YAML::Node& v, const std::string& p) -> Status {
            if (k == "topic") {
              ASSIGN_OR_RETURN(mqtt.topic, String(v, p));
              if (std::optional<std::string> problem = TopicFilterProblem(mqtt.topic)) {
                return Error(p, *problem);
              }
              has_topic = true;
              return Status::Ok();
            }
            if (k == "qos") {
              ASSIGN_OR_RETURN(auto qos, Integer(v, p, INT64_MIN, INT64_MAX));
              if (qos == 2) {
                return Error(p,
                             "QoS 2 is not supported: wisp acknowledges a QoS 1 message after the "
                             "function ran (at least once), so use qos: 1 and make the handler "
                             "safe to run twice, or qos: 0 (at most once)");
              }
              if (qos != 0 && qos != 1) {
                return Error(p, fmt::format("{} is not a QoS level (use 0 or 1)", qos));
              }
              mqtt.qos = static_cast<int>(qos);
              return Status::Ok();
            }
            if (k == "group") {
              ASSIGN_OR_RETURN(mqtt.group, String(v, p));
              if (mqtt.group.find_first_of("/+#") != std::string::npos) {
                return Error(p, fmt::format("{} must not contain '/', '+' or '#' (it becomes "
                                            "$share/<group>/<topic>)",
                                            Quote(mqtt.group)));
              }
              if (!IsValidFunctionName(mqtt.group)) {
                return Error(p, fmt::format("{} is not a group name (use 1-63 lower-case letters, "
                                            "digits and '-', starting and ending with a letter or "
                                            "digit)",
                                            Quote(mqtt.group)));
              }
              return Status::Ok();
            }
            if (k == "key") {
              ASSIGN_OR_RETURN(mqtt.key, String(v, p));
              return FieldPathProblem(mqtt.key, p);
            }
            if (k == "max_keys") {
              ASSIGN_OR_RETURN(auto max_keys, Integer(v, p, 1, kMaxFilterKeys));
              mqtt.max_keys = static_cast<std::size_t>(max_keys);
              return Status::Ok();
            }
            if (k == "filters") {
              ASSIGN_OR_RETURN(mqtt.filters, ParseFilters(v, p));
              return Status::Ok();
            }
            if (k == "format") {
              ASSIGN_OR_RETURN(std::string format, String(v, p));
              if (!Contains(kPayloadFormats, format)) {
                return Error(p, fmt::format("{} is not a payload format (auto, json, cbor or raw)",
                                            Quote(format)));
              }
              mqtt.format = format == "auto" ? "" : format;
              return Status::Ok();
            }
            return Error(p, UnknownKeyProblem(k, kMqttTriggerKeys));
          }));
    }
    if (!has_topic) {
      return Error(Join(path, "topic"), "is required (e.g. mqtt: { topic: plant/+/pump })");
    }
    return mqtt;
  }

  // A dotted path into a JSON object ("vibration", "sensor.temp"): non-empty parts, printable.
  Status FieldPathProblem(std::string_view field, std::string_view path) const {
    if (field.empty() || field.size() > kMaxFieldPathLength || HasControlChars(field) ||
        !IsValidUtf8(field)) {
      return Error(path, fmt::format("{} is not a field path (1-{} printable characters, e.g. "
                                     "vibration or sensor.temp)",
                                     Quote(field), kMaxFieldPathLength));
    }
    if (field.front() == '.' || field.back() == '.' || field.find("..") != std::string_view::npos) {
      return Error(path, fmt::format("{} has an empty part between dots", Quote(field)));
    }
    return Status::Ok();
  }

  // A finite decimal number ("0.2", "-3", "1e3").
  Result<double> Number(const YAML::Node& node, std::string_view path) const {
    ASSIGN_OR_RETURN(std::string text, String(node, path));
    double value = 0;
    const char* begin = text.data();
    const char* end = text.data() + text.size();
    if (begin != end && *begin == '+') ++begin;
    auto [ptr, ec] = std::from_chars(begin, end, value);
    if (begin == end || ec != std::errc() || ptr != end || !std::isfinite(value)) {
      return Error(path, fmt::format("{} is not a number", Quote(text)));
    }
    return value;
  }

  Result<std::chrono::milliseconds> FilterDuration(const YAML::Node& node,
                                                   std::string_view path) const {
    ASSIGN_OR_RETURN(std::string text, String(node, path));
    Result<std::chrono::milliseconds> d = ParseDuration(text);
    if (!d.ok()) return Error(path, d.status().message());
    if (*d <= std::chrono::milliseconds(0) || *d > kMaxFilterDuration) {
      return Error(path, fmt::format("{} is out of range (1ms..{})", Quote(text),
                                     FormatDuration(kMaxFilterDuration)));
    }
    return *d;
  }

  // "5/s", "0.5/s", "300/min", "100/h": events per unit of time, as events per second.
  Result<double> Rate(const YAML::Node& node, std::string_view path) const {
    ASSIGN_OR_RETURN(std::string text, String(node, path));
    const std::size_t slash = text.find('/');
    const std::string_view unit =
        slash == std::string::npos ? std::string_view() : std::string_view(text).substr(slash + 1);
    double seconds = 0;
    if (unit == "s") seconds = 1;
    if (unit == "min") seconds = 60;
    if (unit == "h") seconds = 3600;
    double count = 0;
    if (seconds > 0) {
      const char* begin = text.data();
      const char* end = text.data() + slash;
      auto [ptr, ec] = std::from_chars(begin, end, count);
      if (begin == end || ec != std::errc() || ptr != end || !std::isfinite(count)) seconds = 0;
    }
    if (seconds == 0 || count <= 0 || count > 1e9) {
      return Error(path, fmt::format("{} is not a rate (a positive number of events per s, min or "
                                     "h, e.g. 5/s or 300/min)",
                                     Quote(text)));
    }
    return count / seconds;
  }

  // `filters:` a list of single-key maps, each a filter kind with its settings, run in order.
  Result<std::vector<FilterSpec>> ParseFilters(const YAML::Node& value,
                                               const std::string& path) const {
    std::vector<FilterSpec> filters;
    if (value.IsNull()) return filters;
    if (!value.IsSequence()) {
      return Error(path,
                   fmt::format("expected a list (e.g. - deadband: {{ delta: 0.5 }}), found {}",
                               TypeName(value)));
    }
    if (value.size() > kMaxFilters) {
      return Error(
          path, fmt::format("has {} filters; at most {} are allowed", value.size(), kMaxFilters));
    }
    for (std::size_t i = 0; i < value.size(); ++i) {
      RETURN_IF_ERROR(Spend(1, 0));
      std::string p = fmt::format("{}[{}]", path, i);
      const YAML::Node& filter = value[i];
      if (!filter.IsMap() || filter.size() != 1) {
        return Error(p, "expected one filter kind with its settings (e.g. - ewma: { alpha: 0.3 })");
      }
      const auto& entry = *filter.begin();
      const std::string kind = entry.first.IsScalar() ? entry.first.Scalar() : std::string();
      if (!Contains(kFilterKinds, kind)) {
        return Error(
            p, fmt::format("unknown filter {} (use {})", Quote(kind), JoinKeys(kFilterKinds)));
      }
      std::string kind_path = fmt::format("{}.{}", p, kind);
      if (!entry.second.IsMap()) {
        return Error(kind_path,
                     fmt::format("expected a map of settings, found {}", TypeName(entry.second)));
      }
      ASSIGN_OR_RETURN(FilterSpec spec, ParseFilter(kind, entry.second, kind_path));
      filters.push_back(std::move(spec));
    }
    return filters;
  }

  Result<FilterSpec> ParseFilter(std::string_view kind, const YAML::Node& value,
                                 const std::string& path) const {
    if (kind == "range") return ParseRange(value, path);
    if (kind == "deadband") return ParseDeadband(value, path);
    if (kind == "ewma") return ParseEwma(value, path);
    if (kind == "downsample") return ParseDownsample(value, path);
    if (kind == "rate_limit") return ParseRateLimit(value, path);
    return ParseWindow(value, path);
  }

  Result<FilterSpec> ParseRange(const YAML::Node& value, const std::string& path) const {
    RangeFilterSpec range;
    RETURN_IF_ERROR(ForEachEntry(
        value, path,
        [&](const std::string& k, const YAML::Node& v, const std::string& p) -> Status {
          if (k == "field") {
            ASSIGN_OR_RETURN(range.field, String(v, p));
            return FieldPathProblem(range.field, p);
          }
          if (k == "min") {
            ASSIGN_OR_RETURN(range.min, Number(v, p));
            return Status::Ok();
          }
          if (k == "max") {
            ASSIGN_OR_RETURN(range.max, Number(v, p));
            return Status::Ok();
          }
          if (k == "action") {
            ASSIGN_OR_RETURN(std::string action, String(v, p));
            if (action != "drop" && action != "clamp") {
              return Error(p,
                           fmt::format("{} is not an action (use drop or clamp)", Quote(action)));
            }
            range.clamp = action == "clamp";
            return Status::Ok();
          }
          return Error(p, UnknownKeyProblem(k, kRangeKeys));
        }));
    if (!range.min && !range.max) return Error(path, "needs min, max or both");
    if (range.min && range.max && *range.min > *range.max) {
      return Error(
          path, fmt::format("min ({}) must not be greater than max ({})", *range.min, *range.max));
    }
    return FilterSpec(std::move(range));
  }

  Result<FilterSpec> ParseDeadband(const YAML::Node& value, const std::string& path) const {
    DeadbandFilterSpec deadband;
    bool has_delta = false;
    RETURN_IF_ERROR(ForEachEntry(
        value, path,
        [&](const std::string& k, const YAML::Node& v, const std::string& p) -> Status {
          if (k == "field") {
            ASSIGN_OR_RETURN(deadband.field, String(v, p));
            return FieldPathProblem(deadband.field, p);
          }
          if (k == "delta") {
            ASSIGN_OR_RETURN(deadband.delta, Number(v, p));
            has_delta = true;
            return Status::Ok();
          }
          return Error(p, UnknownKeyProblem(k, kDeadbandKeys));
        }));
    if (!has_delta) return Error(path, "needs delta (e.g. deadband: { delta: 0.5 })");
    if (deadband.delta <= 0) return Error(path, "delta must be > 0");
    return FilterSpec(std::move(deadband));
  }

  Result<FilterSpec> ParseEwma(const YAML::Node& value, const std::string& path) const {
    EwmaFilterSpec ewma;
    bool has_alpha = false;
    RETURN_IF_ERROR(ForEachEntry(
        value, path,
        [&](const std::string& k, const YAML::Node& v, const std::string& p) -> Status {
          if (k == "field") {
            ASSIGN_OR_RETURN(ewma.field, String(v, p));
            return FieldPathProblem(ewma.field, p);
          }
          if (k == "alpha") {
            ASSIGN_OR_RETURN(ewma.alpha, Number(v, p));
            has_alpha = true;
            return Status::Ok();
          }
          return Error(p, UnknownKeyProblem(k, kEwmaKeys));
        }));
    if (!has_alpha) return Error(path, "needs alpha (e.g. ewma: { alpha: 0.3 })");
    if (!(ewma.alpha > 0 && ewma.alpha <= 1)) return Error(path, "alpha must be > 0 and <= 1");
    return FilterSpec(std::move(ewma));
  }

  Result<FilterSpec> ParseDownsample(const YAML::Node& value, const std::string& path) const {
    DownsampleFilterSpec downsample;
    RETURN_IF_ERROR(ForEachEntry(
        value, path,
        [&](const std::string& k, const YAML::Node& v, const std::string& p) -> Status {
          if (k == "every") {
            ASSIGN_OR_RETURN(downsample.every, Integer(v, p, INT64_MIN, INT64_MAX));
            if (downsample.every < 1 || downsample.every > kMaxEvery) {
              return Error(path, fmt::format("every must be >= 1 and <= {}", kMaxEvery));
            }
            return Status::Ok();
          }
          if (k == "interval") {
            ASSIGN_OR_RETURN(downsample.interval, FilterDuration(v, p));
            return Status::Ok();
          }
          return Error(p, UnknownKeyProblem(k, kDownsampleKeys));
        }));
    const bool has_every = downsample.every > 0;
    const bool has_interval = downsample.interval.count() > 0;
    if (has_every == has_interval) {
      return Error(path, "give either every or interval (e.g. downsample: { every: 10 })");
    }
    return FilterSpec(downsample);
  }

  Result<FilterSpec> ParseRateLimit(const YAML::Node& value, const std::string& path) const {
    RateLimitFilterSpec limit;
    std::optional<std::int64_t> burst;
    RETURN_IF_ERROR(ForEachEntry(
        value, path,
        [&](const std::string& k, const YAML::Node& v, const std::string& p) -> Status {
          if (k == "rate") {
            ASSIGN_OR_RETURN(limit.per_second, Rate(v, p));
            return Status::Ok();
          }
          if (k == "burst") {
            ASSIGN_OR_RETURN(burst, Integer(v, p, INT64_MIN, INT64_MAX));
            if (*burst < 1 || *burst > kMaxEvery) {
              return Error(path, fmt::format("burst must be >= 1 and <= {}", kMaxEvery));
            }
            return Status::Ok();
          }
          return Error(p, UnknownKeyProblem(k, kRateLimitKeys));
        }));
    if (limit.per_second <= 0) return Error(path, "needs rate (e.g. rate_limit: { rate: 5/s })");
    // Default: one second's worth of events, so a steady source at the rate is never cut.
    limit.burst = burst ? static_cast<double>(*burst) : std::max(1.0, std::ceil(limit.per_second));
    return FilterSpec(limit);
  }

  Result<FilterSpec> ParseWindow(const YAML::Node& value, const std::string& path) const {
    WindowFilterSpec window;
    std::optional<std::int64_t> count;
    std::optional<std::chrono::milliseconds> duration;
    // A copy (a handle to the same node): the entry `v` below is gone after its callback.
    std::optional<YAML::Node> slide;
    std::string slide_path;
    RETURN_IF_ERROR(ForEachEntry(
        value, path,
        [&](const std::string& k, const YAML::Node& v, const std::string& p) -> Status {
          if (k == "count") {
            ASSIGN_OR_RETURN(count, Integer(v, p, INT64_MIN, INT64_MAX));
            return Status::Ok();
          }
          if (k == "duration") {
            ASSIGN_OR_RETURN(duration, FilterDuration(v, p));
            return Status::Ok();
          }
          if (k == "slide") {
            slide = v;
            slide_path = p;
            return Status::Ok();
          }
          return Error(p, UnknownKeyProblem(k, kWindowKeys));
        }));
    if (count.has_value() == duration.has_value()) {
      return Error(path, "give either count or duration (e.g. window: { count: 10 })");
    }
    if (count) {
      if (*count < 1 || *count > kMaxWindowCount) {
        return Error(path, fmt::format("count must be >= 1 and <= {}", kMaxWindowCount));
      }
      window.count = *count;
      window.count_slide = *count;
      if (slide) {
        ASSIGN_OR_RETURN(window.count_slide, Integer(*slide, slide_path, INT64_MIN, INT64_MAX));
        if (window.count_slide < 1 || window.count_slide > window.count) {
          return Error(path, fmt::format("slide must be >= 1 and <= count ({})", window.count));
        }
      }
      return FilterSpec(window);
    }
    window.duration = *duration;
    window.slide = *duration;
    if (slide) {
      ASSIGN_OR_RETURN(window.slide, FilterDuration(*slide, slide_path));
      if (window.slide > window.duration) {
        return Error(path, fmt::format("slide must not be longer than duration ({})",
                                       FormatDuration(window.duration)));
      }
      if (window.duration / window.slide > kMaxSlidesPerWindow) {
        return Error(path, fmt::format("duration ({}) must be at most {} slides ({} each)",
                                       FormatDuration(window.duration), kMaxSlidesPerWindow,
                                       FormatDuration(window.slide)));
      }
      if (window.duration % window.slide != std::chrono::milliseconds(0)) {
        return Error(path,
                     fmt::format("duration ({}) must be a whole number of slides ({})",
                                 FormatDuration(window.duration), FormatDuration(window.slide)));
      }
    }
    return FilterSpec(window);
  }

  // `timer: { interval: 30s }` or `timer: { schedule: "*/5 * * * *" }`, exactly one of the two.
  Result<TimerTriggerSpec> ParseTimerTrigger(const YAML::Node& value,
                                             const std::string& path) const {
    constexpr std::string_view kExample =
        "(e.g. timer: { interval: 30s } or timer: { schedule: \"*/5 * * * *\" })";
    TimerTriggerSpec timer;
    bool has_interval = false;
    bool has_schedule = false;
    if (!value.IsNull()) {
      RETURN_IF_ERROR(ExpectMap(value, path, "a map (interval or schedule)"));
      RETURN_IF_ERROR(ForEachEntry(
          value, path,
          [&](const std::string& k, const YAML::Node& v, const std::string& p) -> Status {
            if ((k == "interval" && has_schedule) || (k == "schedule" && has_interval)) {
              return Error(p, "give either interval or schedule, not both");
            }
            if (k == "interval") {
              ASSIGN_OR_RETURN(std::string text, String(v, p));
              Result<std::chrono::milliseconds> d = ParseDuration(text);
              if (!d.ok()) return Error(p, d.status().message());
              if (*d < kMinTimerInterval) {
                return Error(p, fmt::format("{} is too short (at least {})", Quote(text),
                                            FormatDuration(kMinTimerInterval)));
              }
              timer.interval = *d;
              has_interval = true;
              return Status::Ok();
            }
            if (k == "schedule") {
              ASSIGN_OR_RETURN(timer.schedule, String(v, p));
              Result<CronSchedule> cron = CronSchedule::Parse(timer.schedule);
              if (!cron.ok()) return Error(p, cron.status().message());
              has_schedule = true;
              return Status::Ok();
            }
            return Error(p, UnknownKeyProblem(k, kTimerTriggerKeys));
          }));
    }
    if (!has_interval && !has_schedule) {
      return Error(path, fmt::format("needs an interval or a schedule {}", kExample));
    }
    return timer;
  }

  // Aliases let a 1 MiB manifest name one large map thousands of times, and the walk (and the
  // specs) would copy it each time: a billion-laughs bomb. Counting the entries visited and the
  // text taken over the whole manifest bounds the work to a small multiple of what a real
  // manifest needs.
  Status Spend(std::size_t entries, std::size_t bytes) const {
    entries_visited_ += entries;
    bytes_taken_ += bytes;
    if (entries_visited_ > kMaxEntriesVisited || bytes_taken_ > kMaxBytesTaken) {
      return FileError("expands to too much data (do aliases repeat a large part many times?)");
    }
    return Status::Ok();
  }

  std::string_view source_;
  mutable std::size_t entries_visited_ = 0;  // mutable: bookkeeping, not parser state
  mutable std::size_t bytes_taken_ = 0;
};

// Sees parser events only to tell whether a document has content: a trailing "---" makes an
// empty second document, which is harmless and accepted.
class DocumentContent : public YAML::EventHandler {
 public:
  // True if the document just handled held more than a null; resets for the next one.
  bool TakeHadContent() { return std::exchange(had_content_, false); }

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override { had_content_ = true; }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {
    had_content_ = true;
  }
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    had_content_ = true;
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    had_content_ = true;
  }
  void OnMapEnd() override {}

 private:
  bool had_content_ = false;
};

// True if any document but the first has content (the first is the one YAML::Load returns).
// A bounded event pass, not YAML::LoadAll: on some malformed input LoadAll never stops
// producing empty documents (found by fuzz/manifest_fuzz).
bool HasMoreThanOneDocument(const std::string& text) {
  constexpr int kMaxDocuments = 16;
  std::istringstream stream(text);
  YAML::Parser parser(stream);
  DocumentContent content;
  for (int i = 0; i < kMaxDocuments && parser.HandleNextDocument(content); ++i) {
    if (content.TakeHadContent() && i > 0) return true;
  }
  return false;
}

}  // namespace

std::string_view FilterName(const FilterSpec& filter) {
  struct Namer {
    std::string_view operator()(const RangeFilterSpec&) const { return "range"; }
    std::string_view operator()(const DeadbandFilterSpec&) const { return "deadband"; }
    std::string_view operator()(const EwmaFilterSpec&) const { return "ewma"; }
    std::string_view operator()(const DownsampleFilterSpec&) const { return "downsample"; }
    std::string_view operator()(const RateLimitFilterSpec&) const { return "rate_limit"; }
    std::string_view operator()(const WindowFilterSpec&) const { return "window"; }
  };
  return std::visit(Namer{}, filter);
}

bool IsValidFunctionName(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  auto edge = [](char c) { return IsLower(c) || IsDigit(c); };
  if (!edge(name.front()) || !edge(name.back())) return false;
  return std::all_of(name.begin(), name.end(), [&](char c) { return edge(c) || c == '-'; });
}

Result<std::vector<FunctionSpec>> ParseManifest(std::string_view yaml_text,
                                                std::string_view source) {
  if (yaml_text.size() > kMaxManifestBytes) {
    return InvalidArgument(fmt::format("{}: manifest is {} bytes; the limit is {}", source,
                                       yaml_text.size(), FormatByteSize(kMaxManifestBytes)));
  }
  try {
    std::string text(yaml_text);
    YAML::Node root = YAML::Load(text);
    // Load reads the first document only; a second one would be ignored without a word.
    if (HasMoreThanOneDocument(text)) {
      return InvalidArgument(fmt::format(
          "{}: holds more than one YAML document; put every function under one 'functions:' "
          "map",
          source));
    }
    return ManifestParser(source).Parse(root);
  } catch (const YAML::DeepRecursion& e) {
    // yaml-cpp reports its nesting guard as "bad file"; say what it means.
    return InvalidArgument(fmt::format("{}: line {}, column {}: nested too deeply", source,
                                       e.mark.line + 1, e.mark.column + 1));
  } catch (const YAML::ParserException& e) {
    if (e.mark.is_null()) return InvalidArgument(fmt::format("{}: {}", source, e.msg));
    // yaml-cpp counts lines and columns from 0; editors count from 1.
    return InvalidArgument(fmt::format("{}: line {}, column {}: {}", source, e.mark.line + 1,
                                       e.mark.column + 1, e.msg));
  } catch (const YAML::Exception& e) {
    return InvalidArgument(fmt::format("{}: {}", source, e.msg));
  } catch (const std::exception& e) {
    return InvalidArgument(fmt::format("{}: cannot be read: {}", source, e.what()));
  } catch (...) {
    return InvalidArgument(fmt::format("{}: cannot be read", source));
  }
}

}  // namespace wisp
