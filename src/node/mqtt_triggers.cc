#include "node/mqtt_triggers.h"

#include <mosquitto.h>
#include <unistd.h>

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
  // True for the last one.
  bool Done() {
    std::lock_guard lock(mu_);
    if (--count_ > 0) return false;
    cv_.notify_all();
    return true;
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
  });
  return triggers;
}

Status MqttTriggers::Start() {
  if (journal_) {
    // What the last run acknowledged and did not finish runs first, once connected (so that
    // the actions it emits can be published), before any new message; journaled again so
    // that a crash now loses nothing either.
    auto unfinished = std::make_shared<std::vector<MqttDelivery>>(journal_->Recover());
    connection_->SetConnectedHandler([this, unfinished] {
      if (unfinished->empty()) return;
      spdlog::info("mqtt: running {} message(s) acknowledged but not handled by the last run",
                   unfinished->size());
      for (MqttDelivery& delivery : *unfinished) {
        Dispatch(std::make_shared<const MqttDelivery>(std::move(delivery)));
      }
      unfinished->clear();
      journal_->DropRecovered();
    });
  }
  return connection_->Start();
}

void MqttTriggers::Stop(std::chrono::milliseconds wait_for_running) {
  // A QoS 1 message being run is waited for (its shards are still running) so that it is
  // acknowledged; only a function stuck past `wait_for_running` is given up on.
  give_up_at_ns_ = (std::chrono::steady_clock::now() + wait_for_running).time_since_epoch().count();
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

void MqttTriggers::Dispatch(std::shared_ptr<const MqttDelivery> delivery) {
  if (const std::uint64_t generation = services_.catalog->generation();
      generation != catalog_generation_ || !catalog_) {
    catalog_ = services_.catalog->Snapshot();
    catalog_generation_ = generation;
  }
  std::vector<const std::string*> targets;
  for (const auto& [name, fn] : *catalog_) {
    for (const MqttTriggerSpec& trigger : fn->spec->mqtt_triggers) {
      bool match = false;
      if (mosquitto_topic_matches_sub(trigger.topic.c_str(), delivery->topic.c_str(), &match) ==
              MOSQ_ERR_SUCCESS &&
          match) {
        targets.push_back(&name);
        break;
      }
    }
  }
  if (targets.empty()) return;

  const int shard_index =
      static_cast<int>(std::hash<std::string>{}(delivery->topic) % shards_.size());
  Shard* shard = shards_[static_cast<std::size_t>(shard_index)];
  const bool at_least_once = delivery->qos > 0;
  // QoS 1: journaled, then acknowledged when this returns; the shard marks it done after the
  // functions ran. Without the journal (or when the disk refuses) this thread waits instead.
  std::uint64_t seq = 0;
  if (at_least_once && journal_) {
    auto appended = journal_->Append(shard_index, *delivery);
    if (appended.ok()) {
      seq = *appended;
    } else {
      spdlog::error("{}; running the message before acknowledging it", appended.status().message());
    }
  }
  auto pending = std::make_shared<Pending>(static_cast<int>(targets.size()));
  for (const std::string* name : targets) {
    boost::asio::post(shard->io(), [shard, function = *name, delivery, pending, seq, shard_index,
                                    journal = journal_.get()] {
      shard->DeliverMqtt(function, *delivery);
      if (pending->Done() && seq != 0) journal->MarkDone(shard_index, seq);
    });
  }
  if (!at_least_once) return;
  // Flow control: past max_backlog journaled messages, wait as if there were no journal, so
  // the broker holds what the shards cannot take yet.
  const bool wait = seq == 0 || journal_->backlog() > config_.max_backlog;
  if (wait && !pending->Wait(give_up_at_ns_)) {
    spdlog::warn("mqtt: stopped before a QoS 1 message on {} was handled; {}", delivery->topic,
                 seq != 0 ? "it runs at the next start" : "the broker keeps it");
  }
}

Status MqttTriggers::Publish(std::string_view topic, std::string_view payload,
                             const EmitOptions& options) {
  return connection_->Publish(topic, payload, options.qos, options.retain,
                              LooksLikeJson(payload) ? "application/json" : "");
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
