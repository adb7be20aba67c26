// MQTT triggers end to end: a real mosquitto, the real wispd with --broker, a function deployed
// with the CLI, readings published by a test client and the function's actions received back.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "broker.h"
#include "harness.h"
#include "mqtt_inbox.h"

namespace wisp::testing {
namespace {

using nlohmann::json;

constexpr const char* kManifest = R"(version: 1
functions:
  vibration:
    runtime: lua
    handler: handler.lua
    environment: { LIMIT: "7.1" }
    triggers:
      - mqtt: { topic: "plant/+/pump/#", qos: 1 }
)";

// Emits an alert on alerts/<topic> for a reading above the limit; "ping" readings always answer,
// so the test can tell when the subscription is live.
constexpr const char* kHandler = R"(return { handle = function(event, ctx)
  local r = event.json
  if r.ping then ctx.emit("alerts/ping", { ping = r.ping }) return end
  if r.vibration > tonumber(ctx.env("LIMIT")) then
    ctx.emit("alerts/" .. event.topic, { vibration = r.vibration, trigger = event.trigger }, { qos = 1 })
  end
end })";

class MqttTriggerTest : public ::testing::Test {
 public:
  void SetUp() override {
    ASSERT_TRUE(broker_.Start().ok()) << broker_.Log();
    node_ = std::make_unique<NodeProcess>(tmp_.path() + "/data", tmp_.path() + "/wispd.log");
    Status started = node_->Start({"--shards", "2", "--broker", broker_.url()});
    ASSERT_TRUE(started.ok()) << started.ToString();
    tmp_.Write("fn/wisp.yaml", kManifest);
    tmp_.Write("fn/handler.lua", kHandler);
    CommandResult deployed =
        RunCli({"deploy", tmp_.path() + "/fn"}, {{"WISP_HOME", tmp_.path() + "/data"}});
    ASSERT_EQ(deployed.exit_code, 0) << deployed.err;

    auto client = ConnectTestClient(broker_.url(), "test-client", inbox_, {"alerts/#"});
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = std::move(*client);
    // The node subscribes in the background: ping until the function answers.
    ASSERT_TRUE(PublishUntilAnswered(*client_, inbox_, "plant/x/pump/0", R"({"ping":1})"))
        << node_->Log();
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "---- wispd log ----\n" << node_->Log() << "\n";
    if (client_) client_->Stop();
  }

  std::string Logs() {
    return RunCli({"logs", "vibration"}, {{"WISP_HOME", tmp_.path() + "/data"}}).out;
  }

  TempDir tmp_;
  Broker broker_;
  std::unique_ptr<NodeProcess> node_;
  Inbox inbox_;
  std::unique_ptr<MqttConnection> client_;
};

TEST_F(MqttTriggerTest, MatchingReadingsRunTheFunctionAndItsEmitReachesASubscriber) {
  ASSERT_TRUE(client_->Publish("plant/a/pump/7/vibration", R"({"vibration": 9.3})", 1, false).ok());
  ASSERT_TRUE(inbox_.WaitForTopic("alerts/plant/a/pump/7/vibration"));
  const auto alerts = inbox_.On("alerts/plant/a/pump/7/vibration");
  json alert = json::parse(alerts.front().payload);
  EXPECT_DOUBLE_EQ(alert["vibration"].get<double>(), 9.3);
  EXPECT_EQ(alert["trigger"], "mqtt");
  EXPECT_EQ(alerts.front().content_type, "application/json");

  // A reading under the limit and a topic outside the filter produce nothing; a marker
  // published after them proves they were handled (one topic's messages stay in order).
  ASSERT_TRUE(client_->Publish("plant/a/pump/7/vibration", R"({"vibration": 2.0})", 1, false).ok());
  ASSERT_TRUE(client_->Publish("plant/a/valve/7/vibration", R"({"vibration": 99})", 1, false).ok());
  ASSERT_TRUE(client_->Publish("plant/a/pump/7/vibration", R"({"vibration": 8.0})", 1, false).ok());
  ASSERT_TRUE(inbox_.WaitFor([](const auto& ms) {
    int n = 0;
    for (const auto& m : ms) n += m.topic == "alerts/plant/a/pump/7/vibration";
    return n == 2;
  }));
  EXPECT_TRUE(inbox_.On("alerts/plant/a/valve/7/vibration").empty());
  EXPECT_DOUBLE_EQ(json::parse(inbox_.On("alerts/plant/a/pump/7/vibration")[1].payload)["vibration"]
                       .get<double>(),
                   8.0);
}

