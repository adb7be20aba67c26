// Anomaly detection without code, end to end: a real mosquitto, the real wispd, a `runtime:
// detector` function and a Lua function calling ctx.detect, deployed with the CLI; readings
// published by a test client, scores and flags received back as actions. The detector state
// lives in the state store: a restarted node continues each key's stream.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "broker.h"
#include "harness.h"
#include "mqtt_inbox.h"

namespace wisp::testing {
namespace {

using nlohmann::json;

// gaussian with min_points 10 warms up fast; emit_all answers every reading (so the test can
// see both flags and non-flags, and tell when the subscription is live).
constexpr const char* kManifest = R"(version: 1
functions:
  pump-anomaly:
    runtime: detector
    detector:
      algorithm: gaussian
      params: { window: 100, min_points: 10 }
      key: topic:1
      value: vibration
      emit: anomalies/{key}
      emit_all: true
    triggers:
      - mqtt: { topic: "plant/+/vibration", qos: 1 }
  bearing-rul:
    runtime: detector
    detector:
      algorithm: rul
      params: { threshold: 20, half_life: 50, horizon: 30, time_field: t }
      key: topic:1
      value: health
      emit: maintenance/{key}
      emit_all: true
    triggers:
      - mqtt: { topic: "bearing/+/health", qos: 1 }
  lua-detect:
    runtime: lua
    handler: handler.lua
    triggers:
      - mqtt: { topic: "lua/+/v", qos: 1 }
)";

constexpr const char* kHandler = R"(return { handle = function(event, ctx)
  local r = event.json
  local score, anomaly = ctx.detect("ewma", r.pump, r.v, { min_points = 10, alpha = 0.1 })
  ctx.emit("lua-scores/" .. r.pump, { score = score, anomaly = anomaly, v = r.v })
end })";

// A steady reading with a little deterministic wobble.
double Normal(int i) { return 1.0 + 0.01 * (i % 5); }

std::string Reading(double v) { return json{{"vibration", v}}.dump(); }

class DetectorTest : public ::testing::Test {
 public:
  void SetUp() override {
    ASSERT_TRUE(broker_.Start().ok()) << broker_.Log();
    StartNode();
    tmp_.Write("fn/wisp.yaml", kManifest);
    tmp_.Write("fn/handler.lua", kHandler);
    CommandResult deployed =
        RunCli({"deploy", tmp_.path() + "/fn"}, {{"WISP_HOME", tmp_.path() + "/data"}});
    ASSERT_EQ(deployed.exit_code, 0) << deployed.err;
    auto client = ConnectTestClient(broker_.url(), "test-client", inbox_,
                                    {"anomalies/#", "lua-scores/#", "maintenance/#"});
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = std::move(*client);
    ASSERT_TRUE(PublishUntilAnswered(*client_, inbox_, "plant/ready/vibration", Reading(1)))
        << node_->Log();
  }
  void TearDown() override {
    if (HasFailure() && node_) std::cerr << "---- wispd log ----\n" << node_->Log() << "\n";
    if (client_) client_->Stop();
  }

  void StartNode() {
    node_ = std::make_unique<NodeProcess>(tmp_.path() + "/data", tmp_.path() + "/wispd.log");
    Status started = node_->Start({"--shards", "2", "--broker", broker_.url()});
    ASSERT_TRUE(started.ok()) << started.ToString();
  }

  // Waits until `topic` has `count` messages and returns them parsed.
  std::vector<json> WaitForCount(const std::string& topic, size_t count) {
    EXPECT_TRUE(inbox_.WaitFor([&](const auto& ms) {
      size_t n = 0;
      for (const auto& m : ms) n += m.topic == topic;
      return n >= count;
    })) << topic
        << " has " << inbox_.On(topic).size() << " of " << count;
    std::vector<json> out;
    for (const auto& m : inbox_.On(topic)) out.push_back(json::parse(m.payload));
    return out;
  }

  TempDir tmp_;
  Broker broker_;
  std::unique_ptr<NodeProcess> node_;
  Inbox inbox_;
  std::unique_ptr<MqttConnection> client_;
};

