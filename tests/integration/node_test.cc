// End-to-end tests: the real wispd, deployed to and driven by the real wisp CLI, over HTTP.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli/http_client.h"
#include "harness.h"

namespace wisp::testing {
namespace {

using nlohmann::json;

const HttpHeaders kJson = {{"Content-Type", "application/json"}};

class NodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_dir_ = tmp_.path() + "/data";
    node_ = std::make_unique<NodeProcess>(data_dir_, tmp_.path() + "/wispd.log");
  }
  void TearDown() override {
    if (HasFailure())
      std::cerr << "---- wispd log ----\n" << node_->Log() << "-------------------\n";
  }

  void StartNode(const std::vector<std::string>& args = {"--shards", "2"},
                 const std::string& config = "") {
    Status started = node_->Start(args, config);
    ASSERT_TRUE(started.ok()) << started.ToString();
  }

  // The CLI finds the node and its token through the data directory, as a user's would.
  CommandResult Cli(std::vector<std::string> args, const std::string& stdin_text = "") {
    return RunCli(args, {{"WISP_HOME", data_dir_}}, stdin_text);
  }

  void Deploy(const std::string& dir) {
    CommandResult r = Cli({"deploy", dir});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }

  HttpResponse Invoke(const std::string& name, const std::string& body = "",
                      const HttpHeaders& headers = kJson) {
    auto r = node_->Request("POST", "/v1/functions/" + name + "/invoke", body, headers);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : HttpResponse{};
  }

  static std::string ErrorKind(const HttpResponse& r) {
    auto body = json::parse(r.body, nullptr, false);
    return body.is_object() && body.contains("error") ? body["error"].value("kind", "") : "";
  }

  TempDir tmp_;
  std::string data_dir_;
  std::unique_ptr<NodeProcess> node_;
};

TEST_F(NodeTest, ExamplesDeployInvokeAndSurviveRestart) {
  StartNode();
  for (const char* example : {"hello", "counter", "pump-alert"}) {
    Deploy(SourceDir() + "/examples/" + example);
  }

  HttpResponse hello = Invoke("hello");
  EXPECT_EQ(hello.status, 200);
  EXPECT_EQ(hello.body, "Hello from wisp\n");

  // Separate connections land on either shard; the count is one sequence all the same.
  for (int expected = 1; expected <= 4; ++expected) {
    HttpResponse counter = Invoke("counter");
    ASSERT_EQ(counter.status, 200) << counter.body;
    EXPECT_EQ(json::parse(counter.body)["count"], expected);
  }

  HttpResponse calm = Invoke("pump-alert", R"({"pump":"p1","vibration":3.2})");
  EXPECT_EQ(calm.status, 200) << calm.body;
  EXPECT_EQ(json::parse(calm.body)["alert"], false);
  HttpResponse alert = Invoke("pump-alert", R"({"pump":"p7","vibration":9.2})");
  EXPECT_EQ(alert.status, 200) << alert.body;
  EXPECT_EQ(json::parse(alert.body)["alert"], true);
  CommandResult logs = Cli({"logs", "pump-alert"});
  EXPECT_EQ(logs.exit_code, 0) << logs.err;
  EXPECT_NE(logs.out.find("emit plant/alerts/pump"), std::string::npos) << logs.out;
  EXPECT_NE(logs.out.find("p7"), std::string::npos) << logs.out;

  EXPECT_EQ(node_->Stop(SIGTERM), 0) << "graceful shutdown must exit 0";

  // After a restart the functions are served again without a redeploy, and state is intact.
  StartNode();
  CommandResult ls = Cli({"ls", "-q"});
  EXPECT_EQ(ls.exit_code, 0) << ls.err;
  EXPECT_EQ(ls.out, "counter\nhello\npump-alert\n");
  HttpResponse counter = Invoke("counter");
  EXPECT_EQ(json::parse(counter.body)["count"], 5);
  EXPECT_EQ(Invoke("hello").body, "Hello from wisp\n");
  EXPECT_EQ(node_->Stop(SIGINT), 0);
}

