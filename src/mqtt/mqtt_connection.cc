#include "mqtt/mqtt_connection.h"

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <exception>
#include <system_error>
#include <utility>

namespace wisp {
namespace {

// How long Stop() lets the network thread try to send DISCONNECT.
constexpr std::chrono::seconds kStopFlushTimeout{2};

// The system's trusted CAs, hashed for OpenSSL (Debian: ca-certificates).
constexpr const char* kSystemCaDir = "/etc/ssl/certs";

// mosquitto_lib_init once per process. Never cleaned up: mosquitto_lib_cleanup only releases
// OpenSSL and socket state that the process exit releases anyway, and calling it while any
// connection lives would break that connection.
int LibInit() {
  static std::once_flag once;
  static int rc = MOSQ_ERR_SUCCESS;
  std::call_once(once, [] { rc = mosquitto_lib_init(); });
  return rc;
}

// libmosquitto's texts end in a full stop, which reads badly inside our messages.
std::string Text(const char* s) {
  std::string out = s != nullptr ? s : "unknown";
  while (!out.empty() && out.back() == '.') out.pop_back();
  return out;
}

std::string MosqError(int rc) { return Text(mosquitto_strerror(rc)); }
std::string ReasonText(int reason_code) { return Text(mosquitto_reason_string(reason_code)); }

// What a failed publish/subscribe call means to the caller.
Status CallError(int rc, const std::string& what, const MqttUrl& url) {
  switch (rc) {
    case MOSQ_ERR_NO_CONN:
    case MOSQ_ERR_CONN_LOST:
      return Unavailable(what + ": not connected to the broker at " + url.ToString());
    case MOSQ_ERR_INVAL:
    case MOSQ_ERR_MALFORMED_UTF8:
    case MOSQ_ERR_PAYLOAD_SIZE:
    case MOSQ_ERR_OVERSIZE_PACKET:
    case MOSQ_ERR_QOS_NOT_SUPPORTED:
    case MOSQ_ERR_RETAIN_NOT_SUPPORTED:
    case MOSQ_ERR_DUPLICATE_PROPERTY:
    case MOSQ_ERR_NOT_SUPPORTED:
      return InvalidArgument(what + ": " + MosqError(rc));
    case MOSQ_ERR_NOMEM:
      return ResourceExhausted(what + ": " + MosqError(rc));
    default:
      return Unavailable(what + ": " + MosqError(rc));
  }
}

bool ValidShareGroup(const std::string& group) {
  return !group.empty() && group.find_first_of("/+#") == std::string::npos;
}

Result<std::string> FullFilter(const std::string& filter, const std::string& group) {
  if (filter.empty()) return InvalidArgument("empty topic filter");
  if (mosquitto_sub_topic_check(filter.c_str()) != MOSQ_ERR_SUCCESS) {
    return InvalidArgument("'" + filter + "' is not a valid topic filter");
  }
  if (group.empty()) return filter;
  if (!ValidShareGroup(group)) {
    return InvalidArgument("share group '" + group + "' must be non-empty without '/', '+', '#'");
  }
  return "$share/" + group + "/" + filter;
}

}  // namespace

Result<std::unique_ptr<MqttConnection>> MqttConnection::Create(const MqttOptions& options,
                                                               MessageHandler on_message) {
  ASSIGN_OR_RETURN(MqttUrl url, ParseMqttUrl(options.url));
  if (!on_message) return InvalidArgument("MQTT connection needs a message handler");
  if (!options.clean_start && options.client_id.empty()) {
    return InvalidArgument(
        "MQTT client_id is required when clean_start is false: it names the session the "
        "broker keeps");
  }
  if (options.client_id.size() > 65535) return InvalidArgument("MQTT client_id is too long");
  if (options.keepalive < std::chrono::seconds(5) ||
      options.keepalive > std::chrono::seconds(65535)) {
    return InvalidArgument("MQTT keepalive must be from 5 s to 65535 s");
  }
  if (options.reconnect_min.count() <= 0 || options.reconnect_max < options.reconnect_min) {
    return InvalidArgument("MQTT reconnect delays need 0 < reconnect_min <= reconnect_max");
  }
  if (options.session_expiry.count() < 0 || options.session_expiry.count() > UINT32_MAX) {
    return InvalidArgument("MQTT session_expiry must be from 0 s to 4294967295 s");
  }
  if (options.cert_file.empty() != options.key_file.empty()) {
    return InvalidArgument("MQTT cert_file and key_file must be given together");
  }
  if (!url.tls &&
      (!options.ca_file.empty() || !options.cert_file.empty() || !options.key_file.empty())) {
    return InvalidArgument("TLS files are given but the broker URL " + url.ToString() +
                           " is not mqtts://");
  }
  if (options.username.empty() && !options.password.empty()) {
    return InvalidArgument("MQTT password given without a username");
  }
  if (int rc = LibInit(); rc != MOSQ_ERR_SUCCESS) {
    return Internal("cannot initialise libmosquitto: " + MosqError(rc));
  }

  std::unique_ptr<MqttConnection> conn(
      new MqttConnection(options, std::move(url), std::move(on_message)));
  RETURN_IF_ERROR(conn->Configure());
  return conn;
}

MqttConnection::MqttConnection(MqttOptions options, MqttUrl url, MessageHandler on_message)
    : options_(std::move(options)), url_(std::move(url)), on_message_(std::move(on_message)) {}

MqttConnection::~MqttConnection() {
  Stop();
  if (mosq_ != nullptr) mosquitto_destroy(mosq_);
}

Status MqttConnection::Configure() {
  // For MQTT 5, libmosquitto's "clean_session" argument is the Clean Start flag.
  mosq_ = mosquitto_new(options_.client_id.empty() ? nullptr : options_.client_id.c_str(),
                        options_.clean_start, this);
  if (mosq_ == nullptr) {
    return Internal(std::string("cannot create an MQTT client: ") + std::strerror(errno));
  }
  auto check = [](int rc, const char* what) -> Status {
    if (rc == MOSQ_ERR_SUCCESS) return Status::Ok();
    return InvalidArgument(std::string(what) + ": " + MosqError(rc));
  };
  RETURN_IF_ERROR(
      check(mosquitto_int_option(mosq_, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5), "MQTT 5"));
  // Small packets (a PUBACK, then an action) must not wait for the broker's ACK (Nagle):
  // bench/mqtt_pipeline measured 1-4 ms added to the median at 1k events/s without this.
  RETURN_IF_ERROR(check(mosquitto_int_option(mosq_, MOSQ_OPT_TCP_NODELAY, 1), "TCP_NODELAY"));
  if (!options_.username.empty()) {
    RETURN_IF_ERROR(check(
        mosquitto_username_pw_set(mosq_, options_.username.c_str(),
                                  options_.password.empty() ? nullptr : options_.password.c_str()),
        "MQTT username"));
  }
  if (url_.tls) {
    // Without a CA file, the system's CAs; that option alone turns TLS on. mosquitto_tls_set
    // refuses to run without a CA file or directory, so a client certificate with the system's
    // CAs names Debian's CA directory as well.
    if (options_.ca_file.empty()) {
      RETURN_IF_ERROR(check(mosquitto_int_option(mosq_, MOSQ_OPT_TLS_USE_OS_CERTS, 1),
                            "MQTT TLS with the system's CAs"));
    }
    auto opt = [](const std::string& s) { return s.empty() ? nullptr : s.c_str(); };
    int rc = MOSQ_ERR_SUCCESS;
    if (!options_.ca_file.empty() || !options_.cert_file.empty()) {
      // libmosquitto checks here that the files can be opened, so a typo fails Create().
      rc = mosquitto_tls_set(mosq_, opt(options_.ca_file),
                             options_.ca_file.empty() ? kSystemCaDir : nullptr,
                             opt(options_.cert_file), opt(options_.key_file), nullptr);
    }
    if (rc != MOSQ_ERR_SUCCESS) {
      return InvalidArgument("MQTT TLS files (ca '" + options_.ca_file + "', cert '" +
                             options_.cert_file + "', key '" + options_.key_file +
                             "'): " + MosqError(rc));
    }
  }
  // Publish/Subscribe from other threads only queue packets; the network thread writes them.
  // This is also what holds back a QoS 1 PUBACK until the handler has returned (see header).
  RETURN_IF_ERROR(check(mosquitto_threaded_set(mosq_, true), "MQTT threads"));
  mosquitto_connect_v5_callback_set(mosq_, &MqttConnection::OnConnect);
  mosquitto_disconnect_v5_callback_set(mosq_, &MqttConnection::OnDisconnect);
  mosquitto_message_v5_callback_set(mosq_, &MqttConnection::OnMessage);
  mosquitto_subscribe_v5_callback_set(mosq_, &MqttConnection::OnSubscribe);
  mosquitto_publish_v5_callback_set(mosq_, &MqttConnection::OnPublish);
  mosquitto_log_callback_set(mosq_, &MqttConnection::OnLog);
  return Status::Ok();
}

// libmosquitto 2.0 has no non-blocking connect that takes CONNECT properties: only the blocking
// mosquitto_connect_bind_v5 stores them (for every later reconnect, too). It stores them before
// it validates its other arguments, so a call without a host stores our properties and returns
// MOSQ_ERR_INVAL without touching the network; connect_async then sends them. The persistent
// session tests (PersistentSessionKeepsQos1MessagesWhileAway, Qos1...Redelivered...) fail if
// this stops holding.
Status MqttConnection::SetConnectProperties() {
  mosquitto_property* props = nullptr;
  int rc = MOSQ_ERR_SUCCESS;
  if (!options_.clean_start) {
    rc = mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
                                      static_cast<std::uint32_t>(options_.session_expiry.count()));
  }
  if (rc == MOSQ_ERR_SUCCESS) {
    rc = mosquitto_connect_bind_v5(mosq_, /*host=*/nullptr, url_.port,
                                   static_cast<int>(options_.keepalive.count()), nullptr, props);
  }
  mosquitto_property_free_all(&props);
  if (rc != MOSQ_ERR_INVAL) {
    return Internal("cannot set the MQTT CONNECT properties: " + MosqError(rc));
  }
  return Status::Ok();
}

