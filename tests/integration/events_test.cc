// The event archive end to end: the real wispd with a real mosquitto, a function run over HTTP
// and MQTT that emits, and the records read back with `wisp events` and GET /v1/events, also
// after a restart.
#include <gtest/gtest.h>

#include <sstream>

#include <nlohmann/json.hpp>

#include "broker.h"
#include "cli/events_command.h"
#include "harness.h"
#include "mqtt_inbox.h"

namespace wisp::testing {
namespace {

using nlohmann::json;

constexpr const char* kManifest = R"(version: 1
functions:
  pump:
    runtime: lua
    handler: handler.lua
    triggers:
      - mqtt: { topic: "plant/+/pump/#", qos: 1 }
)";

// Every call emits one alert: on alerts/<topic> for MQTT, on alerts/http for HTTP.
constexpr const char* kHandler = R"(return { handle = function(event, ctx)
  local r = event.json or {}
  if r.ping then ctx.emit("alerts/ping", { ping = r.ping }) return end
  local where = event.trigger == "mqtt" and event.topic or "http"
  ctx.emit("alerts/" .. where, { v = r.v }, { qos = 1 })
  return "done"
end })";

class EventsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(broker_.Start().ok()) << broker_.Log();
    data_dir_ = tmp_.path() + "/data";
    node_ = std::make_unique<NodeProcess>(data_dir_, tmp_.path() + "/wispd.log");
    StartNode();
    tmp_.Write("fn/wisp.yaml", kManifest);
    tmp_.Write("fn/handler.lua", kHandler);
    CommandResult deployed = Cli({"deploy", tmp_.path() + "/fn"});
    ASSERT_EQ(deployed.exit_code, 0) << deployed.err;

    auto client = ConnectTestClient(broker_.url(), "events-test", inbox_, {"alerts/#"});
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = std::move(*client);
    ASSERT_TRUE(PublishUntilAnswered(*client_, inbox_, "plant/x/pump/0", R"({"ping":1})"))
        << node_->Log();
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "---- wispd log ----\n" << node_->Log() << "\n";
    if (client_) client_->Stop();
  }

  void StartNode() {
    Status started = node_->Start({"--shards", "2", "--broker", broker_.url()});
    ASSERT_TRUE(started.ok()) << started.ToString();
  }
  CommandResult Cli(const std::vector<std::string>& args) {
    return RunCli(args, {{"WISP_HOME", data_dir_}});
  }
  // `wisp events query --fn pump --since 1h -o json`, parsed; null when it failed.
  json QueryJson(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"events",  "query", "--fn", "pump",
                                     "--since", "1h",    "-o",   "json"};
    args.insert(args.end(), extra.begin(), extra.end());
    CommandResult r = Cli(args);
    if (r.exit_code != 0) {
      ADD_FAILURE() << r.err;
      return nullptr;
    }
    return json::parse(r.out, nullptr, false);
  }
  static const json* Find(const json& reply, std::string_view kind, std::string_view key,
                          std::string_view value) {
    if (!reply.is_object()) return nullptr;
    for (const json& r : reply["events"]) {
      if (r.value("kind", "") == kind && r.value(std::string(key), "") == value) return &r;
    }
    return nullptr;
  }

  TempDir tmp_;
  std::string data_dir_;
  Broker broker_;
  std::unique_ptr<NodeProcess> node_;
  Inbox inbox_;
  std::unique_ptr<MqttConnection> client_;
};

