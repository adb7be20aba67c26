// The action outbox end to end: the real wispd emitting QoS 1 messages from a Lua function
// while a real mosquitto is down, and a subscriber with a persistent session (kept in the
// broker's database across its restart) that must receive every one of them, in order.
#include <gtest/gtest.h>

#include <algorithm>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "broker.h"
#include "harness.h"
#include "mqtt_inbox.h"

namespace wisp::testing {
namespace {

using nlohmann::json;

const HttpHeaders kJson = {{"Content-Type", "application/json"}};

constexpr const char* kManifest = R"(version: 1
functions:
  burst:
    runtime: lua
    handler: burst.lua
)";

// Emits n QoS 1 messages on out/seq, numbered 1..n, each tagged with the request's batch and
// padded with `pad` bytes; an emit error ends the handler with that error.
constexpr const char* kBurst = R"(return { handle = function(event, ctx)
  local r = event.json
  local pad = string.rep("x", r.pad or 0)
  for i = 1, r.n do
    ctx.emit("out/seq", { batch = r.batch, i = i, pad = pad }, { qos = 1 })
  end
  return { emitted = r.n }
end })";

class OutboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    broker_.UsePersistence();
    ASSERT_TRUE(broker_.Start().ok()) << broker_.Log();
    tmp_.Write("fns/wisp.yaml", kManifest);
    tmp_.Write("fns/burst.lua", kBurst);
    node_ = std::make_unique<NodeProcess>(tmp_.path() + "/data", tmp_.path() + "/wispd.log");
  }
  void TearDown() override {
    if (subscriber_) subscriber_->Stop();
    if (HasFailure() && node_) std::cerr << "---- wispd log ----\n" << node_->Log() << "\n";
  }

  void StartNode(const std::string& config = "") {
    Status started = node_->Start({"--shards", "2", "--broker", broker_.url()}, config);
    ASSERT_TRUE(started.ok()) << started.ToString();
  }
  void Deploy() {
    CommandResult deployed =
        RunCli({"deploy", tmp_.path() + "/fns"}, {{"WISP_HOME", tmp_.path() + "/data"}});
    ASSERT_EQ(deployed.exit_code, 0) << deployed.err;
  }
  // A persistent session (clean_start false) subscribed to out/# at QoS 1: the broker queues
  // what is published while it is away, also across a broker restart with persistence. Waits
  // until a first batch ("probe", one message) emitted by the node has arrived, so the
  // subscription is known to be live.
  void SubscribeAndProbe() {
    MqttOptions options;
    options.url = broker_.url();
    options.client_id = "outbox-subscriber";
    options.clean_start = false;
    options.reconnect_max = std::chrono::milliseconds(500);
    auto client = MqttConnection::Create(options, inbox_.Handler());
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    subscriber_ = std::move(*client);
    ASSERT_TRUE(subscriber_->Subscribe("out/#", 1).ok());
    ASSERT_TRUE(subscriber_->Start().ok());
    ASSERT_TRUE(WaitUntil([&] { return subscriber_->connected(); }));
    ASSERT_TRUE(WaitUntil(
        [&] {
          auto r = Invoke(json{{"n", 1}, {"batch", "probe"}});
          return r.status == 200 &&
                 inbox_.WaitFor([](const auto& ms) { return !ms.empty(); }, seconds(1));
        },
        seconds(20)));
  }
  HttpResponse Invoke(const json& body) {
    auto r = node_->Request("POST", "/v1/functions/burst/invoke", body.dump(), kJson);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : HttpResponse{};
  }
  double Metric(const std::string& name) {
    auto r = node_->Request("GET", "/metrics");
    if (!r.ok()) return -1;
    const std::string prefix = "\n" + name + " ";
    const auto at = r->body.find(prefix);
    if (at == std::string::npos) return -1;
    return std::stod(r->body.substr(at + prefix.size()));
  }
  // The `i` of batch `batch`'s messages in the order they arrived, duplicates dropped (delivery
  // is at least once).
  std::vector<int> Arrived(const std::string& batch) {
    std::vector<int> order;
    for (const Received& m : inbox_.On("out/seq")) {
      const json j = json::parse(m.payload);
      if (j["batch"] != batch) continue;
      const int i = j["i"].get<int>();
      if (std::find(order.begin(), order.end(), i) == order.end()) order.push_back(i);
    }
    return order;
  }
  bool WaitForBatch(const std::string& batch, int n) {
    return WaitUntil([&] { return static_cast<int>(Arrived(batch).size()) >= n; }, seconds(40));
  }
  static std::vector<int> OneTo(int n) {
    std::vector<int> v;
    for (int i = 1; i <= n; ++i) v.push_back(i);
    return v;
  }

  TempDir tmp_;
  Broker broker_;
  std::unique_ptr<NodeProcess> node_;
  Inbox inbox_;
  std::unique_ptr<MqttConnection> subscriber_;
};