Status MqttConnection::Start() {
  std::lock_guard lifecycle(lifecycle_mu_);
  if (network_thread_.joinable()) {
    return Internal("MQTT connection to " + url_.ToString() + " already started");
  }
  RETURN_IF_ERROR(SetConnectProperties());
  {
    std::lock_guard lock(mu_);
    stopping_ = false;
  }
  accepted_since_retry_.store(false);
  try {
    network_thread_ = std::thread([this] { NetworkLoop(); });
  } catch (const std::system_error& e) {
    return Internal(std::string("cannot start the MQTT network thread: ") + e.what());
  }
  return Status::Ok();
}

void MqttConnection::Stop() {
  if (std::this_thread::get_id() == network_thread_id_.load()) {
    // Joining ourselves would deadlock (or throw); the header forbids it.
    spdlog::error("mqtt: Stop() called from the message handler; ignored");
    return;
  }
  std::lock_guard lifecycle(lifecycle_mu_);
  if (!network_thread_.joinable()) return;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  // Connected: queues a DISCONNECT (reason 0: the broker keeps the session and drops the will)
  // and wakes the network thread, which sends it and closes. Not connected: sets the client's
  // state to "disconnecting"; the thread sees stop_requested() and returns.
  mosquitto_disconnect_v5(mosq_, MQTT_RC_NORMAL_DISCONNECTION, nullptr);
  network_thread_.join();
  {
    std::lock_guard lock(mu_);
    connected_.store(false, std::memory_order_release);
  }
}

