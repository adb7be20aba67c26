// The node: configuration and the entry point that wispd and `wisp up` share.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "http/tls_options.h"
#include "wisp/status.h"

namespace wisp {

struct HttpConfig {
  std::uint64_t max_body_bytes = 1ull << 20;          // invoke bodies (413 above)
  std::uint64_t max_deploy_body_bytes = 32ull << 20;  // deploy bundles
  std::uint32_t max_header_bytes = 16 << 10;
  std::chrono::milliseconds header_timeout{10'000};  // whole request head must arrive in this
  std::chrono::milliseconds body_timeout{30'000};
  std::chrono::milliseconds idle_timeout{60'000};  // keep-alive connection with no request
};

struct MqttConfig {
  std::string broker;     // mqtt://HOST:PORT or mqtts://HOST:PORT; empty: no MQTT triggers
  std::string client_id;  // names the persistent session; empty: "wisp-<hostname>"
  std::string username, password;
  std::string ca_file, cert_file, key_file;  // for mqtts://
  std::string dead_letter_topic;             // malformed payloads are also published here
  // QoS 1 messages are journaled and acknowledged at once (src/node/mqtt_journal.h); off: the
  // network thread waits for the functions before acknowledging.
  bool journal = true;
  bool journal_sync = false;         // fdatasync each entry (power loss), not only write (crashes)
  std::int64_t max_backlog = 10000;  // journaled, unfinished messages before reading pauses
  // Emits are kept in <data>/outbox until the broker has them (src/node/action_outbox.h); off:
  // an emit while disconnected is dropped (logged and counted), QoS 1 lives only in memory.
  bool outbox = true;
  std::uint64_t outbox_max_bytes = 256ull << 20;  // pending emits; past it ctx.emit fails
};

// Where handlers' ctx.http_post and async-invoke callbacks may send, and how (docs/config.md).
struct ActionsConfig {
  // URL prefixes ("http://scada.local:8080/hooks"): a URL is allowed when its host and port are
  // an entry's and its path starts with the entry's path at a '/' boundary. Empty: none.
  std::vector<std::string> http_allow;
  std::chrono::milliseconds http_timeout{10'000};  // per attempt
  int http_attempts = 3;  // transport errors, 429 and 5xx are retried with backoff
  int http_queue = 1000;  // POSTs waiting to be sent; beyond it a POST is refused
  int http_workers = 2;   // threads sending (a slow endpoint holds one)
  // For https:// actions and model functions' https upstreams: CA file (else the system's),
  // client certificate and key (mutual TLS). Verification is always on.
  HttpTlsOptions tls;
};

// Async invocations (POST /v1/functions/{name}/invoke-async).
struct AsyncConfig {
  int max_pending = 1000;                           // accepted, not yet finished; 429 beyond
  std::chrono::milliseconds result_ttl{3'600'000};  // finished results kept for GET /v1/calls
};

// The event archive (src/archive/event_archive.h, docs/config.md).
struct ArchiveConfig {
  bool enabled = true;
  std::uint64_t segment_bytes = 16ull << 20;
  std::chrono::milliseconds segment_age{3'600'000};
  std::uint64_t retention_bytes = 256ull << 20;  // the whole archive, shared by the shards
  std::chrono::milliseconds retention_age{7 * 86'400'000ll};
  std::uint64_t payload_preview_bytes = 256;
};

// How shards scale each function's instances (docs/autoscaling.md, docs/config.md).
struct SchedulingConfig {
  std::string keepalive = "fixed";  // a KeepAlivePolicy name: fixed | hybrid | wisp
  // The policy's numeric options (docs/prewarm.md); empty: its defaults (fixed: 10 minutes).
  std::map<std::string, double, std::less<>> options;
  std::chrono::milliseconds stable_window{60'000};
  std::chrono::milliseconds panic_window{6'000};
  double panic_threshold = 2.0;
  double max_scale_up_rate = 1000;
  double max_scale_down_rate = 2;
  std::chrono::milliseconds tick{1'000};  // how often each shard samples and decides
};

struct NodeConfig {
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 8080;  // 0: pick a free port (written to <data>/node.json)
  std::string data_dir;              // empty: DefaultDataDir()
  int shards = 0;                    // 0: one per core
  HttpConfig http;
  std::string state_backend = "sqlite";
  bool state_sync_full = false;
  MqttConfig mqtt;
  ActionsConfig actions;
  AsyncConfig async;
  ArchiveConfig archive;
  SchedulingConfig scheduling;
  std::string log_level = "info";
  std::chrono::milliseconds drain_timeout{10'000};
  std::vector<std::string> deploy_dirs;  // function directories deployed at start (--deploy)
};

// $WISP_HOME if set, else $HOME/.wisp/node when HOME is set, else ./.wisp.
std::string DefaultDataDir();

// Reads a YAML config file over the embedded defaults (`path` empty: defaults only). Unknown
// keys and bad values are InvalidArgument naming the key.
Result<NodeConfig> LoadNodeConfig(const std::string& path);
Result<NodeConfig> ParseNodeConfig(const std::string& yaml_text, const std::string& source);

// Parses "HOST:PORT" (also ":PORT" and "PORT") into the config.
Status ParseListenAddress(const std::string& text, NodeConfig* config);

// Runs the node until SIGTERM or SIGINT, then drains in-flight calls and returns 0; returns
// non-zero (after printing why) when it cannot start.
int RunNode(const NodeConfig& config);

// Files the node keeps in its data directory, for the CLI to find a local node.
std::string TokenPath(const std::string& data_dir);     // <data>/token
std::string NodeInfoPath(const std::string& data_dir);  // <data>/node.json {"url","pid"}

}  // namespace wisp