TEST_F(EventsTest, RunsActionsAndDeadLettersAreArchivedAndSurviveARestart) {
  CommandResult invoked = Cli({"invoke", "pump", "-d", R"({"v": 1})"});
  ASSERT_EQ(invoked.exit_code, 0) << invoked.err;
  ASSERT_TRUE(client_->Publish("plant/a/pump/1", R"({"v": 9})", 1, false).ok());
  ASSERT_TRUE(inbox_.WaitForTopic("alerts/plant/a/pump/1"));
  ASSERT_TRUE(client_->Publish("plant/a/pump/2", R"({"v": )", 1, false).ok());

  // Shards write their records within a flush interval; poll until all four are there.
  json reply;
  auto complete = [&] {
    reply = QueryJson();
    return Find(reply, "event", "path", "/v1/functions/pump/invoke") &&
           Find(reply, "event", "topic", "plant/a/pump/1") &&
           Find(reply, "action", "topic", "alerts/plant/a/pump/1") &&
           Find(reply, "action", "topic", "alerts/http") &&
           Find(reply, "dead_letter", "topic", "plant/a/pump/2");
  };
  ASSERT_TRUE(WaitUntil(complete)) << reply.dump(2);

  const json& http_event = *Find(reply, "event", "path", "/v1/functions/pump/invoke");
  EXPECT_EQ(http_event["trigger"], "http");
  EXPECT_EQ(http_event["status"], "ok");
  EXPECT_EQ(http_event["preview"], R"({"v": 1})");
  EXPECT_TRUE(http_event["duration_ms"].is_number());
  const json& mqtt_event = *Find(reply, "event", "topic", "plant/a/pump/1");
  EXPECT_EQ(mqtt_event["trigger"], "mqtt");
  EXPECT_EQ(mqtt_event["preview"], R"({"v": 9})");
  const json& action = *Find(reply, "action", "topic", "alerts/plant/a/pump/1");
  EXPECT_EQ(action["qos"], 1);
  EXPECT_EQ(action["status"], "ok");
  EXPECT_EQ(action["event_id"], mqtt_event["event_id"]) << "an action names its event";
  EXPECT_EQ(json::parse(action["preview"].get<std::string>())["v"], 9);
  const json& dead = *Find(reply, "dead_letter", "topic", "plant/a/pump/2");
  EXPECT_EQ(dead["status"], "invalid_argument");
  EXPECT_NE(dead["error"].get<std::string>().find("JSON"), std::string::npos);
  // Records come in time order.
  std::string last;
  for (const json& r : reply["events"]) {
    EXPECT_LE(last, r["time"].get<std::string>());
    last = r["time"].get<std::string>();
  }

  // Human output: one line per record.
  CommandResult tail = Cli({"events", "tail", "--fn", "pump", "-n", "100"});
  ASSERT_EQ(tail.exit_code, 0) << tail.err;
  EXPECT_NE(tail.out.find("event       pump  mqtt  plant/a/pump/1  ok  "), std::string::npos)
      << tail.out;
  EXPECT_NE(tail.out.find("action      pump  mqtt  alerts/plant/a/pump/1  ok  qos=1  "),
            std::string::npos)
      << tail.out;
  EXPECT_NE(tail.out.find("dead_letter pump  mqtt  plant/a/pump/2  invalid_argument"),
            std::string::npos)
      << tail.out;
  CommandResult one = Cli({"events", "tail", "-n", "1"});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_EQ(std::count(one.out.begin(), one.out.end(), '\n'), 1) << one.out;

  json actions = QueryJson({"--kind", "action"});
  ASSERT_TRUE(actions.is_object());
  ASSERT_FALSE(actions["events"].empty());
  for (const json& r : actions["events"]) EXPECT_EQ(r["kind"], "action");

  auto metrics = node_->Request("GET", "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(metrics->body.find("wisp_archive_records_total 0\n"), std::string::npos);
  EXPECT_NE(metrics->body.find("wisp_archive_write_errors_total 0\n"), std::string::npos);

  // Stopped and started again: the records are still there.
  const std::size_t before = reply["events"].size();
  ASSERT_EQ(node_->Stop(), 0);
  StartNode();
  json after = QueryJson();
  ASSERT_TRUE(after.is_object());
  EXPECT_GE(after["events"].size(), before);
  EXPECT_TRUE(Find(after, "event", "topic", "plant/a/pump/1"));
  EXPECT_TRUE(Find(after, "dead_letter", "topic", "plant/a/pump/2"));
  EXPECT_TRUE(Find(after, "action", "topic", "alerts/http"));
}

TEST_F(EventsTest, FollowPrintsRecordsThatArriveLater) {
  ClientInputs inputs;
  inputs.server_flag = node_->url();
  inputs.token_flag = node_->token();
  auto endpoint = ResolveEndpoint(inputs);
  ASSERT_TRUE(endpoint.ok());
  NodeClient client(*endpoint, std::chrono::seconds(30));
  EventsOptions options;
  options.function = "pump";
  options.kind = "event";
  options.lines = 1;
  options.follow = true;
  std::ostringstream out;
  int polls = 0;
  bool published = false;
  Status status = RunEventsTail(client, options, out, std::chrono::milliseconds(100), [&] {
    if (!published) {
      published = client_->Publish("plant/late/pump/1", R"({"v": 3})", 1, false).ok();
    }
    return out.str().find("plant/late/pump/1") == std::string::npos && ++polls < 300;
  });
  ASSERT_TRUE(status.ok()) << status.ToString();
  EXPECT_NE(out.str().find("event       pump  mqtt  plant/late/pump/1  ok"), std::string::npos)
      << out.str();
}

TEST_F(EventsTest, BadRequestsGetClearErrors) {
  auto no_token = node_->Request("GET", "/v1/events");
  ASSERT_TRUE(no_token.ok());
  EXPECT_EQ(no_token->status, 401);

  auto bad_since = node_->Request("GET", "/v1/events?since=yesterday", {}, {}, /*auth=*/true);
  ASSERT_TRUE(bad_since.ok());
  EXPECT_EQ(bad_since->status, 400);
  EXPECT_NE(bad_since->body.find("RFC 3339"), std::string::npos) << bad_since->body;

  auto bad_kind = node_->Request("GET", "/v1/events?kind=everything", {}, {}, true);
  ASSERT_TRUE(bad_kind.ok());
  EXPECT_EQ(bad_kind->status, 400);
  auto bad_cursor = node_->Request("GET", "/v1/events?after=%00%ff", {}, {}, true);
  ASSERT_TRUE(bad_cursor.ok());
  EXPECT_EQ(bad_cursor->status, 400);
  auto bad_limit = node_->Request("GET", "/v1/events?limit=0", {}, {}, true);
  ASSERT_TRUE(bad_limit.ok());
  EXPECT_EQ(bad_limit->status, 400);

  CommandResult r = Cli({"events", "query", "--fn", "pump", "--since", "last tuesday"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("error: invalid_argument: time 'last tuesday'"), std::string::npos) << r.err;

  // The node is still fine.
  auto health = node_->Request("GET", "/healthz");
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->status, 200);
}

}  // namespace
}  // namespace wisp::testing