bool MqttConnection::stop_requested() const {
  std::lock_guard lock(mu_);
  return stopping_;
}

bool MqttConnection::WaitBeforeRetry(std::chrono::milliseconds delay) {
  std::unique_lock lock(mu_);
  return !stop_cv_.wait_for(lock, delay, [this] { return stopping_; });
}

void MqttConnection::NetworkLoop() {
  network_thread_id_.store(std::this_thread::get_id());
  pthread_setname_np(pthread_self(), "wisp-mqtt");
  spdlog::info("mqtt: connecting to {} as '{}'", url_.ToString(), options_.client_id);
  const int loop_timeout_ms = static_cast<int>(options_.keepalive.count()) * 1000;
  std::chrono::milliseconds delay = options_.reconnect_min;
  bool first = true;
  int failures = 0;  // consecutive attempts that did not reach a CONNACK
  while (!stop_requested()) {
    {
      std::lock_guard lock(mu_);
      lib_error_.clear();  // only this attempt's errors explain its failure
    }
    // Non-blocking TCP connect; the CONNECT goes out from mosquitto_loop once the socket is up.
    int rc = first ? mosquitto_connect_async(mosq_, url_.host.c_str(), url_.port,
                                             static_cast<int>(options_.keepalive.count()))
                   : mosquitto_reconnect_async(mosq_);
    first = false;
    bool disconnect_sent = false;
    std::chrono::steady_clock::time_point flush_deadline;
    while (rc == MOSQ_ERR_SUCCESS) {
      const bool stopping = stop_requested();
      if (stopping) {
        // Not (yet) accepted by the broker: nothing to say goodbye to; mosquitto_destroy or the
        // next connect closes the socket.
        if (!connected()) break;
        if (!disconnect_sent) {
          // Stop() queued a DISCONNECT already unless it ran before this socket existed; a
          // second one is dropped when the first closes the connection.
          mosquitto_disconnect_v5(mosq_, MQTT_RC_NORMAL_DISCONNECTION, nullptr);
          disconnect_sent = true;
          flush_deadline = std::chrono::steady_clock::now() + kStopFlushTimeout;
        } else if (std::chrono::steady_clock::now() > flush_deadline) {
          break;  // the broker does not read; give up on a clean goodbye
        }
      }
      rc = mosquitto_loop(mosq_, stopping ? 100 : loop_timeout_ms, 1);
    }
    if (stop_requested()) break;
    if (accepted_since_retry_.exchange(false)) {
      // We were connected; OnDisconnect has said why it ended.
      delay = options_.reconnect_min;
      failures = 0;
    } else {
      // One warning per outage, then quietly (mosquitto_loop returns MOSQ_ERR_INVAL for a
      // socket number above FD_SETSIZE: it uses select()).
      std::string detail;
      {
        std::lock_guard lock(mu_);
        detail.swap(lib_error_);
      }
      const std::string text = "cannot reach the broker at " + url_.ToString() + ": " +
                               MosqError(rc) + (detail.empty() ? "" : " (" + detail + ")") +
                               "; retrying in " + std::to_string(delay.count()) + " ms";
      if (++failures == 1) {
        spdlog::warn("mqtt: {}", text);
      } else {
        spdlog::debug("mqtt: {} (attempt {})", text, failures);
      }
      SetLastError(text);
    }
    if (!WaitBeforeRetry(delay)) break;
    delay = std::min(delay * 2, options_.reconnect_max);
  }
}