TEST_F(DetectorTest, DetectorFunctionFlagsASpikePerKeyAndKeepsStateAcrossARestart) {
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(client_->Publish("plant/p1/vibration", Reading(Normal(i)), 1, false).ok());
  }
  ASSERT_TRUE(client_->Publish("plant/p1/vibration", Reading(9.0), 1, false).ok());
  // The same spike as a key's first reading: its own stream, still warming up, not flagged.
  ASSERT_TRUE(client_->Publish("plant/p2/vibration", Reading(9.0), 1, false).ok());

  std::vector<json> p1 = WaitForCount("anomalies/p1", 31);
  ASSERT_EQ(p1.size(), 31u);
  for (int i = 0; i < 30; ++i) EXPECT_FALSE(p1[i]["anomaly"].get<bool>()) << i << p1[i].dump();
  EXPECT_TRUE(p1[30]["anomaly"].get<bool>()) << p1[30].dump();
  EXPECT_GT(p1[30]["score"].get<double>(), 0.9);
  EXPECT_EQ(p1[30]["key"], "p1");
  EXPECT_EQ(p1[30]["value"].get<double>(), 9.0);
  std::vector<json> p2 = WaitForCount("anomalies/p2", 1);
  EXPECT_FALSE(p2[0]["anomaly"].get<bool>());
  EXPECT_EQ(p2[0]["score"].get<double>(), 0.0);

  // Restart the node: p1's detector comes back from the state store, so a spike is flagged at
  // once (a fresh detector would still be warming up).
  ASSERT_EQ(node_->Stop(), 0);
  StartNode();
  ASSERT_TRUE(WaitUntil(
      [&] {
        (void)client_->Publish("plant/again/vibration", Reading(1), 1, false);
        return inbox_.WaitForTopic("anomalies/again", seconds(1));
      },
      seconds(20)))
      << node_->Log();
  ASSERT_TRUE(client_->Publish("plant/p1/vibration", Reading(12.0), 1, false).ok());
  p1 = WaitForCount("anomalies/p1", 32);
  ASSERT_EQ(p1.size(), 32u);
  EXPECT_TRUE(p1[31]["anomaly"].get<bool>()) << p1[31].dump();
}

TEST_F(DetectorTest, LuaCtxDetectScoresPerKey) {
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(
        client_->Publish("lua/a/v", json{{"pump", "a"}, {"v", Normal(i)}}.dump(), 1, false).ok());
  }
  ASSERT_TRUE(client_->Publish("lua/a/v", json{{"pump", "a"}, {"v", 7.5}}.dump(), 1, false).ok());
  std::vector<json> scores = WaitForCount("lua-scores/a", 21);
  ASSERT_EQ(scores.size(), 21u);
  for (int i = 0; i < 20; ++i) EXPECT_FALSE(scores[i]["anomaly"].get<bool>()) << i;
  EXPECT_TRUE(scores[20]["anomaly"].get<bool>()) << scores[20].dump();
  EXPECT_EQ(scores[20]["v"].get<double>(), 7.5);
}

TEST_F(DetectorTest, RemainingLifeFunctionEstimatesTheCrossingPerKey) {
  // Health 100 falling 0.5 per second (reading time in the payload), failure at 20: the
  // crossing is at t = 160. After 80 readings the true remaining life is 160 - 79 = 81 s.
  for (int t = 0; t < 80; ++t) {
    double health = 100 - 0.5 * t + 0.2 * ((t * 7) % 3 - 1);
    ASSERT_TRUE(
        client_->Publish("bearing/b7/health", json{{"t", t}, {"health", health}}.dump(), 1, false)
            .ok());
  }
  std::vector<json> estimates = WaitForCount("maintenance/b7", 80);
  ASSERT_EQ(estimates.size(), 80u);
  EXPECT_TRUE(estimates[0]["rul_seconds"].is_null()) << estimates[0].dump();  // warming up
  const json& last = estimates[79];
  EXPECT_EQ(last["key"], "b7");
  ASSERT_TRUE(last["rul_seconds"].is_number()) << last.dump();
  EXPECT_NEAR(last["rul_seconds"].get<double>(), 81, 6) << last.dump();
  EXPECT_LE(last["low"].get<double>(), 81) << last.dump();
  EXPECT_GE(last["high"].get<double>(), 81) << last.dump();
  EXPECT_LT(last["trend"].get<double>(), 0);
  EXPECT_FALSE(last["alert"].get<bool>());  // 81 s left, beyond the 30 s horizon

  // Close to the end the estimate falls inside the horizon and alerts.
  for (int t = 80; t < 150; ++t) {
    ASSERT_TRUE(client_
                    ->Publish("bearing/b7/health", json{{"t", t}, {"health", 100 - 0.5 * t}}.dump(),
                              1, false)
                    .ok());
  }
  estimates = WaitForCount("maintenance/b7", 150);
  ASSERT_EQ(estimates.size(), 150u);
  EXPECT_TRUE(estimates[149]["alert"].get<bool>()) << estimates[149].dump();
}

TEST_F(DetectorTest, BadDetectorManifestsAreRefusedAtDeploy) {
  tmp_.Write("bad/wisp.yaml", R"(version: 1
functions:
  bad-detector:
    runtime: detector
    detector: { algorithm: nosuch }
)");
  CommandResult deployed =
      RunCli({"deploy", tmp_.path() + "/bad"}, {{"WISP_HOME", tmp_.path() + "/data"}});
  EXPECT_NE(deployed.exit_code, 0);
  EXPECT_NE((deployed.out + deployed.err).find("nosuch"), std::string::npos)
      << deployed.out << deployed.err;
}

}  // namespace
}  // namespace wisp::testing
