// The sensor simulator end to end: a real mosquitto, the real wispd with examples/pump-alert,
// feeder-watch and hvac-watch deployed, and the real `wisp sim` publishing to the broker. A
// test client subscribed to plant/# sees the readings and the alerts the examples raise.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "broker.h"
#include "harness.h"
#include "mqtt_inbox.h"

namespace wisp::testing {
namespace {

using nlohmann::json;

const HttpHeaders kJson = {{"Content-Type", "application/json"}};

int CountTopic(const std::vector<Received>& messages, const std::string& topic) {
  int n = 0;
  for (const auto& m : messages) n += m.topic == topic;
  return n;
}

// Alerts on `topic` whose JSON `field` equals `value`.
std::vector<json> AlertsWhere(const std::vector<Received>& messages, const std::string& topic,
                              const std::string& field, const std::string& value) {
  std::vector<json> out;
  for (const auto& m : messages) {
    if (m.topic != topic) continue;
    json alert = json::parse(m.payload, nullptr, false);
    if (alert.is_object() && alert.value(field, "") == value) out.push_back(alert);
  }
  return out;
}

class SimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(broker_.Start().ok()) << broker_.Log();
    node_ = std::make_unique<NodeProcess>(tmp_.path() + "/data", tmp_.path() + "/wispd.log");
    const std::string examples = SourceDir() + "/examples/";
    Status started = node_->Start({"--shards", "2", "--broker", broker_.url(), "--deploy",
                                   examples + "pump-alert", "--deploy", examples + "feeder-watch",
                                   "--deploy", examples + "hvac-watch"});
    ASSERT_TRUE(started.ok()) << started.ToString();

    auto client = ConnectTestClient(broker_.url(), "sim-test-client", inbox_, {"plant/#"});
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = std::move(*client);
    // The node subscribes in the background: send a reading pump-alert must answer until it does.
    ASSERT_TRUE(WaitUntil(
        [&] {
          (void)client_->Publish("plant/probe/pump/probe", R"({"pump":"probe","vibration":50})", 1,
                                 false);
          return inbox_.WaitFor(
              [](const auto& ms) { return CountTopic(ms, "plant/alerts/pump") > 0; }, seconds(1));
        },
        seconds(20)))
        << node_->Log();
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "---- wispd log ----\n" << node_->Log() << "\n";
    if (client_) client_->Stop();
  }

  HttpResponse Invoke(const std::string& name, const std::string& body) {
    auto reply = node_->Request("POST", "/v1/functions/" + name + "/invoke", body, kJson);
    EXPECT_TRUE(reply.ok()) << reply.status().ToString();
    return reply.ok() ? *reply : HttpResponse{};
  }

  TempDir tmp_;
  Broker broker_;
  std::unique_ptr<NodeProcess> node_;
  Inbox inbox_;
  std::unique_ptr<MqttConnection> client_;
};

