// Actions and async invocations end to end: the real wispd with a real mosquitto, handlers that
// call ctx.http_post, POST /v1/functions/{name}/invoke-async with callback URLs and reply
// topics, and an HTTP receiver in the test standing in for a SCADA or ticketing endpoint.
#include <gtest/gtest.h>

#include <optional>

#include <nlohmann/json.hpp>

#include "../tls_test_support.h"
#include "broker.h"
#include "cli/http_client.h"
#include "harness.h"
#include "http_sink.h"
#include "mqtt_inbox.h"

namespace wisp::testing {
namespace {

using nlohmann::json;

const HttpHeaders kJson = {{"Content-Type", "application/json"}};

constexpr const char* kManifest = R"(version: 1
functions:
  notify:
    runtime: lua
    handler: notify.lua
  add:
    runtime: lua
    handler: add.lua
  once:
    runtime: lua
    handler: once.lua
    limits: { timeout: 60s }
  slow:
    runtime: lua
    handler: slow.lua
    limits: { timeout: 3s }
)";

// Posts the reading to the URL it names; answers what ctx.http_post returned.
constexpr const char* kNotify = R"(return { handle = function(event, ctx)
  local ok, err = ctx.http_post(event.json.url, { pump = event.json.pump, level = "high" },
                                { headers = { ["X-Source"] = "wisp" } })
  return { queued = ok == true, err = err }
end })";

constexpr const char* kAdd = R"(return { handle = function(event, ctx)
  if event.json.fail then error("asked to fail") end
  return { sum = event.json.a + event.json.b }
end })";

// Async: hangs on its first run (the node is killed meanwhile); the run after the restart
// answers. Sync: tells whether the first async run has started.
constexpr const char* kOnce = R"(return { handle = function(event, ctx)
  if not event.path:find("invoke%-async") then return ctx.state:get("started") or "no" end
  if ctx.state:get("started") then return "second run" end
  ctx.state:put("started", "1")
  while true do end
end })";

constexpr const char* kSlow = R"(return { handle = function() while true do end end })";

class ActionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(broker_.Start().ok()) << broker_.Log();
    tmp_.Write("fns/wisp.yaml", kManifest);
    tmp_.Write("fns/notify.lua", kNotify);
    tmp_.Write("fns/add.lua", kAdd);
    tmp_.Write("fns/once.lua", kOnce);
    tmp_.Write("fns/slow.lua", kSlow);
    node_ = std::make_unique<NodeProcess>(tmp_.path() + "/data", tmp_.path() + "/wispd.log");
    StartNode();
    CommandResult deployed =
        RunCli({"deploy", tmp_.path() + "/fns"}, {{"WISP_HOME", tmp_.path() + "/data"}});
    ASSERT_EQ(deployed.exit_code, 0) << deployed.err;
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "---- wispd log ----\n" << node_->Log() << "\n";
  }

  void StartNode(const std::string& extra_config = "") {
    const std::string config = "actions:\n  http_allow: [\"" + sink_.base() +
                               "/hooks\"]\n  http_timeout: 2s\n" + extra_config;
    Status started = node_->Start({"--shards", "2", "--broker", broker_.url()}, config);
    ASSERT_TRUE(started.ok()) << started.ToString();
  }

  HttpResponse Post(const std::string& target, const std::string& body,
                    HttpHeaders headers = kJson) {
    auto r = node_->Request("POST", target, body, headers);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : HttpResponse{};
  }

  // Polls GET /v1/calls/{id} until the call has left the queue.
  json WaitForCall(const std::string& id) {
    json call;
    WaitUntil(
        [&] {
          auto r = node_->Request("GET", "/v1/calls/" + id);
          if (!r.ok() || r->status != 200) return false;
          call = json::parse(r->body);
          return call["state"] != "queued";
        },
        seconds(30));
    return call;
  }

  TempDir tmp_;
  Broker broker_;
  HttpSink sink_;
  std::unique_ptr<NodeProcess> node_;
};

TEST_F(ActionsTest, HttpPostReachesAnAllowedUrlAndIsRetried) {
  sink_.AnswerNext({503});  // the first attempt fails; the retry gets through
  HttpResponse r = Post("/v1/functions/notify/invoke",
                        json{{"url", sink_.base() + "/hooks/pump?line=3"}, {"pump", "p7"}}.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["queued"], true);
  auto received = sink_.WaitFor(2);
  ASSERT_EQ(received.size(), 2u);
  for (const auto& request : received) {
    EXPECT_EQ(request.method, "POST");
    EXPECT_EQ(request.target, "/hooks/pump?line=3");
    EXPECT_EQ(request.headers.at("content-type"), "application/json");
    EXPECT_EQ(request.headers.at("x-source"), "wisp");
    EXPECT_EQ(json::parse(request.body), (json{{"pump", "p7"}, {"level", "high"}}));
  }
  // The sender counts the POST once it has read the reply, just after the sink saw it.
  std::string metrics;
  EXPECT_TRUE(WaitUntil([&] {
    auto r = node_->Request("GET", "/metrics");
    metrics = r.ok() ? r->body : "";
    return metrics.find("wisp_http_actions_total{result=\"sent\"} 1") != std::string::npos;
  })) << metrics;
  EXPECT_NE(metrics.find("wisp_http_action_retries_total 1"), std::string::npos) << metrics;
}

