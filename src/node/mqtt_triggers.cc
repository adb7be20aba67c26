#include "node/mqtt_triggers.h"

#include <mosquitto.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <condition_variable>
#include <filesystem>
#include <functional>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

namespace wisp {

namespace {

std::string DefaultClientId() {
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') return "wisp-node";
  return fmt::format("wisp-{}", host);
}

// Counts deliveries still running for one QoS 1 message.
class Pending {
 public:
  explicit Pending(int count) : count_(count) {}
  void Done() {
    std::lock_guard lock(mu_);
    if (--count_ == 0) cv_.notify_all();
  }
  // False if the clock passed `give_up_at_ns` (steady clock; 0 = never) first.
  bool Wait(const std::atomic<std::int64_t>& give_up_at_ns) {
    std::unique_lock lock(mu_);
    while (count_ > 0) {
      const std::int64_t deadline = give_up_at_ns.load();
      if (deadline != 0 && std::chrono::steady_clock::now().time_since_epoch().count() > deadline) {
        return false;
      }
      cv_.wait_for(lock, std::chrono::milliseconds(100));
    }
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int count_;
};

}  // namespace

MqttTriggers::MqttTriggers(const MqttConfig& config, NodeServices& services,
                           std::vector<Shard*> shards)
    : config_(config), services_(services), shards_(std::move(shards)) {}

MqttTriggers::~MqttTriggers() {
  if (collector_id_ >= 0) services_.metrics->RemoveCollector(collector_id_);
  Stop();
}

Result<std::unique_ptr<MqttTriggers>> MqttTriggers::Create(const MqttConfig& config,
                                                           NodeServices& services,
                                                           std::vector<Shard*> shards) {
  std::unique_ptr<MqttTriggers> triggers(new MqttTriggers(config, services, std::move(shards)));
  MqttOptions options;
  options.url = config.broker;
  options.client_id = config.client_id.empty() ? DefaultClientId() : config.client_id;
  options.username = config.username;
  options.password = config.password;
  options.ca_file = config.ca_file;
  options.cert_file = config.cert_file;
  options.key_file = config.key_file;
  if (config.journal) {
    ASSIGN_OR_RETURN(
        triggers->journal_,
        MqttJournal::Open(
            (std::filesystem::path(services.config->data_dir) / "mqtt-journal").string(),
            static_cast<int>(triggers->shards_.size()), config.journal_sync));
  }
  MqttTriggers* self = triggers.get();
  ASSIGN_OR_RETURN(triggers->connection_,
                   MqttConnection::Create(
                       options, [self](const MqttMessage& message) { self->OnMessage(message); }));
  if (config.outbox) {
    OutboxOptions outbox_options;
    outbox_options.dir = (std::filesystem::path(services.config->data_dir) / "outbox").string();
    outbox_options.sync = config.journal_sync;
    outbox_options.max_bytes = config.outbox_max_bytes;
    outbox_options.broker = triggers->connection_->url().ToString();
    OutboxTransport transport;
    MqttConnection* connection = triggers->connection_.get();
    transport.connected = [connection] { return connection->connected(); };
    transport.publish = [connection](std::string_view topic, std::string_view payload,
                                     std::string_view content_type, int qos, bool retain,
                                     int* mid) {
      return connection->Publish(topic, payload, qos, retain, content_type, mid);
    };
    ASSIGN_OR_RETURN(triggers->outbox_, ActionOutbox::Open(outbox_options, std::move(transport)));
    triggers->connection_->SetPublishedHandler(
        [self](int mid, int reason_code) { self->outbox_->OnPublished(mid, reason_code); });
  }
  triggers->collector_id_ = services.metrics->AddCollector([self](std::string& out) {
    const MqttConnection& c = *self->connection_;
    AppendMetricFamily(out, "wisp_mqtt_connected", "gauge",
                       "1 while the node is connected to its MQTT broker.");
    fmt::format_to(std::back_inserter(out), "wisp_mqtt_connected {}\n", c.connected() ? 1 : 0);
    AppendMetricFamily(out, "wisp_mqtt_messages_received_total", "counter",
                       "MQTT messages received from the broker.");
    fmt::format_to(std::back_inserter(out), "wisp_mqtt_messages_received_total {}\n", c.received());
    AppendMetricFamily(out, "wisp_mqtt_messages_published_total", "counter",
                       "MQTT messages handed to the broker connection (actions, dead letters).");
    fmt::format_to(std::back_inserter(out), "wisp_mqtt_messages_published_total {}\n",
                   c.published());
    const ActionOutbox* outbox = self->outbox_.get();
    if (outbox == nullptr) return;
    AppendMetricFamily(out, "wisp_outbox_pending_messages", "gauge",
                       "Emitted MQTT messages in the outbox, not yet acknowledged by the broker.");
    fmt::format_to(std::back_inserter(out), "wisp_outbox_pending_messages {}\n",
                   outbox->pending_messages());
    AppendMetricFamily(out, "wisp_outbox_pending_bytes", "gauge",
                       "Bytes of the outbox's pending messages (limit mqtt.outbox_max_bytes).");
    fmt::format_to(std::back_inserter(out), "wisp_outbox_pending_bytes {}\n",
                   outbox->pending_bytes());
    AppendMetricFamily(out, "wisp_outbox_replayed_total", "counter",
                       "Queued emits sent after a broker outage or a restart.");
    fmt::format_to(std::back_inserter(out), "wisp_outbox_replayed_total {}\n", outbox->replayed());
    AppendMetricFamily(out, "wisp_outbox_rejected_total", "counter",
                       "Emits refused because the outbox was full, or dropped as unsendable.");
    fmt::format_to(std::back_inserter(out), "wisp_outbox_rejected_total {}\n", outbox->rejected());
  });
  return triggers;
}

Status MqttTriggers::Start() {
  auto unfinished = std::make_shared<std::vector<JournalEntry>>();
  if (journal_) *unfinished = journal_->Recover();
  // Once connected: first the emits waiting in the outbox (the last run's included), then what
  // the last run acknowledged and did not finish (so that the actions it emits go behind them),
  // before any new message; journaled again so that a crash now loses nothing either.
  if (journal_ || outbox_) {
    connection_->SetConnectedHandler([this, unfinished] {
      if (outbox_) outbox_->OnConnected();
      if (unfinished->empty()) return;
      spdlog::info("mqtt: running {} message(s) acknowledged but not handled by the last run",
                   unfinished->size());
      for (JournalEntry& entry : *unfinished) {
        Dispatch(std::make_shared<const MqttDelivery>(std::move(entry.delivery)), &entry.functions);
      }
      unfinished->clear();
      journal_->DropRecovered();
    });
  }
  return connection_->Start();
}

namespace {
constexpr std::chrono::milliseconds kOutboxStopWait{2000};
}  // namespace

void MqttTriggers::Stop(std::chrono::milliseconds wait_for_running) {
  // A QoS 1 message being run is waited for (its shards are still running) so that it is
  // acknowledged; only a function stuck past `wait_for_running` is given up on.
  give_up_at_ns_ = (std::chrono::steady_clock::now() + wait_for_running).time_since_epoch().count();
  // Emits the broker has not acknowledged yet would be sent again by the next run (at least
  // once); a clean stop waits a little for their PUBACKs so that a restart sends no duplicates.
  if (outbox_ && !outbox_->WaitUntilSent(std::min(wait_for_running, kOutboxStopWait))) {
    spdlog::info("mqtt outbox: stopping with {} message(s) unacknowledged; the next run sends them",
                 outbox_->pending_messages());
  }
  if (connection_) connection_->Stop();
}

void MqttTriggers::Sync() {
  std::set<std::tuple<std::string, int, std::string>> wanted;
  for (const auto& [name, fn] : *services_.catalog->Snapshot()) {
    for (const MqttTriggerSpec& trigger : fn->spec->mqtt_triggers) {
      wanted.emplace(trigger.topic, trigger.qos, trigger.group);
    }
  }
  std::lock_guard lock(sync_mu_);
  for (const auto& [topic, qos, group] : subscribed_) {
    if (!wanted.contains({topic, qos, group})) (void)connection_->Unsubscribe(topic, group);
  }
  for (const auto& [topic, qos, group] : wanted) {
    if (subscribed_.contains({topic, qos, group})) continue;
    if (Status s = connection_->Subscribe(topic, qos, group); !s.ok()) {
      spdlog::error("mqtt: cannot subscribe to {}: {}", topic, s.message());
    }
  }
  subscribed_ = std::move(wanted);
}

void MqttTriggers::OnMessage(const MqttMessage& message) {
  auto delivery = std::make_shared<MqttDelivery>();
  delivery->topic = std::string(message.topic);
  delivery->payload = std::string(message.payload);
  delivery->content_type = std::string(message.content_type);
  delivery->qos = message.qos;
  delivery->retain = message.retain;
  delivery->received_at = std::chrono::system_clock::now();
  Dispatch(std::move(delivery));
}

void MqttTriggers::Dispatch(std::shared_ptr<const MqttDelivery> delivery,
                            const std::vector<std::string>* only) {
  if (const std::uint64_t generation = services_.catalog->generation();
      generation != catalog_generation_ || !catalog_) {
    catalog_ = services_.catalog->Snapshot();
    catalog_generation_ = generation;
  }
  struct Target {
    const std::string* function;
    std::size_t trigger;  // the first of its mqtt triggers that matched
    int shard;
  };
  std::vector<Target> targets;
  const int topic_shard =
      static_cast<int>(std::hash<std::string>{}(delivery->topic) % shards_.size());
  for (const auto& [name, fn] : *catalog_) {
    if (only != nullptr && std::find(only->begin(), only->end(), name) == only->end()) continue;
    const auto& triggers = fn->spec->mqtt_triggers;
    for (std::size_t t = 0; t < triggers.size(); ++t) {
      bool match = false;
      if (mosquitto_topic_matches_sub(triggers[t].topic.c_str(), delivery->topic.c_str(), &match) ==
              MOSQ_ERR_SUCCESS &&
          match) {
        // Filter state keyed by a payload field spans topics, so it lives on one shard per
        // function; otherwise the key is the topic and the topic's shard has it all.
        const bool keyed_by_field = !triggers[t].filters.empty() && !triggers[t].key.empty();
        const int shard = keyed_by_field
                              ? static_cast<int>(std::hash<std::string>{}(name) % shards_.size())
                              : topic_shard;
        targets.push_back({&name, t, shard});
        break;
      }
    }
  }
  if (targets.empty()) return;

  // QoS 1: journaled (one entry per shard the message goes to, naming that shard's functions),
  // then acknowledged when this returns; each shard marks its entry done after its functions
  // ran. Without the journal (or when the disk refuses) this thread waits instead.
  const bool at_least_once = delivery->qos > 0;
  auto pending = std::make_shared<Pending>(static_cast<int>(targets.size()));
  bool journaled = at_least_once && journal_ != nullptr;
  std::sort(targets.begin(), targets.end(),
            [](const Target& a, const Target& b) { return a.shard < b.shard; });
  for (std::size_t begin = 0; begin < targets.size();) {
    std::size_t end = begin;
    while (end < targets.size() && targets[end].shard == targets[begin].shard) ++end;
    const int shard_index = targets[begin].shard;
    Shard* shard = shards_[static_cast<std::size_t>(shard_index)];
    std::uint64_t seq = 0;
    if (journaled) {
      std::vector<std::string> functions;
      for (std::size_t i = begin; i < end; ++i) functions.push_back(*targets[i].function);
      auto appended = journal_->Append(shard_index, *delivery, functions);
      if (appended.ok()) {
        seq = *appended;
      } else {
        spdlog::error("{}; running the message before acknowledging it",
                      appended.status().message());
        journaled = false;
      }
    }
    auto group_left = std::make_shared<std::atomic<int>>(static_cast<int>(end - begin));
    for (std::size_t i = begin; i < end; ++i) {
      boost::asio::post(
          shard->io(), [shard, function = *targets[i].function, trigger = targets[i].trigger,
                        delivery, pending, group_left, seq, shard_index, journal = journal_.get()] {
            shard->DeliverMqtt(function, trigger, *delivery);
            pending->Done();
            if (group_left->fetch_sub(1) == 1 && seq != 0 && journal->MarkDone(shard_index, seq)) {
              boost::asio::post(shard->io(),
                                [journal, shard_index] { journal->FlushDone(shard_index); });
            }
          });
    }
    begin = end;
  }
  if (!at_least_once) return;
  // Flow control: past max_backlog journaled messages, wait as if there were no journal, so
  // the broker holds what the shards cannot take yet.
  const bool wait = !journaled || journal_->backlog() > config_.max_backlog;
  if (wait && !pending->Wait(give_up_at_ns_)) {
    spdlog::warn("mqtt: stopped before a QoS 1 message on {} was handled; {}", delivery->topic,
                 journaled ? "it runs at the next start" : "the broker keeps it");
  }
}

Status MqttTriggers::Publish(std::string_view topic, std::string_view payload,
                             const EmitOptions& options) {
  const std::string_view content_type = LooksLikeJson(payload) ? "application/json" : "";
  if (outbox_) return outbox_->Emit(topic, payload, content_type, options.qos, options.retain);
  return connection_->Publish(topic, payload, options.qos, options.retain, content_type);
}

void MqttTriggers::PublishDeadLetter(const std::string& function, const MqttDelivery& delivery,
                                     const Status& why) {
  if (config_.dead_letter_topic.empty()) return;
  nlohmann::json record = {{"function", function},
                           {"topic", delivery.topic},
                           {"reason", why.message()},
                           {"payload", delivery.payload}};
  (void)connection_->Publish(config_.dead_letter_topic,
                             record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                             1, false, "application/json");
}

}  // namespace wisp