TEST_F(MqttTriggerTest, CborPayloadsAreDecodedByContentType) {
  const std::vector<std::uint8_t> cbor = json::to_cbor(json{{"vibration", 12.5}});
  ASSERT_TRUE(client_
                  ->Publish("plant/b/pump/1", std::string(cbor.begin(), cbor.end()), 1, false,
                            "application/cbor")
                  .ok());
  ASSERT_TRUE(inbox_.WaitForTopic("alerts/plant/b/pump/1"));
  EXPECT_DOUBLE_EQ(
      json::parse(inbox_.On("alerts/plant/b/pump/1").front().payload)["vibration"].get<double>(),
      12.5);
}

TEST_F(MqttTriggerTest, MalformedPayloadsGoToTheDeadLetterRecord) {
  ASSERT_TRUE(client_->Publish("plant/c/pump/1", R"({"vibration": )", 1, false).ok());
  ASSERT_TRUE(client_->Publish("plant/c/pump/2", "\xff\x00", 1, false, "application/cbor").ok());
  // 200,000 nested CBOR arrays: once a stack overflow in the decoder, now a dead letter.
  std::string deep(200000, '\x81');
  deep.push_back('\x00');
  ASSERT_TRUE(client_->Publish("plant/c/pump/4", deep, 1, false, "application/cbor").ok());
  ASSERT_TRUE(WaitUntil([&] {
    const std::string logs = Logs();
    return logs.find("dead letter from plant/c/pump/1") != std::string::npos &&
           logs.find("dead letter from plant/c/pump/2") != std::string::npos &&
           logs.find("dead letter from plant/c/pump/4") != std::string::npos;
  })) << Logs();
  EXPECT_NE(Logs().find("not valid JSON"), std::string::npos);
  EXPECT_NE(Logs().find("nests CBOR deeper than 64 levels"), std::string::npos) << Logs();
  auto metrics = node_->Request("GET", "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->body.find("wisp_function_dead_letters_total{function=\"vibration\"} 3"),
            std::string::npos);
  // The node keeps serving: a good reading still gets its alert.
  ASSERT_TRUE(client_->Publish("plant/c/pump/3", R"({"vibration": 9})", 1, false).ok());
  EXPECT_TRUE(inbox_.WaitForTopic("alerts/plant/c/pump/3"));
  EXPECT_NE(metrics->body.find("trigger=\"mqtt\",status=\"success\""), std::string::npos);
}