TEST_F(ActionsTest, HttpsPostVerifiedWithTheNodesCaFileArrives) {
  std::string error;
  const auto* certs = tls_test::Certificates::Get(&error);
  if (certs == nullptr) GTEST_SKIP() << error;
  tls_test::TlsEchoServer receiver(certs->Path("server.crt"), certs->Path("server.key"));
  const std::string base = "https://127.0.0.1:" + std::to_string(receiver.port());
  node_->Stop();
  Status started = node_->Start(
      {"--shards", "2", "--broker", broker_.url()},
      "actions:\n  http_allow: [\"" + base +
          "/alerts\"]\n  http_timeout: 2s\n  tls:\n    ca_file: " + certs->Path("ca.crt") + "\n");
  ASSERT_TRUE(started.ok()) << started.ToString();

  HttpResponse r = Post("/v1/functions/notify/invoke",
                        json{{"url", base + "/alerts/pump"}, {"pump", "p7"}}.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["queued"], true) << r.body;
  ASSERT_TRUE(WaitUntil([&] { return !receiver.Received().empty(); }, seconds(10)));
  const std::string received = receiver.Received()[0];
  EXPECT_EQ(received.rfind("POST /alerts/pump\n", 0), 0u) << received;
  EXPECT_NE(received.find("\"pump\":\"p7\""), std::string::npos) << received;
  std::string metrics;
  EXPECT_TRUE(WaitUntil([&] {
    auto m = node_->Request("GET", "/metrics");
    metrics = m.ok() ? m->body : "";
    return metrics.find("wisp_http_actions_total{result=\"sent\"} 1") != std::string::npos;
  })) << metrics;
}

TEST_F(ActionsTest, HttpPostOutsideTheAllowlistIsAClearError) {
  for (const std::string& url :
       {sink_.base() + "/other", sink_.base() + "/hooksX", sink_.base() + "/hooks/../admin",
        std::string("http://127.0.0.1:1/hooks"), std::string("https://example.com/hooks"),
        std::string("not a url")}) {
    HttpResponse r = Post("/v1/functions/notify/invoke", json{{"url", url}, {"pump", "p"}}.dump());
    EXPECT_EQ(r.status, 500) << url << ": " << r.body;
    const std::string message = json::parse(r.body)["error"].value("message", "");
    EXPECT_NE(message.find("ctx.http_post"), std::string::npos) << message;
  }
  EXPECT_NE(Post("/v1/functions/notify/invoke",
                 json{{"url", sink_.base() + "/other"}, {"pump", "p"}}.dump())
                .body.find("actions.http_allow"),
            std::string::npos);
  EXPECT_TRUE(sink_.Received().empty());
}

TEST_F(ActionsTest, AsyncInvokeDeliversToCallbackReplyTopicAndById) {
  Inbox inbox;
  auto client = ConnectTestClient(broker_.url(), "actions-test", inbox, {"replies/#"});
  ASSERT_TRUE(client.ok()) << client.status().ToString();

  HttpHeaders headers = kJson;
  headers.emplace_back("X-Callback-Url", sink_.base() + "/hooks/done");
  headers.emplace_back("X-Reply-Topic", "replies/add");
  HttpResponse accepted =
      Post("/v1/functions/add/invoke-async", json{{"a", 2}, {"b", 40}}.dump(), headers);
  ASSERT_EQ(accepted.status, 202) << accepted.body;
  const std::string id = json::parse(accepted.body)["id"];
  EXPECT_EQ(id.size(), 32u);
  EXPECT_EQ(accepted.Header("X-Call-Id"), id);

  json call = WaitForCall(id);
  EXPECT_EQ(call["state"], "succeeded") << call.dump();
  EXPECT_EQ(call["function"], "add");
  EXPECT_EQ(call["result"]["status"], 200);
  EXPECT_EQ(json::parse(call["result"]["body"].get<std::string>()), (json{{"sum", 42}}));

  auto callbacks = sink_.WaitFor(1);
  ASSERT_EQ(callbacks.size(), 1u);
  EXPECT_EQ(callbacks[0].target, "/hooks/done");
  EXPECT_EQ(callbacks[0].headers.at("x-call-id"), id);
  EXPECT_EQ(callbacks[0].headers.at("x-function-status"), "200");
  EXPECT_EQ(json::parse(callbacks[0].body), (json{{"sum", 42}}));

  ASSERT_TRUE(inbox.WaitForTopic("replies/add"));
  json reply = json::parse(inbox.On("replies/add").front().payload);
  EXPECT_EQ(reply["id"], id);
  EXPECT_EQ(reply["body"], (json{{"sum", 42}}));

  // A failing call is recorded as failed, with the error's kind, and still calls back.
  headers.pop_back();
  accepted = Post("/v1/functions/add/invoke-async", R"({"fail": true})", headers);
  ASSERT_EQ(accepted.status, 202);
  call = WaitForCall(json::parse(accepted.body)["id"]);
  EXPECT_EQ(call["state"], "failed");
  EXPECT_EQ(call["error"]["kind"], "function_error") << call.dump();
  EXPECT_NE(call["error"]["message"].get<std::string>().find("asked to fail"), std::string::npos);
  callbacks = sink_.WaitFor(2);
  ASSERT_EQ(callbacks.size(), 2u);
  EXPECT_EQ(callbacks[1].headers.at("x-wisp-error"), "function_error");
  (*client)->Stop();
}