Status MqttConnection::Subscribe(std::string topic_filter, int qos, std::string share_group) {
  if (qos < 0 || qos > 2) return InvalidArgument("MQTT QoS must be 0, 1 or 2");
  ASSIGN_OR_RETURN(std::string full, FullFilter(topic_filter, share_group));
  std::lock_guard lock(mu_);
  subscriptions_[full] = qos;
  if (connected()) SubscribeLocked(full, qos);
  // Not connected: OnConnect subscribes it.
  return Status::Ok();
}

void MqttConnection::SubscribeLocked(const std::string& full_filter, int qos) {
  int mid = 0;
  int rc = mosquitto_subscribe_v5(mosq_, &mid, full_filter.c_str(), qos, 0, nullptr);
  if (rc != MOSQ_ERR_SUCCESS) {
    // Lost the connection meanwhile: the next OnConnect subscribes again.
    spdlog::warn("mqtt: cannot subscribe to '{}' yet: {}", full_filter, MosqError(rc));
    return;
  }
  spdlog::debug("mqtt: subscribing to '{}' at QoS {} (mid {})", full_filter, qos, mid);
}

Status MqttConnection::Unsubscribe(std::string topic_filter, std::string share_group) {
  ASSIGN_OR_RETURN(std::string full, FullFilter(topic_filter, share_group));
  std::lock_guard lock(mu_);
  if (subscriptions_.erase(full) == 0) return Status::Ok();
  if (!connected()) return Status::Ok();  // the next connect does not subscribe it again
  int rc = mosquitto_unsubscribe_v5(mosq_, nullptr, full.c_str(), nullptr);
  if (rc != MOSQ_ERR_SUCCESS) return CallError(rc, "unsubscribe from '" + full + "'", url_);
  return Status::Ok();
}

