#include "node/mqtt_triggers.h"

#include <mosquitto.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <condition_variable>
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

MqttTriggers::~MqttTriggers() { Stop(); }

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
  MqttTriggers* self = triggers.get();
  ASSIGN_OR_RETURN(triggers->connection_,
                   MqttConnection::Create(
                       options, [self](const MqttMessage& message) { self->OnMessage(message); }));
  return triggers;
}

Status MqttTriggers::Start() { return connection_->Start(); }

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
  if (const std::uint64_t generation = services_.catalog->generation();
      generation != catalog_generation_ || !catalog_) {
    catalog_ = services_.catalog->Snapshot();
    catalog_generation_ = generation;
  }
  const std::string topic(message.topic);
  struct Target {
    const std::string* function;
    std::size_t trigger;  // the first of its mqtt triggers that matched
    Shard* shard;
  };
  std::vector<Target> targets;
  Shard* topic_shard = shards_[std::hash<std::string>{}(topic) % shards_.size()];
  for (const auto& [name, fn] : *catalog_) {
    const auto& triggers = fn->spec->mqtt_triggers;
    for (std::size_t t = 0; t < triggers.size(); ++t) {
      bool match = false;
      if (mosquitto_topic_matches_sub(triggers[t].topic.c_str(), topic.c_str(), &match) ==
              MOSQ_ERR_SUCCESS &&
          match) {
        // Filter state keyed by a payload field spans topics, so it lives on one shard per
        // function; otherwise the key is the topic and the topic's shard has it all.
        const bool keyed_by_field = !triggers[t].filters.empty() && !triggers[t].key.empty();
        Shard* shard =
            keyed_by_field ? shards_[std::hash<std::string>{}(name) % shards_.size()] : topic_shard;
        targets.push_back({&name, t, shard});
        break;
      }
    }
  }
  if (targets.empty()) return;

  auto delivery = std::make_shared<MqttDelivery>();
  delivery->topic = topic;
  delivery->payload = std::string(message.payload);
  delivery->content_type = std::string(message.content_type);
  delivery->qos = message.qos;
  delivery->retain = message.retain;
  delivery->received_at = std::chrono::system_clock::now();

  const bool wait = message.qos > 0;
  auto pending = std::make_shared<Pending>(static_cast<int>(targets.size()));
  for (const Target& target : targets) {
    boost::asio::post(target.shard->io(), [shard = target.shard, function = *target.function,
                                           trigger = target.trigger, delivery, pending] {
      shard->DeliverMqtt(function, trigger, *delivery);
      pending->Done();
    });
  }
  if (wait && !pending->Wait(give_up_at_ns_)) {
    spdlog::warn("mqtt: stopped before a QoS 1 message on {} was handled; the broker keeps it",
                 topic);
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