TEST_F(ActionsTest, CliInvokesAsyncAndFetchesTheResult) {
  const std::map<std::string, std::string> env = {{"WISP_HOME", tmp_.path() + "/data"}};
  CommandResult queued = RunCli({"invoke", "add", "--async", "-d", R"({"a": 20, "b": 22})"}, env);
  ASSERT_EQ(queued.exit_code, 0) << queued.err;
  const std::string id = queued.out.substr(0, queued.out.find('\n'));
  ASSERT_EQ(id.size(), 32u) << queued.out;
  CommandResult result = RunCli({"call", id, "--wait"}, env);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(json::parse(result.out), (json{{"sum", 42}}));

  queued = RunCli({"invoke", "add", "--async", "-d", R"({"fail": true})"}, env);
  ASSERT_EQ(queued.exit_code, 0) << queued.err;
  result = RunCli({"call", queued.out.substr(0, 32), "--wait"}, env);
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.err.find("asked to fail"), std::string::npos) << result.err;

  CommandResult misuse = RunCli({"invoke", "add", "--reply-topic", "x", "-d", "{}"}, env);
  EXPECT_NE(misuse.exit_code, 0);
  EXPECT_NE(misuse.err.find("--async"), std::string::npos) << misuse.err;
}

TEST_F(ActionsTest, AsyncInvokeRefusesBadInputBeforeAccepting) {
  HttpHeaders headers = kJson;
  headers.emplace_back("X-Callback-Url", "http://198.51.100.7/steal");
  HttpResponse r = Post("/v1/functions/add/invoke-async", "{}", headers);
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_NE(r.body.find("X-Callback-Url"), std::string::npos);

  r = Post("/v1/functions/add/invoke-async", "{\"a\": ", kJson);
  EXPECT_EQ(r.status, 400) << r.body;
  r = Post("/v1/functions/nope/invoke-async", "{}");
  EXPECT_EQ(r.status, 404);
  auto missing = node_->Request("GET", "/v1/calls/0123456789abcdef0123456789abcdef");
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->status, 404);
}

// 202 means the call is on disk: a node killed before running it runs it after the restart.
TEST_F(ActionsTest, AcceptedAsyncCallSurvivesKill9) {
  HttpResponse accepted = Post("/v1/functions/once/invoke-async", "");
  ASSERT_EQ(accepted.status, 202) << accepted.body;
  const std::string id = json::parse(accepted.body)["id"];
  // Wait until the first run has started (and hangs), then kill the node. A connection that
  // lands on the hanging shard times out; one on the other shard answers.
  ASSERT_TRUE(WaitUntil([&] {
    auto r = HttpRequest(node_->url(), "POST", "/v1/functions/once/invoke", "", {},
                         std::chrono::milliseconds(300));
    return r.ok() && r->body == "1";
  }));
  auto queued =
      HttpRequest(node_->url(), "GET", "/v1/calls/" + id, "", {}, std::chrono::milliseconds(300));
  if (queued.ok()) {
    EXPECT_EQ(json::parse(queued->body)["state"], "queued");
  }
  node_->Kill();
  StartNode();
  json call = WaitForCall(id);
  EXPECT_EQ(call["state"], "succeeded") << call.dump();
  EXPECT_EQ(call["result"]["body"], "second run");
}

TEST_F(ActionsTest, FullAsyncQueueAnswers429WithRetryAfter) {
  node_->Stop();
  StartNode("async:\n  max_pending: 1\n");
  HttpResponse first = Post("/v1/functions/slow/invoke-async", "");
  ASSERT_EQ(first.status, 202) << first.body;
  // The first call keeps its shard busy; a connection that lands there waits (and times out
  // here), one on the other shard is answered at once: with the first call pending, 429.
  std::optional<HttpResponse> refused;
  for (int i = 0; i < 20 && !refused; ++i) {
    auto r = HttpRequest(node_->url(), "POST", "/v1/functions/slow/invoke-async", "", {},
                         std::chrono::milliseconds(200));
    if (r.ok()) {
      ASSERT_EQ(r->status, 429) << r->body;
      refused = *r;
    }
  }
  ASSERT_TRUE(refused.has_value()) << "no request reached the idle shard";
  EXPECT_EQ(refused->Header("Retry-After"), "1");
  EXPECT_NE(refused->body.find("async.max_pending"), std::string::npos);
  json call = WaitForCall(json::parse(first.body)["id"]);
  EXPECT_EQ(call["error"]["kind"], "timeout") << call.dump();
}

}  // namespace
}  // namespace wisp::testing