TEST_F(SimTest, ReadingsFlowAndInjectedFaultsRaiseAlerts) {
  // Four simulated minutes at 40x: a few seconds of wall time. The faults: p2's bearing wears
  // from 10 s, f1 sags from 20 s to 25 s, h1's compressor fails at 5 s.
  CommandResult sim = RunCli({"sim",
                              "--broker",
                              broker_.url(),
                              "--pumps",
                              "2",
                              "--feeders",
                              "1",
                              "--hvac",
                              "1",
                              "--rate",
                              "1/s",
                              "--speed",
                              "40",
                              "--duration",
                              "240s",
                              "--seed",
                              "7",
                              "--qos",
                              "1",
                              "--fault",
                              "pump:p2:bearing@10s",
                              "--fault",
                              "feeder:f1:sag@20s+5s",
                              "--fault",
                              "hvac:h1:compressor@5s"});
  ASSERT_EQ(sim.exit_code, 0) << sim.err;
  EXPECT_NE(sim.err.find("960 readings published"), std::string::npos) << sim.err;
  EXPECT_EQ(sim.err.find("dropped"), std::string::npos) << sim.err;
  EXPECT_NE(sim.err.find("pump p2: bearing starts"), std::string::npos) << sim.err;
  EXPECT_NE(sim.err.find("feeder f1: sag ends"), std::string::npos) << sim.err;

  // Every reading reaches a subscriber (QoS 1 all the way), in the documented shape.
  const std::vector<std::string> topics = {"plant/line1/pump/p1", "plant/line1/pump/p2",
                                           "plant/line1/feeder/f1", "plant/line1/hvac/h1"};
  ASSERT_TRUE(inbox_.WaitFor([&](const auto& ms) {
    for (const auto& topic : topics) {
      if (CountTopic(ms, topic) < 240) return false;
    }
    return true;
  })) << "readings: p1 "
      << inbox_.On(topics[0]).size() << ", f1 " << inbox_.On(topics[2]).size();
  for (const auto& topic : topics) EXPECT_EQ(inbox_.On(topic).size(), 240u) << topic;
  const Received first = inbox_.On("plant/line1/pump/p1").front();
  EXPECT_EQ(first.content_type, "application/json");
  json reading = json::parse(first.payload);
  EXPECT_EQ(reading["pump"], "p1");
  EXPECT_TRUE(reading["vibration"].is_number() && reading["pressure"].is_number() &&
              reading["flow"].is_number())
      << first.payload;

  // The worn pump alerts, the healthy one does not.
  ASSERT_TRUE(inbox_.WaitFor([](const auto& ms) {
    return !AlertsWhere(ms, "plant/alerts/pump", "pump", "p2").empty();
  })) << node_->Log();
  // The sag is one alert and one all-clear, not one per reading.
  ASSERT_TRUE(inbox_.WaitFor([](const auto& ms) {
    return !AlertsWhere(ms, "plant/alerts/feeder", "cleared", "undervoltage").empty();
  }));
  // The warm room is reported once it has been off its setpoint for a minute.
  ASSERT_TRUE(inbox_.WaitFor([](const auto& ms) {
    return !AlertsWhere(ms, "plant/alerts/hvac", "condition", "too warm").empty();
  }));

  // Every reading has been handled once the node's invocation count says so; then the quiet
  // devices' silence means something.
  auto handled_all = [](const std::string& metrics, const std::string& function) {
    return metrics.find("wisp_function_invocations_total{function=\"" + function +
                        "\",runtime=\"lua\",trigger=\"mqtt\",status=\"success\"} 240\n") !=
           std::string::npos;
  };
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto metrics = node_->Request("GET", "/metrics");
        return metrics.ok() && handled_all(metrics->body, "hvac-watch") &&
               handled_all(metrics->body, "feeder-watch");
      },
      seconds(30)))
      << node_->Request("GET", "/metrics")->body;
  const auto messages = inbox_.Snapshot();
  EXPECT_TRUE(AlertsWhere(messages, "plant/alerts/pump", "pump", "p1").empty());
  const auto sags = AlertsWhere(messages, "plant/alerts/feeder", "condition", "undervoltage");
  ASSERT_EQ(sags.size(), 1u);
  EXPECT_EQ(sags[0]["feeder"], "f1");
  EXPECT_LT(sags[0]["voltage"].get<double>(), 207);
  EXPECT_TRUE(AlertsWhere(messages, "plant/alerts/feeder", "condition", "overcurrent").empty());
  const auto warm = AlertsWhere(messages, "plant/alerts/hvac", "condition", "too warm");
  ASSERT_EQ(warm.size(), 1u);
  EXPECT_EQ(warm[0]["hvac"], "h1");
  EXPECT_GE(warm[0]["off_for_s"].get<double>(), 60);
  EXPECT_GT(warm[0]["temperature"].get<double>(), warm[0]["setpoint"].get<double>() + 2);
}

TEST_F(SimTest, CborReadingsAreDecodedByTheExamples) {
  CommandResult sim = RunCli({"sim", "--broker", broker_.url(), "--pumps", "0", "--feeders", "1",
                              "--hvac", "0", "--rate", "1/s", "--speed", "20", "--duration", "20s",
                              "--format", "cbor", "--fault", "feeder:f1:overcurrent@5s+10s"});
  ASSERT_EQ(sim.exit_code, 0) << sim.err;
  ASSERT_TRUE(inbox_.WaitFor([](const auto& ms) {
    return !AlertsWhere(ms, "plant/alerts/feeder", "condition", "overcurrent").empty();
  })) << node_->Log();
  const auto reading = inbox_.On("plant/line1/feeder/f1").front();
  EXPECT_EQ(reading.content_type, "application/cbor");
  EXPECT_EQ(json::from_cbor(reading.payload)["feeder"], "f1");
}