// An increment the caller saw acknowledged survives the node being killed outright.
TEST_F(NodeTest, AcknowledgedStateSurvivesKill9) {
  StartNode();
  Deploy(SourceDir() + "/examples/counter");
  for (int expected = 1; expected <= 3; ++expected) {
    EXPECT_EQ(json::parse(Invoke("counter").body)["count"], expected);
  }
  EXPECT_EQ(node_->Stop(SIGKILL), 128 + SIGKILL);
  StartNode();
  EXPECT_EQ(json::parse(Invoke("counter").body)["count"], 4);
}

TEST_F(NodeTest, CliVerbs) {
  StartNode();
  Deploy(SourceDir() + "/examples/hello");

  CommandResult token = Cli({"token"});
  EXPECT_EQ(token.exit_code, 0);
  EXPECT_EQ(token.out, node_->token() + "\n");

  CommandResult invoke = Cli({"invoke", "hello"});
  EXPECT_EQ(invoke.exit_code, 0) << invoke.err;
  EXPECT_EQ(invoke.out, "Hello from wisp\n");

  CommandResult describe = Cli({"describe", "hello", "-o", "json"});
  ASSERT_EQ(describe.exit_code, 0) << describe.err;
  json d = json::parse(describe.out);
  EXPECT_EQ(d["name"], "hello");
  EXPECT_EQ(d["runtime"], "lua");
  EXPECT_GE(d["invocations"].get<int>(), 1);
  EXPECT_GE(d["cold_starts"].get<int>(), 1);
  const std::string deployed_at = d["deployed_at"];  // RFC 3339 with milliseconds, UTC
  EXPECT_EQ(deployed_at.size(), std::string("2026-11-23T18:00:00.000Z").size()) << deployed_at;
  EXPECT_EQ(deployed_at[19], '.');
  EXPECT_EQ(deployed_at.back(), 'Z');

  CommandResult ls = Cli({"ls"});
  EXPECT_EQ(ls.exit_code, 0);
  EXPECT_NE(ls.out.find("hello"), std::string::npos);

  CommandResult rm = Cli({"rm", "hello"});
  EXPECT_EQ(rm.exit_code, 0) << rm.err;
  EXPECT_EQ(Invoke("hello").status, 404);
  CommandResult again = Cli({"rm", "hello"});
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.err.find("hello"), std::string::npos) << again.err;

  CommandResult missing = Cli({"invoke", "nope"});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("nope"), std::string::npos) << missing.err;

  CommandResult bad_dir = Cli({"deploy", tmp_.path() + "/does-not-exist"});
  EXPECT_NE(bad_dir.exit_code, 0);
  EXPECT_FALSE(bad_dir.err.empty());

  const std::string stopped_url = node_->url();
  node_->Stop();
  CommandResult down = Cli({"--server", stopped_url, "ls"});
  EXPECT_NE(down.exit_code, 0);
  EXPECT_NE(down.err.find("wisp up"), std::string::npos) << down.err;
}