TEST_F(OutboxTest, EmitsWhileTheBrokerIsDownArriveAfterItReturns) {
  StartNode();
  Deploy();
  SubscribeAndProbe();
  ASSERT_TRUE(WaitUntil([&] { return Metric("wisp_outbox_pending_messages") == 0; }));

  broker_.StopGracefully();
  ASSERT_TRUE(WaitUntil([&] { return Metric("wisp_mqtt_connected") == 0; }));
  constexpr int kCount = 50;
  HttpResponse r = Invoke(json{{"n", kCount}, {"batch", "outage"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["emitted"], kCount);
  EXPECT_EQ(Metric("wisp_outbox_pending_messages"), kCount);
  EXPECT_GT(Metric("wisp_outbox_pending_bytes"), 0);

  ASSERT_TRUE(broker_.Start().ok()) << broker_.Log();
  ASSERT_TRUE(WaitForBatch("outage", kCount)) << "got " << Arrived("outage").size();
  EXPECT_EQ(Arrived("outage"), OneTo(kCount));
  EXPECT_TRUE(WaitUntil([&] { return Metric("wisp_outbox_pending_messages") == 0; }));
  EXPECT_EQ(Metric("wisp_outbox_pending_bytes"), 0);
  EXPECT_GE(Metric("wisp_outbox_replayed_total"), kCount);
  EXPECT_EQ(Metric("wisp_outbox_rejected_total"), 0);
}

TEST_F(OutboxTest, PendingEmitsSurviveKillMinus9) {
  StartNode();
  Deploy();
  SubscribeAndProbe();

  broker_.StopGracefully();
  ASSERT_TRUE(WaitUntil([&] { return Metric("wisp_mqtt_connected") == 0; }));
  constexpr int kCount = 30;
  HttpResponse r = Invoke(json{{"n", kCount}, {"batch", "killed"}});
  ASSERT_EQ(r.status, 200) << r.body;
  node_->Kill();  // SIGKILL: only what is on disk survives

  StartNode();  // the broker is still down
  EXPECT_EQ(Metric("wisp_outbox_pending_messages"), kCount);
  ASSERT_TRUE(broker_.Start().ok()) << broker_.Log();
  ASSERT_TRUE(WaitForBatch("killed", kCount)) << "got " << Arrived("killed").size();
  EXPECT_EQ(Arrived("killed"), OneTo(kCount));
  EXPECT_TRUE(WaitUntil([&] { return Metric("wisp_outbox_pending_messages") == 0; }));
  EXPECT_GE(Metric("wisp_outbox_replayed_total"), kCount);
}

TEST_F(OutboxTest, FullOutboxRefusesWithAClearError) {
  StartNode("mqtt:\n  outbox_max_bytes: 8Ki\n");
  Deploy();
  broker_.Stop();
  ASSERT_TRUE(WaitUntil([&] { return Metric("wisp_mqtt_connected") == 0; }));

  // About 1 KiB an emit: the eighth or so does not fit.
  HttpResponse r = Invoke(json{{"n", 20}, {"batch", "full"}, {"pad", 1000}});
  EXPECT_NE(r.status, 200);
  EXPECT_NE(r.body.find("outbox is full"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("unreachable"), std::string::npos) << r.body;
  EXPECT_EQ(Metric("wisp_outbox_rejected_total"), 1);
  const double pending = Metric("wisp_outbox_pending_messages");
  EXPECT_GE(pending, 5);
  EXPECT_LT(pending, 10);
  EXPECT_LE(Metric("wisp_outbox_pending_bytes"), 8192);
  // The function's log says it too.
  CommandResult logs = RunCli({"logs", "burst"}, {{"WISP_HOME", tmp_.path() + "/data"}});
  EXPECT_NE(logs.out.find("outbox is full"), std::string::npos) << logs.out;
}

// The outbox leaves an entry that libmosquitto took and the broker did not acknowledge before
// the connection dropped "in flight", trusting libmosquitto to send it again after the
// reconnect (same packet id) and to report its PUBACK then. This checks that: the broker is
// frozen so the PUBLISH is surely unread when it is killed, and only a broker started after
// that can have acknowledged it.
TEST(OutboxLibmosquittoTest, UnacknowledgedQos1PublishIsResentAfterTheReconnect) {
  Broker broker;
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  std::mutex mu;
  std::vector<int> acknowledged;
  auto count = [&](int mid) {
    std::lock_guard lock(mu);
    return std::count(acknowledged.begin(), acknowledged.end(), mid);
  };
  Inbox unused;
  MqttOptions options;
  options.url = broker.url();
  options.client_id = "resend-publisher";  // a persistent session, like the node's
  options.reconnect_max = std::chrono::milliseconds(500);
  auto publisher = MqttConnection::Create(options, unused.Handler());
  ASSERT_TRUE(publisher.ok());
  (*publisher)->SetPublishedHandler([&](int mid, int) {
    std::lock_guard lock(mu);
    acknowledged.push_back(mid);
  });
  ASSERT_TRUE((*publisher)->Start().ok());
  ASSERT_TRUE(WaitUntil([&] { return (*publisher)->connected(); }));
  int probe = 0;
  ASSERT_TRUE((*publisher)->Publish("resend/probe", "p", 1, false, "", &probe).ok());
  ASSERT_TRUE(WaitUntil([&] { return count(probe) == 1; })) << "acknowledged while connected";

  broker.Freeze();
  int mid = 0;
  ASSERT_TRUE((*publisher)->Publish("resend/x", "in flight", 1, false, "", &mid).ok());
  ASSERT_NE(mid, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let it reach the socket
  broker.Stop();
  ASSERT_TRUE(WaitUntil([&] { return !(*publisher)->connected(); }));
  ASSERT_EQ(count(mid), 0);

  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  EXPECT_TRUE(WaitUntil([&] { return count(mid) == 1; }, seconds(30))) << broker.Log();
  EXPECT_NE(broker.Log().find("'resend/x'"), std::string::npos) << broker.Log();
  (*publisher)->Stop();
}

}  // namespace
}  // namespace wisp::testing
