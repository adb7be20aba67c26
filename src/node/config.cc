#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "archive/archive_format.h"
#include "http/tls.h"
#include "node/function_scaler.h"
#include "node/http_actions.h"
#include "node/node.h"
#include "scheduling/autoscaler.h"
#include "wisp/keepalive_policy.h"
#include "wisp/units.h"

namespace wisp {

std::string DefaultDataDir() {
  if (const char* home = std::getenv("WISP_HOME"); home && *home) return home;
  if (const char* home = std::getenv("HOME"); home && *home && access(home, W_OK) == 0) {
    return (std::filesystem::path(home) / ".wisp" / "node").string();
  }
  return ".wisp";
}

std::string TokenPath(const std::string& data_dir) {
  return (std::filesystem::path(data_dir) / "token").string();
}

std::string NodeInfoPath(const std::string& data_dir) {
  return (std::filesystem::path(data_dir) / "node.json").string();
}

Status ParseListenAddress(const std::string& text, NodeConfig* config) {
  std::string host = config->listen_host;
  std::string port_text = text;
  if (auto colon = text.rfind(':'); colon != std::string::npos) {
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    if (host.empty()) host = "0.0.0.0";
  }
  unsigned port = 0;
  auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || ptr != port_text.data() + port_text.size() || port > 65535) {
    return InvalidArgument(
        fmt::format("listen address '{}' is not HOST:PORT (e.g. 127.0.0.1:8080)", text));
  }
  config->listen_host = host;
  config->listen_port = static_cast<std::uint16_t>(port);
  return Status::Ok();
}

namespace {

// Walks a YAML map, refusing keys the caller does not consume, so that a typo in a config
// is an error instead of a silently ignored setting.
class ConfigReader {
 public:
  ConfigReader(const YAML::Node& node, std::string path, std::string source)
      : node_(node), path_(std::move(path)), source_(std::move(source)) {}

  Status Error(std::string_view key, std::string_view problem) const {
    return InvalidArgument(fmt::format("{}: {}{}: {}", source_, path_, key, problem));
  }

  template <typename Fn>
  Status Scalar(const char* key, Fn&& apply) {
    seen_.push_back(key);
    YAML::Node value = node_[key];
    if (!value) return Status::Ok();
    if (!value.IsScalar()) return Error(key, "expected a single value");
    Status s = apply(value.Scalar());
    return s.ok() ? s : Error(key, s.message());
  }

  Status Duration(const char* key, std::chrono::milliseconds* out) {
    return Scalar(key, [&](const std::string& v) -> Status {
      ASSIGN_OR_RETURN(*out, ParseDuration(v));
      return Status::Ok();
    });
  }
  template <typename Int>
  Status Bytes(const char* key, Int* out) {
    return Scalar(key, [&](const std::string& v) -> Status {
      ASSIGN_OR_RETURN(std::uint64_t bytes, ParseByteSize(v));
      if (bytes == 0 || bytes > std::numeric_limits<Int>::max()) {
        return InvalidArgument(fmt::format("'{}' is out of range", v));
      }
      *out = static_cast<Int>(bytes);
      return Status::Ok();
    });
  }
  Status String(const char* key, std::string* out) {
    return Scalar(key, [&](const std::string& v) {
      *out = v;
      return Status::Ok();
    });
  }
  Status Int(const char* key, int* out, int min, int max) {
    return Scalar(key, [&](const std::string& v) -> Status {
      int n = 0;
      auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
      if (ec != std::errc() || ptr != v.data() + v.size() || n < min || n > max) {
        return InvalidArgument(fmt::format("'{}' is not an integer in [{}, {}]", v, min, max));
      }
      *out = n;
      return Status::Ok();
    });
  }
  Status Bool(const char* key, bool* out) {
    return Scalar(key, [&](const std::string& v) -> Status {
      if (v == "true" || v == "yes" || v == "on") {
        *out = true;
      } else if (v == "false" || v == "no" || v == "off") {
        *out = false;
      } else {
        return InvalidArgument(fmt::format("'{}' is not true or false", v));
      }
      return Status::Ok();
    });
  }
  Status Number(const char* key, double* out) {
    return Scalar(key, [&](const std::string& v) -> Status {
      double n = 0;
      auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
      if (ec != std::errc() || ptr != v.data() + v.size() || !std::isfinite(n)) {
        return InvalidArgument(fmt::format("'{}' is not a number", v));
      }
      *out = n;
      return Status::Ok();
    });
  }
  // Every key of this map as a number (a map of options whose names the caller checks).
  Status EachNumber(std::map<std::string, double, std::less<>>* out) {
    out->clear();
    for (const auto& kv : node_) {
      const std::string key = kv.first.as<std::string>();
      double value = 0;
      RETURN_IF_ERROR(Number(key.c_str(), &value));
      (*out)[key] = value;
    }
    return Status::Ok();
  }
  Status StringList(const char* key, std::vector<std::string>* out) {
    seen_.push_back(key);
    YAML::Node value = node_[key];
    if (!value) return Status::Ok();
    if (!value.IsSequence()) return Error(key, "expected a list");
    out->clear();
    for (const auto& item : value) {
      if (!item.IsScalar()) return Error(key, "expected a list of strings");
      out->push_back(item.Scalar());
    }
    return Status::Ok();
  }
  Result<ConfigReader> Child(const char* key) {
    seen_.push_back(key);
    YAML::Node value = node_[key];
    if (value && !value.IsMap()) return Error(key, "expected a map");
    return ConfigReader(value ? value : YAML::Node(YAML::NodeType::Map), path_ + key + ".",
                        source_);
  }
  Status CheckNoUnknownKeys() const {
    for (const auto& kv : node_) {
      std::string key = kv.first.as<std::string>();
      if (std::find(seen_.begin(), seen_.end(), key) == seen_.end()) {
        return Error(key, "unknown key");
      }
    }
    return Status::Ok();
  }