Status MqttConnection::Publish(std::string_view topic, std::string_view payload, int qos,
                               bool retain, std::string_view content_type, int* mid) {
  if (qos < 0 || qos > 2) return InvalidArgument("MQTT QoS must be 0, 1 or 2");
  if (payload.size() > static_cast<std::size_t>(INT_MAX)) {
    return InvalidArgument("MQTT payload too large");
  }
  if (!connected()) return Unavailable("not connected to the broker at " + url_.ToString());
  const std::string topic_z(topic);  // libmosquitto wants NUL-terminated strings
  mosquitto_property* props = nullptr;
  if (!content_type.empty()) {
    int rc = mosquitto_property_add_string(&props, MQTT_PROP_CONTENT_TYPE,
                                           std::string(content_type).c_str());
    if (rc != MOSQ_ERR_SUCCESS) {
      mosquitto_property_free_all(&props);
      return CallError(rc, "content type '" + std::string(content_type) + "'", url_);
    }
  }
  int rc = mosquitto_publish_v5(mosq_, mid, topic_z.c_str(), static_cast<int>(payload.size()),
                                payload.data(), qos, retain, props);
  mosquitto_property_free_all(&props);
  if (rc != MOSQ_ERR_SUCCESS) return CallError(rc, "publish to '" + topic_z + "'", url_);
  published_.fetch_add(1, std::memory_order_relaxed);
  return Status::Ok();
}

std::string MqttConnection::last_error() const {
  std::lock_guard lock(mu_);
  return last_error_;
}

void MqttConnection::SetLastError(std::string text) {
  std::lock_guard lock(mu_);
  last_error_ = std::move(text);
}

void MqttConnection::OnConnect(mosquitto*, void* obj, int rc, int flags,
                               const mosquitto_property*) {
  auto* self = static_cast<MqttConnection*>(obj);
  if (rc != 0) {
    // A CONNACK refusal (bad credentials, client id not allowed...); the broker closes the
    // connection and the network thread retries after its back-off.
    const std::string text =
        "broker at " + self->url_.ToString() + " refused the connection: " + ReasonText(rc);
    spdlog::warn("mqtt: {}", text);
    self->SetLastError(text);
    return;
  }
  const bool session_present = (flags & 1) != 0;
  self->accepted_since_retry_.store(true);
  {
    std::lock_guard lock(self->mu_);
    if (self->stopping_) return;  // the network thread is sending DISCONNECT
    self->connected_.store(true, std::memory_order_release);
    spdlog::info("mqtt: connected to {} as '{}' ({} session, {} subscription(s))",
                 self->url_.ToString(), self->options_.client_id,
                 session_present ? "resumed" : "new", self->subscriptions_.size());
    // Subscribe again even when the session was resumed: it costs a packet and is idempotent,
    // whereas trusting the session would lose the filters added while we were disconnected
    // and any the broker dropped.
    for (const auto& [filter, qos] : self->subscriptions_) self->SubscribeLocked(filter, qos);
  }
  // While connected, libmosquitto's log would format two lines per message (malloc and
  // vsnprintf on the network thread) only for us to drop them; errors that matter arrive as
  // disconnects, after which OnDisconnect turns the log back on.
  if (!spdlog::should_log(spdlog::level::debug)) mosquitto_log_callback_set(self->mosq_, nullptr);
  if (self->on_connected_) self->on_connected_();  // outside mu_: it may Publish
}