TEST_F(SimTest, FeederWatchReportsChangesNotEveryReading) {
  json first = json::parse(Invoke("feeder-watch", R"({"feeder":"f9","voltage":160.5})").body);
  EXPECT_EQ(first["voltage"], "undervoltage");
  EXPECT_EQ(first["alerts"], 1);
  json again = json::parse(Invoke("feeder-watch", R"({"feeder":"f9","voltage":158})").body);
  EXPECT_EQ(again["alerts"], 0);
  json back =
      json::parse(Invoke("feeder-watch", R"({"feeder":"f9","voltage":229.8,"current":450})").body);
  EXPECT_EQ(back["voltage"], "normal");
  EXPECT_EQ(back["current"], "overcurrent");
  EXPECT_EQ(back["alerts"], 2);
  ASSERT_TRUE(inbox_.WaitFor([](const auto& ms) {
    return AlertsWhere(ms, "plant/alerts/feeder", "feeder", "f9").size() == 3;
  }));
  const auto alerts = AlertsWhere(inbox_.Snapshot(), "plant/alerts/feeder", "feeder", "f9");
  EXPECT_EQ(alerts[0]["condition"], "undervoltage");
  EXPECT_DOUBLE_EQ(alerts[0]["low"].get<double>(), 207);
  EXPECT_EQ(alerts[1]["cleared"], "undervoltage");
  EXPECT_EQ(alerts[2]["condition"], "overcurrent");

  HttpResponse bad = Invoke("feeder-watch", R"({"feeder":"f9","voltage":"high"})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("'voltage' must be a number"), std::string::npos) << bad.body;
}

TEST_F(SimTest, PumpAlertRepeatsAnAlertOnlyAfterAWhile) {
  for (int i = 0; i < 3; ++i) {
    HttpResponse reply = Invoke("pump-alert", R"({"pump":"p9","vibration":9.5})");
    EXPECT_EQ(json::parse(reply.body)["alert"], true) << "every reading above the limit says so";
  }
  // Emits leave through one connection in call order: once the next pump's alert is here, any
  // second alert for p9 would have been too.
  Invoke("pump-alert", R"({"pump":"p8","vibration":8.0})");
  ASSERT_TRUE(inbox_.WaitFor(
      [](const auto& ms) { return !AlertsWhere(ms, "plant/alerts/pump", "pump", "p8").empty(); }));
  EXPECT_EQ(AlertsWhere(inbox_.Snapshot(), "plant/alerts/pump", "pump", "p9").size(), 1u);
}

TEST_F(SimTest, HvacWatchAlertsOnlyAfterTheHoldTime) {
  auto reading = [&](double ts, double temperature) {
    return json::parse(
        Invoke(
            "hvac-watch",
            json{{"hvac", "h9"}, {"ts", ts}, {"temperature", temperature}, {"setpoint", 21}}.dump())
            .body);
  };
  EXPECT_EQ(reading(1000, 22.5)["off_setpoint"], false) << "inside the 2 K tolerance";
  EXPECT_EQ(reading(1010, 24.0)["alert"], false);
  json held = reading(1050, 24.5);
  EXPECT_EQ(held["alert"], false);
  EXPECT_EQ(held["off_for_s"], 40);
  json alert = reading(1070, 25.0);
  EXPECT_EQ(alert["alert"], true);
  EXPECT_EQ(alert["off_for_s"], 60);
  EXPECT_EQ(reading(1080, 21.2)["off_setpoint"], false);
  ASSERT_TRUE(inbox_.WaitFor([](const auto& ms) {
    return AlertsWhere(ms, "plant/alerts/hvac", "hvac", "h9").size() == 2;
  }));
  const auto alerts = AlertsWhere(inbox_.Snapshot(), "plant/alerts/hvac", "hvac", "h9");
  EXPECT_EQ(alerts[0]["condition"], "too warm");
  EXPECT_EQ(alerts[0]["off_for_s"], 60);
  EXPECT_EQ(alerts[1]["condition"], "normal");
  // A new excursion starts its own clock.
  EXPECT_EQ(reading(2000, 17.0)["off_for_s"], 0);
}

TEST(SimCliTest, BadFlagsExitWithTwoAndSayWhy) {
  CommandResult missing = RunCli({"sim", "--pumps", "2", "--fault", "pump:p3:bearing@1s"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("ids are p1 to p2"), std::string::npos) << missing.err;
  CommandResult rate = RunCli({"sim", "--rate", "lots"});
  EXPECT_EQ(rate.exit_code, 2);
  EXPECT_NE(rate.err.find("--rate"), std::string::npos) << rate.err;
}

TEST(SimCliTest, AnUnreachableBrokerIsAClearErrorNotAHang) {
  Broker broker;
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  const std::string url = broker.url();
  broker.Stop();  // a port that was just free and now refuses connections
  CommandResult sim = RunCli({"sim", "--broker", url, "--duration", "5s"});
  EXPECT_EQ(sim.exit_code, 1);
  EXPECT_NE(sim.err.find("cannot reach the MQTT broker at " + url), std::string::npos) << sim.err;
}

TEST(SimCliTest, OfflinePrintsReadingsWithoutABroker) {
  CommandResult sim = RunCli({"sim", "--offline", "--duration", "3s", "--pumps", "1", "--feeders",
                              "0", "--hvac", "1", "--rate", "2/s"});
  ASSERT_EQ(sim.exit_code, 0) << sim.err;
  int lines = 0;
  for (std::size_t at = 0; (at = sim.out.find('\n', at)) != std::string::npos; ++at) ++lines;
  EXPECT_EQ(lines, 12);
  EXPECT_EQ(sim.out.rfind("plant/line1/pump/p1 {\"pump\":\"p1\",\"ts\":", 0), 0u) << sim.out;
}

}  // namespace
}  // namespace wisp::testing