 private:
  YAML::Node node_;
  std::string path_;
  std::string source_;
  std::vector<std::string> seen_;
};

Status ReadArchiveConfig(ConfigReader& archive, ArchiveConfig* a) {
  RETURN_IF_ERROR(archive.Scalar("enabled", [&](const std::string& v) -> Status {
    if (v != "true" && v != "false")
      return InvalidArgument(fmt::format("'{}' is not true or false", v));
    a->enabled = v == "true";
    return Status::Ok();
  }));
  // Ages reach days ("7d"), which node durations elsewhere do not need.
  auto age = [&](const char* key, std::chrono::milliseconds* out) {
    return archive.Scalar(key, [&](const std::string& v) -> Status {
      ASSIGN_OR_RETURN(*out, ParseArchiveDuration(v));
      if (out->count() < 1000) return InvalidArgument(fmt::format("'{}' is less than 1s", v));
      return Status::Ok();
    });
  };
  RETURN_IF_ERROR(archive.Bytes("segment_bytes", &a->segment_bytes));
  RETURN_IF_ERROR(age("segment_age", &a->segment_age));
  RETURN_IF_ERROR(archive.Bytes("retention_bytes", &a->retention_bytes));
  RETURN_IF_ERROR(age("retention_age", &a->retention_age));
  RETURN_IF_ERROR(archive.Scalar("payload_preview_bytes", [&](const std::string& v) -> Status {
    ASSIGN_OR_RETURN(a->payload_preview_bytes, ParseByteSize(v));  // 0 keeps no payload bytes
    if (a->payload_preview_bytes > kMaxPreviewBytes) {
      return InvalidArgument(fmt::format("'{}' is more than the most kept, 64Ki", v));
    }
    return Status::Ok();
  }));
  if (a->segment_bytes < 4096) {
    return archive.Error("segment_bytes", "must be at least 4Ki");
  }
  if (a->retention_bytes < a->segment_bytes) {
    return archive.Error("retention_bytes", "must be at least segment_bytes");
  }
  return archive.CheckNoUnknownKeys();
}

Status ReadSchedulingConfig(ConfigReader& scheduling, SchedulingConfig* s) {
  RETURN_IF_ERROR(scheduling.String("keepalive", &s->keepalive));
  ASSIGN_OR_RETURN(ConfigReader options, scheduling.Child("options"));
  RETURN_IF_ERROR(options.EachNumber(&s->options));
  RETURN_IF_ERROR(scheduling.Duration("stable_window", &s->stable_window));
  RETURN_IF_ERROR(scheduling.Duration("panic_window", &s->panic_window));
  RETURN_IF_ERROR(scheduling.Number("panic_threshold", &s->panic_threshold));
  RETURN_IF_ERROR(scheduling.Number("max_scale_up_rate", &s->max_scale_up_rate));
  RETURN_IF_ERROR(scheduling.Number("max_scale_down_rate", &s->max_scale_down_rate));
  RETURN_IF_ERROR(scheduling.Duration("tick", &s->tick));
  if (s->tick.count() <= 0) return scheduling.Error("tick", "must be > 0");
  // Refused here rather than when the first shard starts: the same checks the shards' policy
  // and autoscalers make.
  RegisterBuiltinKeepAlivePolicies();
  if (auto policy = CreateKeepAlivePolicy(s->keepalive, s->options); !policy.ok()) {
    return scheduling.Error("keepalive", policy.status().message());
  }
  AutoscalerConfig autoscaler = AutoscalerConfigOf(*s);
  autoscaler.max_instances = 1;  // the per-function fields come from manifests
  if (Status valid = ValidateAutoscalerConfig(autoscaler); !valid.ok()) {
    return scheduling.Error("autoscaler", valid.message());
  }
  return scheduling.CheckNoUnknownKeys();
}

Status ReadConfig(ConfigReader& root, NodeConfig* c) {
  RETURN_IF_ERROR(
      root.Scalar("listen", [&](const std::string& v) { return ParseListenAddress(v, c); }));
  RETURN_IF_ERROR(root.String("data_dir", &c->data_dir));
  RETURN_IF_ERROR(root.Int("shards", &c->shards, 0, 256));
  RETURN_IF_ERROR(root.Scalar("log_level", [&](const std::string& v) -> Status {
    if (v != "debug" && v != "info" && v != "warn" && v != "error") {
      return InvalidArgument(fmt::format("'{}' is not one of debug, info, warn, error", v));
    }
    c->log_level = v;
    return Status::Ok();
  }));
  RETURN_IF_ERROR(root.Duration("drain_timeout", &c->drain_timeout));
  ASSIGN_OR_RETURN(ConfigReader http, root.Child("http"));
  RETURN_IF_ERROR(http.Bytes("max_body", &c->http.max_body_bytes));
  RETURN_IF_ERROR(http.Bytes("max_deploy_body", &c->http.max_deploy_body_bytes));
  RETURN_IF_ERROR(http.Bytes("max_header", &c->http.max_header_bytes));
  RETURN_IF_ERROR(http.Duration("header_timeout", &c->http.header_timeout));
  RETURN_IF_ERROR(http.Duration("body_timeout", &c->http.body_timeout));
  RETURN_IF_ERROR(http.Duration("idle_timeout", &c->http.idle_timeout));
  RETURN_IF_ERROR(http.CheckNoUnknownKeys());
  ASSIGN_OR_RETURN(ConfigReader state, root.Child("state"));
  RETURN_IF_ERROR(state.String("backend", &c->state_backend));
  RETURN_IF_ERROR(state.Scalar("sync", [&](const std::string& v) -> Status {
    if (v != "normal" && v != "full") return InvalidArgument("expected normal or full");
    c->state_sync_full = v == "full";
    return Status::Ok();
  }));
  RETURN_IF_ERROR(state.CheckNoUnknownKeys());
  ASSIGN_OR_RETURN(ConfigReader mqtt, root.Child("mqtt"));
  RETURN_IF_ERROR(mqtt.String("broker", &c->mqtt.broker));
  RETURN_IF_ERROR(mqtt.String("client_id", &c->mqtt.client_id));
  RETURN_IF_ERROR(mqtt.String("username", &c->mqtt.username));
  RETURN_IF_ERROR(mqtt.String("password", &c->mqtt.password));
  RETURN_IF_ERROR(mqtt.String("ca_file", &c->mqtt.ca_file));
  RETURN_IF_ERROR(mqtt.String("cert_file", &c->mqtt.cert_file));
  RETURN_IF_ERROR(mqtt.String("key_file", &c->mqtt.key_file));
  RETURN_IF_ERROR(mqtt.String("dead_letter_topic", &c->mqtt.dead_letter_topic));
  RETURN_IF_ERROR(mqtt.Bool("journal", &c->mqtt.journal));
  RETURN_IF_ERROR(mqtt.Bool("journal_sync", &c->mqtt.journal_sync));
  int max_backlog = static_cast<int>(c->mqtt.max_backlog);
  RETURN_IF_ERROR(mqtt.Int("max_backlog", &max_backlog, 1, 10'000'000));
  c->mqtt.max_backlog = max_backlog;
  RETURN_IF_ERROR(mqtt.Bool("outbox", &c->mqtt.outbox));
  RETURN_IF_ERROR(mqtt.Bytes("outbox_max_bytes", &c->mqtt.outbox_max_bytes));
  if (c->mqtt.outbox_max_bytes < 4096) {
    return mqtt.Error("outbox_max_bytes", "must be at least 4Ki");
  }
  RETURN_IF_ERROR(mqtt.CheckNoUnknownKeys());
  ASSIGN_OR_RETURN(ConfigReader actions, root.Child("actions"));
  RETURN_IF_ERROR(actions.StringList("http_allow", &c->actions.http_allow));
  for (const std::string& entry : c->actions.http_allow) {
    if (Status s = ParseHttpAllowEntry(entry).status(); !s.ok()) {
      return actions.Error("http_allow", s.message());
    }
  }
  RETURN_IF_ERROR(actions.Duration("http_timeout", &c->actions.http_timeout));
  RETURN_IF_ERROR(actions.Int("http_attempts", &c->actions.http_attempts, 1, 10));
  RETURN_IF_ERROR(actions.Int("http_queue", &c->actions.http_queue, 1, 1'000'000));
  RETURN_IF_ERROR(actions.Int("http_workers", &c->actions.http_workers, 1, 64));
  ASSIGN_OR_RETURN(ConfigReader tls, actions.Child("tls"));
  RETURN_IF_ERROR(tls.String("ca_file", &c->actions.tls.ca_file));
  RETURN_IF_ERROR(tls.String("cert_file", &c->actions.tls.cert_file));
  RETURN_IF_ERROR(tls.String("key_file", &c->actions.tls.key_file));
  RETURN_IF_ERROR(tls.CheckNoUnknownKeys());
  // Load the files now, so that a wrong path stops the node at start, not its first https POST.
  if (!c->actions.tls.empty()) {
    if (Status s = HttpTlsContext::Create(c->actions.tls).status(); !s.ok()) {
      return actions.Error("tls", s.message());
    }
  }
  RETURN_IF_ERROR(actions.CheckNoUnknownKeys());
  ASSIGN_OR_RETURN(ConfigReader async, root.Child("async"));
  RETURN_IF_ERROR(async.Int("max_pending", &c->async.max_pending, 1, 1'000'000));
  RETURN_IF_ERROR(async.Duration("result_ttl", &c->async.result_ttl));
  RETURN_IF_ERROR(async.CheckNoUnknownKeys());
  ASSIGN_OR_RETURN(ConfigReader archive, root.Child("archive"));
  RETURN_IF_ERROR(ReadArchiveConfig(archive, &c->archive));
  ASSIGN_OR_RETURN(ConfigReader scheduling, root.Child("scheduling"));
  RETURN_IF_ERROR(ReadSchedulingConfig(scheduling, &c->scheduling));
  return root.CheckNoUnknownKeys();
}

}  // namespace

Result<NodeConfig> ParseNodeConfig(const std::string& yaml_text, const std::string& source) {
  NodeConfig config;
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return InvalidArgument(fmt::format("{}: line {}, column {}: {}", source, e.mark.line + 1,
                                       e.mark.column + 1, e.msg));
  }
  if (root.IsNull()) return config;  // an empty file means all defaults
  if (!root.IsMap()) return InvalidArgument(fmt::format("{}: expected a map of settings", source));
  try {
    ConfigReader reader(root, "", source);
    RETURN_IF_ERROR(ReadConfig(reader, &config));
  } catch (const YAML::Exception& e) {
    return InvalidArgument(fmt::format("{}: {}", source, e.what()));
  }
  return config;
}

Result<NodeConfig> LoadNodeConfig(const std::string& path) {
  if (path.empty()) return NodeConfig{};
  std::ifstream in(path);
  if (!in) return NotFound(fmt::format("cannot read config file '{}'", path));
  std::stringstream text;
  text << in.rdbuf();
  return ParseNodeConfig(text.str(), path);
}

}  // namespace wisp
