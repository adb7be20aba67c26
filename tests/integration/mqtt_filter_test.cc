// Gateway filters end to end: a real mosquitto, the real wispd, a function whose mqtt triggers
// have filters, a fixed sequence of readings, and the batches the function emits back.
#include <gtest/gtest.h>

#include <csignal>

#include <nlohmann/json.hpp>

#include "broker.h"
#include "harness.h"
#include "mqtt_inbox.h"

namespace wisp::testing {
namespace {

using nlohmann::json;

// "zz/ping" sorts after the other topics, so the node subscribes to it last: once a ping is
// answered, the filtered subscriptions are live too.
constexpr const char* kManifest = R"(version: 1
functions:
  batcher:
    runtime: lua
    handler: handler.lua
    triggers:
      - mqtt:
          topic: "sensors/+/vibration"
          qos: 1
          filters:
            - deadband: { field: v, delta: 1 }
            - window: { count: 3 }
      - mqtt:
          topic: "slow/+"
          qos: 1
          filters:
            - window: { duration: 1s }
      - mqtt:
          topic: "hold/+"
          filters:
            - window: { duration: 1h }
      - mqtt: { topic: "zz/ping", qos: 1 }
)";

// Sends every event it gets back as it saw it: out/<topic> with the event's body (for a batch
// the batch's JSON text) and the count Lua sees in event.json.
constexpr const char* kHandler = R"(return { handle = function(event, ctx)
  if event.topic == "zz/ping" then ctx.emit("pong", "1") return end
  local seen = event.json and event.json.values and #event.json.values or -1
  ctx.emit("out/" .. event.topic, { body = event.body, seen = seen }, { qos = 1 })
end })";

class MqttFilterTest : public ::testing::Test {
 protected:
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

    auto client = ConnectTestClient(broker_.url(), "filter-test-client", inbox_, {"out/#", "pong"});
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = std::move(*client);
    ASSERT_TRUE(PublishUntilAnswered(*client_, inbox_, "zz/ping", "1")) << node_->Log();
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "---- wispd log ----\n" << node_->Log() << "\n";
    if (client_) client_->Stop();
  }

  void Publish(const std::string& topic, const std::string& payload) {
    ASSERT_TRUE(client_->Publish(topic, payload, 1, false).ok());
  }
  // The batches the function received on `topic`, decoded.
  std::vector<json> Batches(const std::string& topic) {
    std::vector<json> batches;
    for (const Received& m : inbox_.On("out/" + topic)) {
      json record = json::parse(m.payload);
      json batch = json::parse(record["body"].get<std::string>());
      EXPECT_EQ(record["seen"], batch["values"].size());  // the handler saw the same batch
      batches.push_back(std::move(batch));
    }
    return batches;
  }
  std::string Metrics() {
    auto metrics = node_->Request("GET", "/metrics");
    return metrics.ok() ? metrics->body : std::string();
  }

  TempDir tmp_;
  Broker broker_;
  std::unique_ptr<NodeProcess> node_;
  Inbox inbox_;
  std::unique_ptr<MqttConnection> client_;
};

// The `v` values of a batch.
std::vector<double> Values(const json& batch) {
  std::vector<double> values;
  for (const json& reading : batch["values"]) values.push_back(reading["v"].get<double>());
  return values;
}

TEST_F(MqttFilterTest, DeadbandThenCountWindowDeliversExactlyTheExpectedBatches) {
  // Deadband 1 passes 1.0, 2.0, 3.5, 5.0, 7.0, 8.0 (the others are within 1 of the last value
  // passed); the window of 3 makes two batches of them.
  for (double v : {1.0, 1.5, 2.0, 2.2, 3.5, 3.9, 5.0, 5.5, 7.0, 8.0}) {
    Publish("sensors/p1/vibration", json{{"v", v}}.dump());
  }
  // Another sensor has its own band and window: 10 and 20 pass, 10.5 does not; no batch yet.
  for (double v : {10.0, 10.5, 20.0}) Publish("sensors/p2/vibration", json{{"v", v}}.dump());

  const std::string in_deadband =
      R"(wisp_filter_events_in_total{function="batcher",trigger="0",filter="0:deadband"} 13)";
  ASSERT_TRUE(WaitUntil([&] { return Metrics().find(in_deadband) != std::string::npos; }))
      << Metrics();
  ASSERT_TRUE(inbox_.WaitFor([](const auto& ms) {
    int n = 0;
    for (const auto& m : ms) n += m.topic == "out/sensors/p1/vibration";
    return n == 2;
  }));
  const std::vector<json> batches = Batches("sensors/p1/vibration");
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(Values(batches[0]), (std::vector<double>{1.0, 2.0, 3.5}));
  EXPECT_EQ(Values(batches[1]), (std::vector<double>{5.0, 7.0, 8.0}));
  EXPECT_EQ(batches[0]["key"], "sensors/p1/vibration");
  EXPECT_EQ(batches[0]["count"], 3);
  EXPECT_TRUE(inbox_.On("out/sensors/p2/vibration").empty());

  const std::string metrics = Metrics();
  auto has = [&](const std::string& line) {
    return metrics.find(line + "\n") != std::string::npos;
  };
  EXPECT_TRUE(
      has(R"(wisp_filter_events_out_total{function="batcher",trigger="0",filter="0:deadband"} 8)"))
      << metrics;
  EXPECT_TRUE(
      has(R"(wisp_filter_events_in_total{function="batcher",trigger="0",filter="1:window"} 8)"));
  EXPECT_TRUE(
      has(R"(wisp_filter_events_out_total{function="batcher",trigger="0",filter="1:window"} 2)"));
  EXPECT_TRUE(has(R"(wisp_filter_keys_evicted_total{function="batcher",trigger="0"} 0)"));
  // The unfiltered ping trigger has no filter series.
  EXPECT_EQ(metrics.find(R"(trigger="3")"), std::string::npos);
}

