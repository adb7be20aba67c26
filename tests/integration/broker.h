// A real mosquitto broker for integration tests, on 127.0.0.1 and a port of its own.
#pragma once

#include <sys/types.h>

#include <string>

#include "harness.h"
#include "wisp/status.h"

namespace wisp::testing {

class Broker {
 public:
  Broker() = default;
  ~Broker();  // kills the broker if it runs
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // Runs /usr/sbin/mosquitto (anonymous, no persistence, every log type) and waits up to 10 s
  // until it accepts TCP connections. The first Start picks a free loopback port; later ones
  // reuse it, so clients can reconnect to the same URL.
  Status Start();
  // Kills the broker (SIGKILL: the tests want an outage, not a polite goodbye) and waits.
  void Stop();
  // Stop, then Start on the same port. The broker forgets its sessions (persistence false).
  Status Restart();

  // Before Start: keep sessions and queued QoS 1 messages in <temp dir>/mosquitto.db across
  // a StopGracefully() and the next Start (mosquitto writes the file when it exits cleanly).
  void UsePersistence() { persistence_ = true; }
  // SIGTERM and wait: the broker disconnects its clients and, with persistence, saves them.
  void StopGracefully();
  // SIGSTOP: the broker keeps its connections open but reads and answers nothing (a hung
  // broker); Stop() still kills it.
  void Freeze();

  // Before Start: serve MQTT over TLS with this certificate and key; when `client_ca_file` is
  // given, require client certificates that chain to it.
  void UseTls(std::string cert_file, std::string key_file, std::string client_ca_file = "");

  bool running() const { return pid_ > 0; }
  int port() const { return port_; }
  // mqtt://127.0.0.1:<port>, or mqtts:// with UseTls.
  std::string url() const;
  std::string Log() const;  // what the broker printed

 private:
  TempDir dir_;
  int port_ = 0;
  pid_t pid_ = -1;
  std::string tls_cert_, tls_key_, tls_client_ca_;
  bool persistence_ = false;
};

}  // namespace wisp::testing
