// One MQTT 5 client connection to a broker, driven by a network thread of its own.
//
// Nothing here blocks the caller on the network: Start() starts the connection's network
// thread, which connects (non-blocking TCP connect; name resolution blocks only that thread),
// runs libmosquitto's loop (mosquitto_loop: reads, writes, keepalive), and when the broker is
// down or the connection drops, waits reconnect_min, then twice that, and so on up to
// reconnect_max, and tries again, for as long as the connection lives. Subscribe() and
// Publish() hand a packet to that thread.
//
// Why not mosquitto_loop_start? Measured with libmosquitto 2.0.11: if the very first connect
// fails at once (broker down: connection refused), loop_start's thread waits for a state change
// that never comes and never retries (eclipse/mosquitto issue #1903). By its source, its loop
// also ends for good on errors it deems fatal (TLS, protocol), and its reconnect delays are
// whole seconds. Our thread does what loop_start's does (mosquitto_threaded_set, then
// mosquitto_loop over and over) without those gaps.
//
// Threads: every public method may be called from any thread. The MessageHandler runs on the
// network thread, one message at a time, and must not call Stop() or destroy the connection.
//
// QoS 1 acknowledgement (measured with 2.0.11; tests/integration/mqtt_connection_test.cc keeps
// measuring it): libmosquitto queues the PUBACK for an incoming QoS 1 message *before* it calls
// the message callback (eclipse/mosquitto issue #2884). In threaded mode (which we set) a queued
// packet is written to the socket only by the network thread, and that thread is busy running
// the handler, so the PUBACK leaves the process only after the handler returns: a node that
// dies inside the handler has not acknowledged the message, and the broker delivers it again
// (DUP set) when the same client id reconnects with clean_start = false. A handler that stores
// the message durably before it returns therefore gets at-least-once delivery across a crash
// of the node. Unthreaded, libmosquitto writes the PUBACK at once and the same crash loses the
// message (measured too). Not claimed for QoS 2, whose PUBREC follows other rules.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "mqtt/mqtt_url.h"
#include "wisp/status.h"

struct mosquitto;
struct mosquitto_message;
struct mqtt5__property;

namespace wisp {

struct MqttOptions {
  std::string url;        // mqtt://host:port or mqtts://host:port (see ParseMqttUrl)
  std::string client_id;  // required when clean_start is false (it names the session)
  std::string username, password;
  // TLS (mqtts only). Without ca_file the system's trusted CAs are used (/etc/ssl/certs when a
  // client certificate is given). cert_file and key_file (a client certificate) go together.
  std::string ca_file, cert_file, key_file;
  std::chrono::seconds keepalive{30};  // 5 s .. 65535 s (libmosquitto refuses less than 5)
  // Delay between connect attempts: reconnect_min, doubling up to reconnect_max; back to
  // reconnect_min once the broker has accepted a connection.
  std::chrono::milliseconds reconnect_min{250}, reconnect_max{10000};
  // false: persistent session, so the broker keeps our subscriptions and queues QoS 1 messages
  // while we are down (for session_expiry after a disconnect).
  bool clean_start = false;
  // MQTT 5 Session Expiry Interval, sent when clean_start is false: how long the broker keeps
  // the session after the connection drops. Without it an MQTT 5 session ends with the network
  // connection, whatever clean_start says. The broker may lower it.
  std::chrono::seconds session_expiry{std::chrono::hours(24)};
};

// An incoming message. The views point into libmosquitto's buffers and are valid only during
// the handler call: copy what must outlive it.
struct MqttMessage {
  std::string_view topic;
  std::string_view payload;
  int qos = 0;
  bool retain = false;
  std::string_view content_type;  // MQTT 5 Content Type property; empty when absent
  int mid = 0;                    // packet id (0 for QoS 0)
};

// Runs on the network thread. For QoS 1 the broker is acknowledged after it returns (see
// above). Exceptions are caught and logged: the message then counts as handled.
using MessageHandler = std::function<void(const MqttMessage&)>;

class MqttConnection {
 public:
  // Checks the options (URL, client id, keepalive, TLS files) and creates the client; does not
  // connect. InvalidArgument for bad options.
  static Result<std::unique_ptr<MqttConnection>> Create(const MqttOptions& options,
                                                        MessageHandler on_message);
  ~MqttConnection();  // Stop()s
  MqttConnection(const MqttConnection&) = delete;
  MqttConnection& operator=(const MqttConnection&) = delete;

  // Starts the network thread, which connects and keeps reconnecting until Stop(); returns at
  // once. The broker may be down. Internal if already started or if no thread can be made.
  Status Start();
  // Sends DISCONNECT if connected (the session stays on the broker when clean_start is false)
  // and joins the network thread. Idempotent; Start() may be called again afterwards. Prompt:
  // at most ~2 s spent on sending DISCONNECT, plus a name lookup if one is in progress. Not
  // from the MessageHandler (ignored there, with an error logged).
  void Stop();