TEST_F(MqttFilterTest, TimeWindowClosesWithoutFurtherInput) {
  Publish("slow/a", R"({"v": 1})");
  Publish("slow/a", R"({"v": 2})");
  // Nothing else is published: only the node's timer can close the window. The two readings
  // may fall either side of a second boundary, so collect batches until both came out.
  ASSERT_TRUE(WaitUntil([&] {
    std::size_t values = 0;
    for (const json& batch : Batches("slow/a")) values += batch["values"].size();
    return values == 2;
  })) << Metrics();
  std::vector<double> all;
  for (const json& batch : Batches("slow/a")) {
    EXPECT_EQ(batch["end"].get<std::int64_t>() - batch["start"].get<std::int64_t>(), 1000);
    EXPECT_EQ(batch["start"].get<std::int64_t>() % 1000, 0);  // aligned to whole seconds
    for (double v : Values(batch)) all.push_back(v);
  }
  EXPECT_EQ(all, (std::vector<double>{1.0, 2.0}));
  EXPECT_NE(
      Metrics().find(
          R"(wisp_filter_events_in_total{function="batcher",trigger="1",filter="0:window"} 2)"),
      std::string::npos);
}

TEST_F(MqttFilterTest, RedeployStartsTheFiltersAfresh) {
  Publish("sensors/p3/vibration", R"({"v": 1})");
  Publish("sensors/p3/vibration", R"({"v": 3})");
  const std::string two_in =
      R"(wisp_filter_events_in_total{function="batcher",trigger="0",filter="1:window"} 2)";
  ASSERT_TRUE(WaitUntil([&] { return Metrics().find(two_in) != std::string::npos; })) << Metrics();

  // Windows of 2 instead of 3: the two readings held by the old chain go with it.
  std::string manifest = kManifest;
  manifest.replace(manifest.find("window: { count: 3 }"), 20, "window: { count: 2 }");
  tmp_.Write("fn/wisp.yaml", manifest);
  CommandResult deployed =
      RunCli({"deploy", tmp_.path() + "/fn"}, {{"WISP_HOME", tmp_.path() + "/data"}});
  ASSERT_EQ(deployed.exit_code, 0) << deployed.err;

  // 5 starts a new deadband (the old one would have passed it too) and 7 completes a window.
  Publish("sensors/p3/vibration", R"({"v": 5})");
  Publish("sensors/p3/vibration", R"({"v": 7})");
  ASSERT_TRUE(inbox_.WaitForTopic("out/sensors/p3/vibration")) << Metrics();
  const std::vector<json> batches = Batches("sensors/p3/vibration");
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(Values(batches[0]), (std::vector<double>{5.0, 7.0}));
  // The stages have the same labels, so their counters carry on across the redeploy.
  const std::string four_in =
      R"(wisp_filter_events_in_total{function="batcher",trigger="0",filter="0:deadband"} 4)";
  EXPECT_NE(Metrics().find(four_in), std::string::npos) << Metrics();
}

TEST_F(MqttFilterTest, AnOpenTimeWindowDoesNotHoldUpShutdown) {
  Publish("hold/a", R"({"v": 1})");
  const std::string held =
      R"(wisp_filter_events_in_total{function="batcher",trigger="2",filter="0:window"} 1)";
  ASSERT_TRUE(WaitUntil([&] { return Metrics().find(held) != std::string::npos; })) << Metrics();
  // The window ends in up to an hour; its timer must not keep the shard's loop alive, so the
  // node drains without reaching its drain timeout. The held reading is dropped (documented).
  EXPECT_EQ(node_->Stop(SIGTERM), 0);
  EXPECT_EQ(node_->Log().find("drain timeout reached"), std::string::npos) << node_->Log();
  EXPECT_TRUE(inbox_.On("out/hold/a").empty());
}

}  // namespace
}  // namespace wisp::testing
