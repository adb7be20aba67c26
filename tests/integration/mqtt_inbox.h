// Test helpers for MQTT: an inbox that collects what a connection receives.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mqtt/mqtt_connection.h"

namespace wisp::testing {

using std::chrono::seconds;

struct Received {
  std::string topic, payload, content_type;
  int qos = 0;
  bool retain = false;
};

// Collects messages from the mosquitto thread for the test thread.
class Inbox {
 public:
  MessageHandler Handler() {
    return [this](const MqttMessage& m) {
      std::lock_guard lock(mu_);
      messages_.push_back({std::string(m.topic), std::string(m.payload),
                           std::string(m.content_type), m.qos, m.retain});
      cv_.notify_all();
    };
  }
  std::vector<Received> Snapshot() const {
    std::lock_guard lock(mu_);
    return messages_;
  }
  // Messages on `topic`, in arrival order.
  std::vector<Received> On(const std::string& topic) const {
    std::vector<Received> out;
    for (auto& m : Snapshot()) {
      if (m.topic == topic) out.push_back(m);
    }
    return out;
  }
  // Waits (generously) until `pred` holds for the messages so far.
  bool WaitFor(const std::function<bool(const std::vector<Received>&)>& pred,
               std::chrono::milliseconds timeout = seconds(20)) const {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return pred(messages_); });
  }
  bool WaitForTopic(const std::string& topic, seconds timeout = seconds(20)) const {
    return WaitFor(
        [&](const std::vector<Received>& ms) {
          for (auto& m : ms) {
            if (m.topic == topic) return true;
          }
          return false;
        },
        timeout);
  }

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::vector<Received> messages_;
};

inline bool WaitUntil(const std::function<bool()>& pred, seconds timeout = seconds(15)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

// A clean-session test client of the broker at `url`, subscribed to `filters` (QoS 1), whose
// messages go to `inbox`, started and connected; an error says which step failed.
inline Result<std::unique_ptr<MqttConnection>> ConnectTestClient(
    const std::string& url, const std::string& client_id, Inbox& inbox,
    const std::vector<std::string>& filters) {
  MqttOptions options;
  options.url = url;
  options.client_id = client_id;
  options.clean_start = true;
  ASSIGN_OR_RETURN(std::unique_ptr<MqttConnection> client,
                   MqttConnection::Create(options, inbox.Handler()));
  for (const std::string& filter : filters) RETURN_IF_ERROR(client->Subscribe(filter, 1));
  RETURN_IF_ERROR(client->Start());
  if (!WaitUntil([&] { return client->connected(); })) {
    return Unavailable("test client: no connection to " + url);
  }
  return client;
}

// The node subscribes in the background after a deploy: publishes `payload` on `topic` once a
// second until the inbox holds a message (the function's answer), for up to 20 s.
inline bool PublishUntilAnswered(MqttConnection& client, const Inbox& inbox,
                                 const std::string& topic, const std::string& payload) {
  return WaitUntil(
      [&] {
        (void)client.Publish(topic, payload, 1, false);
        return inbox.WaitFor([](const auto& ms) { return !ms.empty(); }, seconds(1));
      },
      seconds(20));
}

}  // namespace wisp::testing