  // Subscribes to `topic_filter` ("plant/+/pump/#") at `qos` (0..2); with `share_group`, to the
  // shared subscription "$share/<group>/<filter>", so that the broker gives each message to one
  // member of the group. The subscription is remembered and sent again after every
  // (re)connect, because a broker may or may not have kept it. Works while disconnected (it is
  // sent on connect). InvalidArgument for a bad filter, group or QoS; OK means "requested":
  // a broker's refusal (SUBACK failure) is logged and kept as last_error().
  Status Subscribe(std::string topic_filter, int qos, std::string share_group = "");
  // Forgets the subscription and unsubscribes if connected. OK if it was not subscribed.
  Status Unsubscribe(std::string topic_filter, std::string share_group = "");

  // Publishes a message; with `content_type`, sets the MQTT 5 Content Type property.
  // Unavailable when not connected (nothing is queued). OK means libmosquitto has queued the
  // message for the network thread, not that the broker has it: nothing here survives a crash
  // of this process (the node's action outbox, src/node/action_outbox.h, does). With `mid`, sets
  // it to the packet id that the published handler reports once the broker acknowledged a
  // QoS 1/2 message. libmosquitto keeps a QoS 1/2 message that it has taken across a reconnect
  // and sends it again (same packet id) after the next CONNACK.
  Status Publish(std::string_view topic, std::string_view payload, int qos, bool retain,
                 std::string_view content_type = {}, int* mid = nullptr);

  // Called on the network thread after each accepted CONNACK (subscriptions re-sent), before
  // any message of that connection is handled; may Publish, not Stop/Subscribe. Set it before
  // Start().
  void SetConnectedHandler(std::function<void()> on_connected) {
    on_connected_ = std::move(on_connected);
  }

  // Called on the network thread when the broker acknowledged packet `mid` (PUBACK for QoS 1,
  // PUBCOMP for QoS 2; for QoS 0 when the packet was written); `reason_code` >= 0x80 is the
  // broker's refusal. Must not block, Stop or Subscribe; may Publish. Set it before Start().
  void SetPublishedHandler(std::function<void(int mid, int reason_code)> on_published) {
    on_published_ = std::move(on_published);
  }

  // State for metrics and health checks.
  bool connected() const { return connected_.load(std::memory_order_acquire); }
  std::uint64_t received() const { return received_.load(std::memory_order_relaxed); }
  std::uint64_t published() const { return published_.load(std::memory_order_relaxed); }
  std::string last_error() const;  // empty if none yet
  const MqttUrl& url() const { return url_; }
  const std::string& client_id() const { return options_.client_id; }

 private:
  MqttConnection(MqttOptions options, MqttUrl url, MessageHandler on_message);
  Status Configure();
  Status SetConnectProperties();
  void NetworkLoop();                                     // the network thread
  bool WaitBeforeRetry(std::chrono::milliseconds delay);  // false: Stop() was called
  bool stop_requested() const;
  void SubscribeLocked(const std::string& full_filter, int qos);  // requires mu_
  void SetLastError(std::string text);

  // libmosquitto callbacks (network thread); `obj` is the MqttConnection.
  static void OnConnect(mosquitto*, void* obj, int rc, int flags, const mqtt5__property* props);
  static void OnDisconnect(mosquitto*, void* obj, int rc, const mqtt5__property* props);
  static void OnMessage(mosquitto*, void* obj, const mosquitto_message* message,
                        const mqtt5__property* props);
  static void OnSubscribe(mosquitto*, void* obj, int mid, int count, const int* granted,
                          const mqtt5__property* props);
  static void OnPublish(mosquitto*, void* obj, int mid, int reason_code,
                        const mqtt5__property* props);
  static void OnLog(mosquitto*, void* obj, int level, const char* text);

  const MqttOptions options_;
  const MqttUrl url_;
  const MessageHandler on_message_;
  std::function<void()> on_connected_;
  std::function<void(int, int)> on_published_;
  mosquitto* mosq_ = nullptr;
  std::thread network_thread_;  // started/joined by Start/Stop, which hold lifecycle_mu_
  std::atomic<std::thread::id> network_thread_id_{};  // to refuse Stop() from the handler
  std::mutex lifecycle_mu_;                           // serialises Start and Stop

  std::atomic<bool> connected_{false};
  std::atomic<bool> accepted_since_retry_{false};  // a CONNACK OK since the last back-off
  std::atomic<std::uint64_t> received_{0};
  std::atomic<std::uint64_t> published_{0};

  mutable std::mutex mu_;
  std::condition_variable stop_cv_;  // wakes the back-off wait on Stop()
  // Guarded by mu_. connected_ also changes only with mu_ held, so that a Subscribe() either
  // sees "connected" and subscribes itself, or its entry is seen by OnConnect's re-subscribe:
  // never neither, never both.
  std::map<std::string, int> subscriptions_;  // full filter ($share/... included) -> QoS
  bool stopping_ = false;
  std::string last_error_;
  std::string lib_error_;  // libmosquitto's latest error log line, for the next report
};

}  // namespace wisp
