#include "harness.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

extern char** environ;

namespace wisp::testing {
namespace fs = std::filesystem;

std::string SourceDir() { return WISP_SOURCE_DIR; }

std::string ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TempDir::TempDir() {
  std::string templ = (fs::temp_directory_path() / "wisp-test-XXXXXX").string();
  path_ = ::mkdtemp(templ.data());
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void TempDir::Write(const std::string& relative, const std::string& contents) const {
  fs::path target = fs::path(path_) / relative;
  fs::create_directories(target.parent_path());
  std::ofstream(target, std::ios::binary) << contents;
}

namespace {

std::vector<char*> Argv(std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  return argv;
}

std::vector<std::string> Environment(const std::map<std::string, std::string>& extra) {
  std::map<std::string, std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string entry(*e);
    auto eq = entry.find('=');
    if (eq != std::string::npos) env[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  // Tests must never talk to a node of the developer's by accident.
  env.erase("WISP_URL");
  env.erase("WISP_TOKEN");
  env.erase("WISP_HOME");
  for (const auto& [k, v] : extra) env[k] = v;
  std::vector<std::string> out;
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

}  // namespace

NodeProcess::NodeProcess(std::string data_dir, std::string log_path)
    : data_dir_(std::move(data_dir)), log_path_(std::move(log_path)) {}

NodeProcess::~NodeProcess() { Kill(); }

Status NodeProcess::Start(const std::vector<std::string>& extra_args,
                          const std::string& config_yaml) {
  std::vector<std::string> args = {WISPD_PATH, "--listen", "127.0.0.1:0", "--data", data_dir_};
  if (!config_yaml.empty()) {
    const std::string config_path = data_dir_ + ".config.yaml";
    std::ofstream(config_path) << config_yaml;
    args.push_back("--config");
    args.push_back(config_path);
  }
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  fs::remove(fs::path(data_dir_) / "node.json");

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  auto argv = Argv(args);
  auto env_strings = Environment({});
  auto envp = Argv(env_strings);
  int rc = posix_spawn(&pid_, WISPD_PATH, &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    pid_ = -1;
    return Internal(std::string("cannot spawn wispd: ") + std::strerror(rc));
  }

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return Unavailable("wispd exited during start-up:\n" + Log());
    }
    auto info = nlohmann::json::parse(ReadTextFile(data_dir_ + "/node.json"), nullptr, false);
    if (info.is_object() && info["pid"] == pid_ && info["url"].is_string()) {
      url_ = info["url"];
      token_ = ReadTextFile(data_dir_ + "/token");
      while (!token_.empty() && std::isspace(static_cast<unsigned char>(token_.back()))) {
        token_.pop_back();
      }
      auto health = HttpRequest(url_, "GET", "/healthz");
      if (health.ok() && health->status == 200) return Status::Ok();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return DeadlineExceeded("wispd did not become healthy in 30 s:\n" + Log());
}

int NodeProcess::Stop(int signal, std::chrono::seconds timeout) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, signal);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (::waitpid(pid_, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void NodeProcess::Kill() {
  if (pid_ > 0) Stop(SIGKILL);
}

std::string NodeProcess::Log() const { return ReadTextFile(log_path_); }

Result<HttpResponse> NodeProcess::Request(std::string_view method, std::string_view target,
                                          std::string_view body, HttpHeaders headers,
                                          bool auth) const {
  if (auth) headers.emplace_back("Authorization", "Bearer " + token_);
  return HttpRequest(url_, method, target, body, headers);
}

CommandResult RunCli(const std::vector<std::string>& cli_args,
                     const std::map<std::string, std::string>& env, const std::string& stdin_text) {
  TempDir io;
  const std::string out_path = io.path() + "/out", err_path = io.path() + "/err",
                    in_path = io.path() + "/in";
  std::ofstream(in_path) << stdin_text;
  std::vector<std::string> args = {WISP_CLI_PATH};
  args.insert(args.end(), cli_args.begin(), cli_args.end());

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, in_path.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT, 0644);
  auto argv = Argv(args);
  auto env_strings = Environment(env);
  auto envp = Argv(env_strings);
  pid_t pid = -1;
  CommandResult result;
  if (posix_spawn(&pid, WISP_CLI_PATH, &actions, nullptr, argv.data(), envp.data()) == 0) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  posix_spawn_file_actions_destroy(&actions);
  result.out = ReadTextFile(out_path);
  result.err = ReadTextFile(err_path);
  return result;
}

std::optional<double> FindMetric(const std::string& body, const std::string& name,
                                 const std::string& function, const std::string& extra_label) {
  std::istringstream lines(body);
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.starts_with(name + "{")) continue;
    if (line.find("function=\"" + function + "\"") == std::string::npos) continue;
    if (!extra_label.empty() && line.find(extra_label) == std::string::npos) continue;
    return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return std::nullopt;
}

}  // namespace wisp::testing
