// Test harness: runs the real wispd and wisp binaries in a private temp directory.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cli/http_client.h"
#include "wisp/status.h"

namespace wisp::testing {

// A directory removed with everything in it when the object goes.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  // Writes `contents` to path()/relative, creating parent directories.
  void Write(const std::string& relative, const std::string& contents) const;

 private:
  std::string path_;
};

// One wispd process on 127.0.0.1 with a port the kernel picks (listen port 0); the node
// writes its URL to <data>/node.json, which Start() waits for.
class NodeProcess {
 public:
  NodeProcess(std::string data_dir, std::string log_path);
  ~NodeProcess();  // kills the process if still running

  // Starts wispd with `extra_args` and waits until /healthz answers. `config_yaml`, when not
  // empty, is written to a file and passed with --config.
  Status Start(const std::vector<std::string>& extra_args = {},
               const std::string& config_yaml = "");
  // Sends `signal` and waits for the exit; returns the exit status (or 128+signal).
  int Stop(int signal = 15, std::chrono::seconds timeout = std::chrono::seconds(30));
  void Kill();
  bool running() const { return pid_ > 0; }

  const std::string& url() const { return url_; }
  const std::string& token() const { return token_; }
  const std::string& data_dir() const { return data_dir_; }
  std::string Log() const;  // what wispd printed

  // HTTP to this node. `auth` adds the node token.
  Result<HttpResponse> Request(std::string_view method, std::string_view target,
                               std::string_view body = {}, HttpHeaders headers = {},
                               bool auth = false) const;

 private:
  std::string data_dir_;
  std::string log_path_;
  pid_t pid_ = -1;
  std::string url_;
  std::string token_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs the wisp CLI with `args`; `env` entries are added to (or replace in) the environment.
CommandResult RunCli(const std::vector<std::string>& args,
                     const std::map<std::string, std::string>& env = {},
                     const std::string& stdin_text = "");

std::string SourceDir();  // the repository, for examples/
std::string ReadTextFile(const std::string& path);

// The value of the Prometheus series `name{...}` in a /metrics `body` whose labels include
// `function="<function>"` and, when not empty, `extra_label`; nullopt when there is none.
std::optional<double> FindMetric(const std::string& body, const std::string& name,
                                 const std::string& function, const std::string& extra_label = "");

// Node settings for tests of scale to zero: a fixed keep-alive of 1.2 s and short autoscaler
// windows, so that an idle function loses its instances within seconds.
inline constexpr const char* kScaleToZeroQuicklyConfig = R"yaml(
scheduling:
  keepalive: fixed
  options: { keep_alive_minutes: 0.02 }
  stable_window: 2s
  panic_window: 1s
  tick: 200ms
)yaml";

}  // namespace wisp::testing
