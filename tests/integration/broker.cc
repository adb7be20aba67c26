#include "broker.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

extern char** environ;

namespace wisp::testing {
namespace {

constexpr const char* kMosquittoPath = "/usr/sbin/mosquitto";

sockaddr_in Loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

// A port the kernel had free a moment ago (bind port 0, read it, close). Another process could
// take it before mosquitto binds; Start() then fails with the broker's log, which is rare
// enough for tests.
Result<int> FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return IoError(std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr = Loopback(0);
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int err = errno;
    ::close(fd);
    return IoError(std::string("cannot find a free port: ") + std::strerror(err));
  }
  ::close(fd);
  return static_cast<int>(ntohs(addr.sin_port));
}

bool Accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr = Loopback(port);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

Broker::~Broker() { Stop(); }

void Broker::UseTls(std::string cert_file, std::string key_file, std::string client_ca_file) {
  tls_cert_ = std::move(cert_file);
  tls_key_ = std::move(key_file);
  tls_client_ca_ = std::move(client_ca_file);
}

std::string Broker::url() const {
  return (tls_cert_.empty() ? "mqtt://127.0.0.1:" : "mqtts://127.0.0.1:") + std::to_string(port_);
}

std::string Broker::Log() const { return ReadTextFile(dir_.path() + "/mosquitto.log"); }

Status Broker::Start() {
  if (running()) return Status::Ok();
  if (port_ == 0) {
    ASSIGN_OR_RETURN(port_, FreeLoopbackPort());
  }
  const std::string conf_path = dir_.path() + "/mosquitto.conf";
  // Start-up errors go to stdout, the rest to the log file (flushed line by line, unlike
  // stdout into a file); both end up in the same file.
  const std::string log_path = dir_.path() + "/mosquitto.log";
  std::string conf = "listener " + std::to_string(port_) +
                     " 127.0.0.1\n"
                     "allow_anonymous true\n"
                     "log_dest file " +
                     log_path +
                     "\n"
                     "log_type all\n"
                     "log_timestamp_format %H:%M:%S\n";
  conf += persistence_
              ? "persistence true\npersistence_location " + dir_.path() + "/\nautosave_interval 0\n"
              : "persistence false\n";
  if (!tls_cert_.empty()) {
    conf += "certfile " + tls_cert_ + "\nkeyfile " + tls_key_ + "\n";
    if (!tls_client_ca_.empty()) {
      conf += "cafile " + tls_client_ca_ + "\nrequire_certificate true\n";
    }
  }
  // As root mosquitto would switch to the "mosquitto" user, who cannot read our temp dir.
  if (::geteuid() == 0) conf += "user root\n";
  dir_.Write("mosquitto.conf", conf);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<std::string> args = {kMosquittoPath, "-c", conf_path};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int rc = posix_spawn(&pid_, kMosquittoPath, &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    pid_ = -1;
    return Internal(std::string("cannot spawn ") + kMosquittoPath + ": " + std::strerror(rc));
  }

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return Unavailable("mosquitto exited during start-up:\n" + Log());
    }
    if (Accepts(port_)) return Status::Ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  Stop();
  return DeadlineExceeded("mosquitto did not accept connections in 10 s:\n" + Log());
}

void Broker::Stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

void Broker::StopGracefully() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

void Broker::Freeze() {
  if (pid_ > 0) ::kill(pid_, SIGSTOP);
}

Status Broker::Restart() {
  Stop();
  return Start();
}

}  // namespace wisp::testing