void MqttConnection::OnDisconnect(mosquitto*, void* obj, int rc, const mosquitto_property*) {
  auto* self = static_cast<MqttConnection*>(obj);
  mosquitto_log_callback_set(self->mosq_, &MqttConnection::OnLog);  // off while connected
  // rc is a libmosquitto error for a network failure, or the reason code of the broker's
  // DISCONNECT (0x80 and up, e.g. "session taken over").
  const std::string reason = rc >= 0x80 ? ReasonText(rc) : MosqError(rc);
  const std::string text =
      "lost the connection to " + self->url_.ToString() + ": " + reason + "; reconnecting";
  bool was_connected, stopping;
  {
    // With connected_, so that whoever sees "not connected" also sees why.
    std::lock_guard lock(self->mu_);
    was_connected = self->connected_.exchange(false, std::memory_order_acq_rel);
    stopping = self->stopping_;
    if (was_connected && !stopping) self->last_error_ = text;
  }
  if (!was_connected) return;  // a connect attempt failed: the network thread reports those
  if (stopping) {
    spdlog::info("mqtt: disconnected from {}", self->url_.ToString());
  } else {
    spdlog::warn("mqtt: {}", text);
  }
}

void MqttConnection::OnMessage(mosquitto*, void* obj, const mosquitto_message* message,
                               const mosquitto_property* props) {
  auto* self = static_cast<MqttConnection*>(obj);
  char* content_type = nullptr;  // malloc'd by libmosquitto
  mosquitto_property_read_string(props, MQTT_PROP_CONTENT_TYPE, &content_type, false);
  MqttMessage m;
  m.topic = message->topic != nullptr ? std::string_view(message->topic) : std::string_view();
  if (message->payload != nullptr && message->payloadlen > 0) {
    m.payload = std::string_view(static_cast<const char*>(message->payload),
                                 static_cast<std::size_t>(message->payloadlen));
  }
  m.qos = message->qos;
  m.retain = message->retain;
  if (content_type != nullptr) m.content_type = content_type;
  m.mid = message->mid;
  self->received_.fetch_add(1, std::memory_order_relaxed);
  // An exception must not unwind through libmosquitto's C frames.
  try {
    self->on_message_(m);
  } catch (const std::exception& e) {
    spdlog::error("mqtt: message handler for '{}' threw: {}", m.topic, e.what());
  } catch (...) {
    spdlog::error("mqtt: message handler for '{}' threw a non-standard exception", m.topic);
  }
  std::free(content_type);
}

void MqttConnection::OnSubscribe(mosquitto*, void* obj, int mid, int count, const int* granted,
                                 const mosquitto_property*) {
  auto* self = static_cast<MqttConnection*>(obj);
  for (int i = 0; i < count; ++i) {
    // MQTT 5 SUBACK: the granted QoS, or a reason code of 0x80 and up for a refusal.
    if (granted[i] >= 0x80) {
      const std::string text = "broker at " + self->url_.ToString() +
                               " refused a subscription (mid " + std::to_string(mid) +
                               "): " + ReasonText(granted[i]);
      spdlog::warn("mqtt: {}", text);
      self->SetLastError(text);
    }
  }
}

void MqttConnection::OnPublish(mosquitto*, void* obj, int mid, int reason_code,
                               const mosquitto_property*) {
  auto* self = static_cast<MqttConnection*>(obj);
  if (!self->on_published_) return;
  try {  // an exception must not unwind through libmosquitto's C frames
    self->on_published_(mid, reason_code);
  } catch (const std::exception& e) {
    spdlog::error("mqtt: published handler for mid {} threw: {}", mid, e.what());
  }
}

void MqttConnection::OnLog(mosquitto*, void* obj, int level, const char* text) {
  // Chatty at every level, and an error repeats on every retry: keep the latest error for the
  // network thread's one warning per outage ("certificate verify failed" says more than "A TLS
  // error occurred") and log everything at debug.
  if (level == MOSQ_LOG_ERR || level == MOSQ_LOG_WARNING) {
    auto* self = static_cast<MqttConnection*>(obj);
    std::lock_guard lock(self->mu_);
    self->lib_error_ = text != nullptr ? text : "";
  }
  spdlog::debug("mqtt: libmosquitto: {}", text != nullptr ? text : "");
}

}  // namespace wisp
