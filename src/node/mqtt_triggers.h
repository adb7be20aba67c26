// MQTT triggers: one broker connection per node, subscriptions that follow the deployed
// functions' `mqtt:` triggers, and routing of each message to a shard.
//
// Routing: a message goes to shard hash(topic) % N, so the events of one topic (one sensor)
// stay in order and on one thread. Every function whose filter matches gets it. A trigger with
// gateway filters keyed by a payload field (`key:`) is the exception: its messages go to shard
// hash(function) % N, so that each key's filter state is in one place whatever the topic.
//
// Acknowledgement: on_message runs on the connection's network thread, and libmosquitto writes
// the PUBACK of a QoS 1 message only after on_message returns (src/mqtt/mqtt_connection.h).
// So for QoS 1 the network thread waits until every matching function has run: a crash before
// that leaves the message unacknowledged and the broker redelivers it. QoS 0 is fire and forget.
//
// Threads: Sync() from any thread (serialised by a mutex); OnMessage on the network thread only.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "mqtt/mqtt_connection.h"
#include "node/action_outbox.h"
#include "node/mqtt_journal.h"
#include "node/shard.h"

namespace wisp {

class MqttTriggers {
 public:
  // Connects (in the background) to the broker of `config`; InvalidArgument for a bad URL or
  // TLS files.
  static Result<std::unique_ptr<MqttTriggers>> Create(const MqttConfig& config,
                                                      NodeServices& services,
                                                      std::vector<Shard*> shards);
  ~MqttTriggers();

  Status Start();
  // Stops taking messages; a QoS 1 message being run is waited for, up to `wait_for_running`.
  void Stop(std::chrono::milliseconds wait_for_running = std::chrono::seconds(10));

  // Subscribes to what the catalog's functions need now and unsubscribes from the rest.
  void Sync();

  // For ctx.emit: through the action outbox (queued durably while disconnected; its errors
  // when full); with mqtt.outbox off, Unavailable when disconnected.
  Status Publish(std::string_view topic, std::string_view payload, const EmitOptions& options);
  // Publishes a dead letter to config.dead_letter_topic, if one is set.
  void PublishDeadLetter(const std::string& function, const MqttDelivery& delivery,
                         const Status& why);
  bool connected() const { return connection_->connected(); }

 private:
  MqttTriggers(const MqttConfig& config, NodeServices& services, std::vector<Shard*> shards);
  void OnMessage(const MqttMessage& message);
  // Routes a message to its functions' shards; on the network thread. `only`, when given,
  // limits it to those functions (a journal entry replayed after a crash).
  void Dispatch(std::shared_ptr<const MqttDelivery> delivery,
                const std::vector<std::string>* only = nullptr);

  const MqttConfig config_;
  NodeServices& services_;
  std::vector<Shard*> shards_;
  std::unique_ptr<MqttJournal> journal_;  // null when mqtt.journal is off
  std::unique_ptr<MqttConnection> connection_;
  std::unique_ptr<ActionOutbox> outbox_;        // null when mqtt.outbox is off; after connection_
  int collector_id_ = -1;                       // this connection's metrics in services_.metrics
  std::atomic<std::int64_t> give_up_at_ns_{0};  // steady clock; 0 = wait for ever

  std::mutex sync_mu_;
  std::set<std::tuple<std::string, int, std::string>> subscribed_;  // guarded by sync_mu_

  // The network thread's own copy of the catalog, refreshed when its generation moves.
  std::uint64_t catalog_generation_ = 0;
  std::shared_ptr<const FunctionMap> catalog_;
};

}  // namespace wisp