// A trigger's `format` overrides what the content type (or its absence) says.
TEST_F(MqttTriggerTest, TriggerFormatChoosesTheDecoding) {
  tmp_.Write("fmt/wisp.yaml", R"(version: 1
functions:
  as-cbor:
    runtime: lua
    handler: handler.lua
    triggers:
      - mqtt: { topic: "fmt/cbor", qos: 1, format: cbor }
  as-raw:
    runtime: lua
    handler: handler.lua
    triggers:
      - mqtt: { topic: "fmt/raw", qos: 1, format: raw }
)");
  tmp_.Write("fmt/handler.lua", R"(return { handle = function(event, ctx)
  local v = event.json and event.json.v or "none"
  ctx.emit("alerts/" .. event.topic, { v = v, body = #event.body })
end })");
  CommandResult deployed =
      RunCli({"deploy", tmp_.path() + "/fmt"}, {{"WISP_HOME", tmp_.path() + "/data"}});
  ASSERT_EQ(deployed.exit_code, 0) << deployed.err;
  const std::vector<std::uint8_t> cbor = json::to_cbor(json{{"v", 7}});
  // No content type: auto would not decode these bytes; format: cbor does.
  ASSERT_TRUE(WaitUntil([&] {
    (void)client_->Publish("fmt/cbor", std::string(cbor.begin(), cbor.end()), 1, false);
    return inbox_.WaitForTopic("alerts/fmt/cbor", seconds(1));
  }));
  EXPECT_EQ(json::parse(inbox_.On("alerts/fmt/cbor").front().payload)["v"], 7);
  // JSON-looking bytes stay bytes with format: raw.
  ASSERT_TRUE(WaitUntil([&] {
    (void)client_->Publish("fmt/raw", R"({"v": 9})", 1, false, "application/json");
    return inbox_.WaitForTopic("alerts/fmt/raw", seconds(1));
  }));
  json raw = json::parse(inbox_.On("alerts/fmt/raw").front().payload);
  EXPECT_EQ(raw["v"], "none");
  EXPECT_EQ(raw["body"], 8);
}

// The node keeps one persistent session (its client id is stable across restarts), and a QoS 1
// message is acknowledged only after the function ran: a node killed mid-call gets the message
// again when it comes back.
// `config` is the node's config for the run that is killed and the one after.
void KillMidCallAndRestart(MqttTriggerTest& t, const std::string& config);

TEST_F(MqttTriggerTest, Qos1MessageIsRedeliveredAfterTheNodeIsKilledMidCall) {
  // Default: the message is journaled and acknowledged; the next start runs it from the journal.
  KillMidCallAndRestart(*this, "");
}

TEST_F(MqttTriggerTest, Qos1MessageIsRedeliveredByTheBrokerWithoutTheJournal) {
  // Without the journal the PUBACK waits for the function: the broker's session has it.
  node_->Stop();
  ASSERT_TRUE(
      node_->Start({"--shards", "2", "--broker", broker_.url()}, "mqtt:\n  journal: false\n").ok());
  KillMidCallAndRestart(*this, "mqtt:\n  journal: false\n");
}

void KillMidCallAndRestart(MqttTriggerTest& t, const std::string& config) {
  auto& tmp_ = t.tmp_;
  auto& client_ = t.client_;
  auto& inbox_ = t.inbox_;
  auto& node_ = t.node_;
  auto& broker_ = t.broker_;
  tmp_.Write("slow/wisp.yaml", R"(version: 1
functions:
  slow:
    runtime: lua
    handler: handler.lua
    limits: { timeout: 60s }
    triggers:
      - mqtt: { topic: "jobs/#", qos: 1 }
)");
  // First delivery: record it durably, then hang (the node is killed meanwhile). Redelivery:
  // the record is there, so answer on alerts/redelivered. Over HTTP: report the record. (An
  // emit from the hanging call would not leave before the call ends: the network thread that
  // sends it waits for the call, so the test asks over HTTP instead.)
  tmp_.Write("slow/handler.lua", R"(return { handle = function(event, ctx)
  if event.trigger == "http" then return ctx.state:get("seen:ping") or "not yet" end
  if ctx.state:get("seen:" .. event.body) then
    ctx.emit("alerts/redelivered", event.body, { qos = 1 })
    return
  end
  ctx.state:put("seen:" .. event.body, "1")
  while true do end
end })");
  const std::map<std::string, std::string> env = {{"WISP_HOME", tmp_.path() + "/data"}};
  CommandResult deployed = RunCli({"deploy", tmp_.path() + "/slow"}, env);
  ASSERT_EQ(deployed.exit_code, 0) << deployed.err;
  // The topic's shard hangs in the handler; a connection that lands there times out, one on
  // the other shard answers.
  ASSERT_TRUE(WaitUntil(
      [&] {
        (void)client_->Publish("jobs/ping", "ping", 1, false);
        auto seen = HttpRequest(node_->url(), "POST", "/v1/functions/slow/invoke", "", {},
                                std::chrono::milliseconds(300));
        return seen.ok() && seen->body == "1";
      },
      seconds(30)))
      << node_->Log();
  // "ping" is now stuck in the handler; the node has not acknowledged it.
  node_->Kill();
  ASSERT_FALSE(inbox_.WaitForTopic("alerts/redelivered", seconds(1)));

  ASSERT_TRUE(node_->Start({"--shards", "2", "--broker", broker_.url()}, config).ok())
      << node_->Log();
  ASSERT_TRUE(inbox_.WaitForTopic("alerts/redelivered", seconds(20))) << node_->Log();
  EXPECT_EQ(inbox_.On("alerts/redelivered").front().payload, "ping");
}

// After the broker restarts (and forgets every session), the node reconnects, subscribes again
// and its functions run on new messages.
TEST_F(MqttTriggerTest, NodeResubscribesAfterTheBrokerRestarts) {
  ASSERT_TRUE(broker_.Restart().ok()) << broker_.Log();
  ASSERT_TRUE(WaitUntil([&] { return client_->connected(); }, seconds(20)));
  ASSERT_TRUE(client_->Subscribe("alerts/#", 1).ok());
  ASSERT_TRUE(WaitUntil(
      [&] {
        (void)client_->Publish("plant/r/pump/1", R"({"vibration": 11})", 1, false);
        return inbox_.WaitForTopic("alerts/plant/r/pump/1", seconds(1));
      },
      seconds(30)))
      << node_->Log();
  auto metrics = node_->Request("GET", "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->body.find("wisp_mqtt_connected 1"), std::string::npos) << metrics->body;
}

}  // namespace
}  // namespace wisp::testing