TEST_F(NodeTest, BadManifestIsRefusedWithTheField) {
  StartNode();
  tmp_.Write("bad/wisp.yaml",
             "version: 1\nfunctions:\n  bad:\n    runtime: lua\n    handler: handler.lua:handle\n"
             "    limits: { memory: 12Q }\n");
  tmp_.Write("bad/handler.lua", "return { handle = function() return 'x' end }\n");
  CommandResult r = Cli({"deploy", tmp_.path() + "/bad"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("limits.memory"), std::string::npos) << r.err;

  tmp_.Write("broken/wisp.yaml",
             "version: 1\nfunctions:\n  broken:\n    runtime: lua\n    handler: handler.lua\n");
  tmp_.Write("broken/handler.lua", "local M = {\nfunction M.handle( return M\n");
  r = Cli({"deploy", tmp_.path() + "/broken"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("handler.lua"), std::string::npos) << r.err;
  EXPECT_EQ(Cli({"ls", "-q"}).out, "");
}

TEST_F(NodeTest, BadHttpInputGetsClearErrors) {
  StartNode({"--shards", "2"}, "http:\n  max_body: 1Ki\n");
  Deploy(SourceDir() + "/examples/hello");
  Deploy(SourceDir() + "/examples/pump-alert");

  HttpResponse big = Invoke("hello", std::string(4096, 'x'), {{"Content-Type", "text/plain"}});
  EXPECT_EQ(big.status, 413);
  EXPECT_EQ(ErrorKind(big), "resource_exhausted");

  HttpResponse invalid = Invoke("pump-alert", R"({"pump": "p1", "vibration": )");
  EXPECT_EQ(invalid.status, 400);
  EXPECT_EQ(ErrorKind(invalid), "invalid_argument");
  EXPECT_NE(invalid.body.find("not valid JSON"), std::string::npos) << invalid.body;

  HttpResponse unknown = Invoke("no-such-function");
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(ErrorKind(unknown), "not_found");

  auto no_token = node_->Request("GET", "/v1/functions");
  ASSERT_TRUE(no_token.ok());
  EXPECT_EQ(no_token->status, 401);
  EXPECT_EQ(no_token->Header("WWW-Authenticate").value_or(""), "Bearer");
  auto wrong = node_->Request("GET", "/v1/functions", "", {{"Authorization", "Bearer nope"}});
  ASSERT_TRUE(wrong.ok());
  EXPECT_EQ(wrong->status, 401);
  auto right = node_->Request("GET", "/v1/functions", "", {}, /*auth=*/true);
  ASSERT_TRUE(right.ok());
  EXPECT_EQ(right->status, 200);

  // Without the token a deploy is held to the invoke body limit: no stranger can make the node
  // buffer a deploy-sized body.
  auto stranger = node_->Request("POST", "/v1/functions", std::string(64 << 10, 'x'),
                                 {{"Content-Type", "application/cbor"}});
  ASSERT_TRUE(stranger.ok()) << stranger.status().ToString();
  EXPECT_EQ(stranger->status, 413);

  auto no_route = node_->Request("GET", "/nowhere");
  ASSERT_TRUE(no_route.ok());
  EXPECT_EQ(no_route->status, 404);

  // The node still serves after all of that.
  EXPECT_EQ(Invoke("hello").status, 200);
}

TEST_F(NodeTest, TokenProtectedFunction) {
  StartNode();
  tmp_.Write("secret/wisp.yaml",
             "version: 1\nfunctions:\n  secret:\n    runtime: lua\n    handler: handler.lua\n"
             "    auth: token\n");
  tmp_.Write("secret/handler.lua", "return { handle = function() return 'classified' end }\n");
  Deploy(tmp_.path() + "/secret");
  EXPECT_EQ(Invoke("secret").status, 401);
  auto with_token = node_->Request("POST", "/v1/functions/secret/invoke", "", {}, true);
  ASSERT_TRUE(with_token.ok());
  EXPECT_EQ(with_token->status, 200);
  EXPECT_EQ(with_token->body, "classified");
}

// A raw TCP connection to the node at `url_text` (127.0.0.1); -1 on failure.
int ConnectTo(const std::string& url_text) {
  auto url = ParseUrl(url_text);
  if (!url.ok()) return -1;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(url->port);
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Sends raw bytes on a new connection and returns what comes back until the server closes.
std::string RawExchange(const std::string& url_text, const std::string& bytes) {
  int fd = ConnectTo(url_text);
  std::string received;
  if (fd >= 0 &&
      ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size())) {
    char buf[4096];
    pollfd p{fd, POLLIN, 0};
    while (::poll(&p, 1, 10'000) > 0) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      received.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  return received;
}

TEST_F(NodeTest, MalformedChunkedBodyGets400) {
  StartNode({"--shards", "1"});
  Deploy(SourceDir() + "/examples/hello");
  const std::string reply = RawExchange(
      node_->url(),
      "POST /v1/functions/hello/invoke HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      "ZZ\r\nhello\r\n0\r\n\r\n");
  EXPECT_TRUE(reply.starts_with("HTTP/1.1 400")) << reply;
  EXPECT_NE(reply.find("malformed HTTP request"), std::string::npos) << reply;
  EXPECT_EQ(Invoke("hello").status, 200);
}

// A request stalled mid-body at shutdown must not keep the node from exiting cleanly: after the
// drain timeout its loop is stopped and everything torn down in order.
TEST_F(NodeTest, ShutdownWithAStalledRequestExitsCleanly) {
  StartNode({"--shards", "1"}, "drain_timeout: 500ms\nhttp:\n  body_timeout: 30s\n");
  int fd = ConnectTo(node_->url());
  ASSERT_GE(fd, 0);
  const std::string partial =
      "POST /v1/functions/x/invoke HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789";
  ASSERT_EQ(::send(fd, partial.data(), partial.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(partial.size()));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let the node read the head
  EXPECT_EQ(node_->Stop(SIGTERM), 0);
  ::close(fd);
}

// A connection that trickles its request head is cut at the header timeout while everyone
// else keeps being served.
TEST_F(NodeTest, SlowHeadersAreCutOff) {
  StartNode({"--shards", "1"}, "http:\n  header_timeout: 1s\n");
  Deploy(SourceDir() + "/examples/hello");
  int fd = ConnectTo(node_->url());
  ASSERT_GE(fd, 0);
  const std::string head = "POST /v1/functions/hello/invoke HTTP/1.1\r\nHost: x\r\nX-Slow: ";
  bool closed = false;
  std::string received;
  // Up to 15 s of one byte per 200 ms: far longer than the 1 s header timeout.
  for (int i = 0; i < 75 && !closed; ++i) {
    const char byte = i < static_cast<int>(head.size()) ? head[i] : 'a';
    if (::send(fd, &byte, 1, MSG_NOSIGNAL) != 1) {
      closed = true;
      break;
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 200) > 0) {
      char buf[1024];
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0)
        closed = true;
      else
        received.append(buf, static_cast<std::size_t>(n));
    }
    if (i == 10) {
      EXPECT_EQ(Invoke("hello").status, 200) << "others are served meanwhile";
    }
  }
  ::close(fd);
  EXPECT_TRUE(closed) << "the server never closed a connection trickling its head";
  EXPECT_EQ(received, "") << "no reply is owed to a request that never arrived";
  EXPECT_EQ(Invoke("hello").status, 200);
}

TEST_F(NodeTest, MisbehavingFunctionsAreContained) {
  StartNode({"--shards", "1"});
  tmp_.Write("bad/wisp.yaml", R"(version: 1
functions:
  spin:
    runtime: lua
    handler: spin.lua
    limits: { timeout: 200ms }
  hog:
    runtime: lua
    handler: hog.lua
    limits: { memory: 8Mi }
  boom:
    runtime: lua
    handler: boom.lua
  escape:
    runtime: lua
    handler: escape.lua
)");
  tmp_.Write("bad/spin.lua", "return { handle = function() while true do end end }\n");
  tmp_.Write("bad/hog.lua",
             "return { handle = function() local t = {} for i = 1, 1e9 do t[i] = "
             "string.rep('x', 1024) .. i end end }\n");
  tmp_.Write("bad/boom.lua",
             "return { handle = function(event) if event.body == 'ok' then return 'fine' end "
             "error('pump table missing') end }\n");
  tmp_.Write("bad/escape.lua",
             "return { handle = function() return io.open('/etc/passwd') end }\n");
  Deploy(tmp_.path() + "/bad");
  Deploy(SourceDir() + "/examples/hello");

  HttpResponse spin = Invoke("spin");
  EXPECT_EQ(spin.status, 504) << spin.body;
  EXPECT_EQ(ErrorKind(spin), "timeout");

  HttpResponse hog = Invoke("hog");
  EXPECT_EQ(hog.status, 500) << hog.body;
  EXPECT_EQ(ErrorKind(hog), "resource_exhausted");

  HttpResponse boom = Invoke("boom", "no", {{"Content-Type", "text/plain"}});
  EXPECT_EQ(boom.status, 500);
  EXPECT_EQ(ErrorKind(boom), "function_error");
  EXPECT_NE(boom.body.find("pump table missing"), std::string::npos) << boom.body;
  HttpResponse fine = Invoke("boom", "ok", {{"Content-Type", "text/plain"}});
  EXPECT_EQ(fine.status, 200);
  EXPECT_EQ(fine.body, "fine");

  HttpResponse escape = Invoke("escape");
  EXPECT_EQ(escape.status, 500);
  EXPECT_EQ(ErrorKind(escape), "function_error");

  // Replaced instances serve again, and everyone else was never affected.
  EXPECT_EQ(Invoke("spin").status, 504);
  EXPECT_EQ(Invoke("hello").status, 200);

  auto metrics = node_->Request("GET", "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->body.find("wisp_function_timeouts_total{function=\"spin\"} 2"),
            std::string::npos);
  EXPECT_NE(metrics->body.find(
                "wisp_function_errors_total{function=\"hog\",kind=\"resource_exhausted\"} 1"),
            std::string::npos);
  EXPECT_NE(metrics->body.find("wisp_function_invocations_total{function=\"hello\",runtime=\"lua\","
                               "trigger=\"http\",status=\"success\"} 1"),
            std::string::npos)
      << metrics->body;
}

// SIGTERM while a call runs: the call completes, then the node exits 0.
TEST_F(NodeTest, GracefulShutdownDrainsInFlightCalls) {
  StartNode({"--shards", "1"});
  tmp_.Write("slow/wisp.yaml",
             "version: 1\nfunctions:\n  slow:\n    runtime: lua\n    handler: handler.lua\n"
             "    limits: { timeout: 10s }\n");
  tmp_.Write("slow/handler.lua",
             "return { handle = function(event, ctx) local t = ctx.now() "
             "while ctx.now() - t < 1.0 do end return 'done' end }\n");
  Deploy(tmp_.path() + "/slow");

  std::atomic<int> status{0};
  std::string body;
  std::thread caller([&] {
    auto r = node_->Request("POST", "/v1/functions/slow/invoke");
    if (r.ok()) {
      body = r->body;
      status = r->status;
    }
  });
  // The handler runs for a second; signal well inside it (a sync point, not a timing check).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(node_->Stop(SIGTERM), 0);
  caller.join();
  EXPECT_EQ(status.load(), 200);
  EXPECT_EQ(body, "done");
}

TEST_F(NodeTest, TimerTriggersFireAndDoNotBlockShutdown) {
  StartNode();
  tmp_.Write("tick/wisp.yaml",
             "version: 1\nfunctions:\n  tick:\n    runtime: lua\n    handler: handler.lua\n"
             "    triggers:\n      - timer: { interval: 100ms }\n");
  tmp_.Write("tick/handler.lua",
             "return { handle = function(event, ctx)\n"
             "  if event.trigger == 'timer' then ctx.state:incr('ticks') return end\n"
             "  return { ticks = tonumber(ctx.state:get('ticks') or '0') }\n"
             "end }\n");
  Deploy(tmp_.path() + "/tick");
  int ticks = 0;
  for (int i = 0; i < 300 && ticks < 3; ++i) {
    ticks = json::parse(Invoke("tick").body)["ticks"];
    if (ticks < 3) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_GE(ticks, 3) << "the 100ms timer did not fire three times in 15 s";
  auto metrics = node_->Request("GET", "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->body.find("trigger=\"timer\",status=\"success\""), std::string::npos);
  // Armed timers must not keep the node from draining.
  EXPECT_EQ(node_->Stop(SIGTERM), 0);
}

TEST_F(NodeTest, SecondNodeOnTheSameDataDirIsRefused) {
  StartNode();
  NodeProcess second(data_dir_, tmp_.path() + "/second.log");
  Status s = second.Start();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(second.Log().find("another wisp node"), std::string::npos) << second.Log();
}

}  // namespace
}  // namespace wisp::testing
