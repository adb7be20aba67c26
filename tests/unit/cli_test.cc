// The `wisp` CLI's pure parts: URL parsing, where the server and token come from, reply
// formatting and error wording; and the HTTP client against a scripted one-shot socket server.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "cli/client_config.h"
#include "cli/commands.h"
#include "cli/http_client.h"
#include "node/node.h"

namespace wisp {
namespace {

namespace fs = std::filesystem;

// gtest alone (no gmock): the unit test target links only gtest.
::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << text << "' does not contain '" << part << "'";
}

// ---- URLs

TEST(ParseUrlTest, HostAndPort) {
  auto url = ParseUrl("http://127.0.0.1:8080");
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  EXPECT_EQ(url->host, "127.0.0.1");
  EXPECT_EQ(url->port, 8080);
  EXPECT_EQ(url->base_path, "");
  EXPECT_EQ(url->ToString(), "http://127.0.0.1:8080");
}

TEST(ParseUrlTest, DefaultsAndNormalisation) {
  auto url = ParseUrl("  HTTP://Edge-3.Plant/ ");
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  EXPECT_EQ(url->host, "edge-3.plant");
  EXPECT_EQ(url->port, 80);
  EXPECT_EQ(url->ToString(), "http://edge-3.plant:80");

  auto bare = ParseUrl("localhost:9000");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->host, "localhost");
  EXPECT_EQ(bare->port, 9000);
}

TEST(ParseUrlTest, BasePathAndIpv6) {
  auto url = ParseUrl("http://[::1]:8081/wisp/");
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  EXPECT_EQ(url->host, "::1");
  EXPECT_EQ(url->port, 8081);
  EXPECT_EQ(url->base_path, "/wisp");
  EXPECT_EQ(url->ToString(), "http://[::1]:8081/wisp");
}

TEST(ParseUrlTest, HttpsDefaultsToPort443) {
  auto https = ParseUrl("HTTPS://Node");
  ASSERT_TRUE(https.ok()) << https.status().ToString();
  EXPECT_TRUE(https->https);
  EXPECT_EQ(https->port, 443);
  EXPECT_EQ(https->ToString(), "https://node:443");
  auto with_port = ParseUrl("https://node:8443/wisp");
  ASSERT_TRUE(with_port.ok());
  EXPECT_EQ(with_port->port, 8443);
  EXPECT_EQ(with_port->ToString(), "https://node:8443/wisp");
  EXPECT_FALSE(ParseUrl("http://node")->https);
  EXPECT_NE(*ParseUrl("http://node:443"), *ParseUrl("https://node"));
}

TEST(ParseUrlTest, RefusesWhatItCannotServe) {
  auto ftp = ParseUrl("ftp://node:21");
  ASSERT_FALSE(ftp.ok());
  EXPECT_EQ(ftp.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(ftp.status().message(), "only http:// and https://"));

  for (const char* bad :
       {"", "ftp://x", "http://", "http://:80", "http://h:0", "http://h:70000", "http://h:8x",
        "http://u:p@h:80", "http://h/?q=1", "http://h#f", "::1:80", "http://[::1"}) {
    EXPECT_FALSE(ParseUrl(bad).ok()) << bad;
  }
}

TEST(HttpResponseTest, HeaderLookupIgnoresCase) {
  HttpResponse r;
  r.headers = {{"Content-Type", "text/plain"}, {"X-Wisp-Duration-Us", "12"}};
  EXPECT_EQ(r.Header("content-type").value_or(""), "text/plain");
  EXPECT_EQ(r.Header("X-WISP-DURATION-US").value_or(""), "12");
  EXPECT_FALSE(r.Header("x-wisp-cold-start").has_value());
}

TEST(SameNodeTest, LocalhostIsLoopback) {
  EXPECT_TRUE(SameNode(*ParseUrl("http://localhost:8080"), *ParseUrl("http://127.0.0.1:8080/")));
  EXPECT_FALSE(SameNode(*ParseUrl("http://127.0.0.1:8081"), *ParseUrl("http://127.0.0.1:8080")));
  EXPECT_FALSE(SameNode(*ParseUrl("http://10.0.0.2:8080"), *ParseUrl("http://127.0.0.1:8080")));
}

// ---- Server and token resolution

class ResolveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("wisp-cli-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void Write(const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::binary) << text;
  }
  void WriteToken(const std::string& token) { Write(TokenPath(dir_), token); }
  void WriteNodeInfo(const std::string& url) {
    Write(NodeInfoPath(dir_), R"({"url":")" + url + R"(","pid":123})");
  }
  ClientInputs Inputs() {
    ClientInputs in;
    in.data_flag = dir_.string();
    return in;
  }

  fs::path dir_;
};

TEST_F(ResolveTest, NothingGivenUsesDefaultUrlAndLocalToken) {
  WriteToken("  s3cret\n");
  auto e = ResolveEndpoint(Inputs());
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->url.ToString(), kDefaultServerUrl);
  EXPECT_EQ(e->token, "s3cret");
  EXPECT_EQ(e->token_source, TokenPath(dir_));
  EXPECT_EQ(e->data_dir, dir_.string());
}

TEST_F(ResolveTest, NoTokenFileMeansNoToken) {
  auto e = ResolveEndpoint(Inputs());
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->token, "");
}

TEST_F(ResolveTest, NodeInfoGivesTheUrl) {
  WriteToken("tok");
  WriteNodeInfo("http://127.0.0.1:43121");
  auto e = ResolveEndpoint(Inputs());
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->url.port, 43121);
  EXPECT_EQ(e->token, "tok");
}

TEST_F(ResolveTest, MalformedNodeInfoIsIgnored) {
  Write(NodeInfoPath(dir_), "{not json");
  auto e = ResolveEndpoint(Inputs());
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->url.ToString(), kDefaultServerUrl);
}

TEST_F(ResolveTest, LocalTokenOnlyGoesToTheLocalNode) {
  WriteToken("tok");
  WriteNodeInfo("http://127.0.0.1:43121");

  auto in = Inputs();
  in.server_flag = "http://localhost:43121";
  auto same = ResolveEndpoint(in);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->token, "tok");

  in.server_flag = "http://10.1.2.3:8080";
  auto other = ResolveEndpoint(in);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->url.host, "10.1.2.3");
  EXPECT_EQ(other->token, "");

  in.server_flag = "";
  in.env_url = "http://10.1.2.3:8080";
  auto from_env = ResolveEndpoint(in);
  ASSERT_TRUE(from_env.ok());
  EXPECT_EQ(from_env->url.host, "10.1.2.3");
  EXPECT_EQ(from_env->token, "");
}

TEST_F(ResolveTest, FlagsBeatEnvironment) {
  WriteToken("file-token");
  auto in = Inputs();
  in.env_url = "http://10.0.0.1:1";
  in.server_flag = "http://10.0.0.2:2";
  in.env_token = "env-token";
  auto e = ResolveEndpoint(in);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->url.host, "10.0.0.2");
  EXPECT_EQ(e->token, "env-token");
  EXPECT_EQ(e->token_source, "WISP_TOKEN");

  in.token_flag = "flag-token";
  e = ResolveEndpoint(in);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->token, "flag-token");
  EXPECT_EQ(e->token_source, "--token");
}

TEST_F(ResolveTest, HttpsServerIsAccepted) {
  auto in = Inputs();
  in.server_flag = "https://node:8443";
  auto e = ResolveEndpoint(in);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_TRUE(e->url.https);
  EXPECT_EQ(e->url.port, 8443);
}

TEST_F(ResolveTest, UnknownSchemeIsAClearError) {
  auto in = Inputs();
  in.server_flag = "ftp://node:8443";
  auto e = ResolveEndpoint(in);
  ASSERT_FALSE(e.ok());
  EXPECT_TRUE(Contains(e.status().message(), "--server"));
  EXPECT_TRUE(Contains(e.status().message(), "only http:// and https://"));
}

TEST_F(ResolveTest, TokenCommandReadsAndExplains) {
  auto missing = ReadLocalToken(dir_.string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(Contains(missing.status().message(), "wisp up"));

  WriteToken("abc\n");
  std::ostringstream out;
  ASSERT_TRUE(RunToken(dir_.string(), out).ok());
  EXPECT_EQ(out.str(), "abc\n");
}

// ---- Formatting

TEST(FormatTest, TableAlignsColumns) {
  EXPECT_EQ(FormatTable({{"NAME", "RUNTIME"}, {"pump-alert", "lua"}, {"hi", "lua"}}),
            "NAME         RUNTIME\n"
            "pump-alert   lua\n"
            "hi           lua\n");
}

TEST(FormatTest, FunctionList) {
  const std::string body = R"({"functions":[
    {"name":"counter","runtime":"lua","version":"1.0.0","auth":"public","invocations":3,
     "errors":0,"instances":2},
    {"name":"pump-alert","runtime":"lua","version":"1.2.0","auth":"token","invocations":12,
     "errors":1,"instances":1}]})";
  auto table = FormatFunctionList(body, false);
  ASSERT_TRUE(table.ok()) << table.status().ToString();
  EXPECT_EQ(*table,
            "NAME         RUNTIME   VERSION   INVOCATIONS   ERRORS   INSTANCES   AUTH\n"
            "counter      lua       1.0.0     3             0        2           public\n"
            "pump-alert   lua       1.2.0     12            1        1           token\n");
  auto names = FormatFunctionList(body, true);
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, "counter\npump-alert\n");
}

TEST(FormatTest, EmptyListSaysHowToDeploy) {
  auto text = FormatFunctionList(R"({"functions":[]})", false);
  ASSERT_TRUE(text.ok());
  EXPECT_TRUE(Contains(*text, "wisp deploy"));
  EXPECT_EQ(*FormatFunctionList(R"({"functions":[]})", true), "");
}

TEST(FormatTest, NotJsonIsAnError) {
  EXPECT_FALSE(FormatFunctionList("<html>", false).ok());
  EXPECT_FALSE(FormatFunctionList(R"({"other":1})", false).ok());
  EXPECT_FALSE(FormatLogs("[]").ok());
}

TEST(FormatTest, DetailsPutIdentityFirstAndNest) {
  auto text = FormatFunctionDetails(R"({"zeta":true,"files":["handler.lua","wisp.yaml"],
    "environment":{"VIBRATION_LIMIT":"7.1"},"labels":{},"name":"pump-alert","runtime":"lua",
    "limits":{"memory_bytes":33554432,"timeout_ms":2000},"avg_duration_ms":0.05})");
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_EQ(*text,
            "name:            pump-alert\n"
            "runtime:         lua\n"
            "avg_duration_ms: 0.05\n"
            "limits:\n"
            "  memory_bytes: 33554432\n"
            "  timeout_ms:   2000\n"
            "environment:\n"
            "  VIBRATION_LIMIT: 7.1\n"
            "labels:          (none)\n"
            "files:\n"
            "  - handler.lua\n"
            "  - wisp.yaml\n"
            "zeta:            true\n");
}

TEST(FormatTest, LogsOneLinePerEntry) {
  auto text = FormatLogs(R"({"logs":[
    {"time":"2026-11-23T18:00:00.000Z","level":"info","message":"started"},
    {"time":"2026-11-23T18:00:01.000Z","level":"error","message":"boom\ntraceback\n"}]})");
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_EQ(*text,
            "2026-11-23T18:00:00.000Z info  started\n"
            "2026-11-23T18:00:01.000Z error boom\n"
            "    traceback\n");
}

TEST(FormatTest, DeployedAndHealth) {
  auto deployed =
      FormatDeployed(R"({"deployed":[{"name":"hello","version":"1.0.0","runtime":"lua"}]})");
  ASSERT_TRUE(deployed.ok());
  EXPECT_EQ(*deployed, "deployed hello (runtime lua, version 1.0.0)\n");
  auto health = FormatHealth(R"({"status":"ok","version":"0.1.0","shards":2,"functions":3})");
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(*health, "ok: wisp 0.1.0, 2 shards, 3 functions\n");
}

TEST(FormatTest, FunctionPathEncodesTheName) {
  EXPECT_EQ(FunctionPath("pump-alert"), "/v1/functions/pump-alert");
  EXPECT_EQ(FunctionPath("../x?y"), "/v1/functions/..%2Fx%3Fy");
}

// ---- Error wording

HttpResponse Reply(int status, std::string body, HttpHeaders headers = {}) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  r.headers = std::move(headers);
  return r;
}

TEST(ReplyErrorTest, Unauthorized) {
  Status refused = ReplyError(Reply(401, ""), "", /*sent_token=*/true);
  EXPECT_EQ(refused.code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(refused.message(),
            "the node refused the token: pass --token or set WISP_TOKEN (`wisp token` prints "
            "the local node's token)");
  EXPECT_TRUE(Contains(ReplyError(Reply(401, ""), "", false).message(), "wants a token"));
}

TEST(ReplyErrorTest, MissingFunction) {
  const std::string not_found = R"({"error":{"kind":"not_found","message":"no such function"}})";
  EXPECT_EQ(ReplyError(Reply(404, not_found, {{"X-Wisp-Error", "not_found"}}), "x", true).message(),
            "no function named 'x' (see `wisp ls`)");
  // A handler that answered 404 itself (no X-Wisp-Error) is not a missing function.
  Status from_handler = ReplyError(Reply(404, not_found), "x", true);
  EXPECT_EQ(from_handler.message(), "not_found: no such function");
}

TEST(ReplyErrorTest, NodeErrorKindAndMessage) {
  Status s = ReplyError(
      Reply(400, R"({"error":{"kind":"invalid_argument","message":"wisp.yaml: bad"}})"), "", true);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "invalid_argument: wisp.yaml: bad");
  Status t =
      ReplyError(Reply(504, R"({"error":{"kind":"timeout","message":"past 2s"}})"), "f", true);
  EXPECT_EQ(t.code(), StatusCode::kDeadlineExceeded);
  Status other = ReplyError(Reply(502, "<html>bad gateway</html>"), "", true);
  EXPECT_EQ(other.message(), "HTTP 502: <html>bad gateway</html>");
}

// ---- The HTTP client against a scripted server

// Accepts one connection on 127.0.0.1, reads the request head (and as much body as
// Content-Length says), then sends `reply` (or nothing, when `reply` is empty) and closes.
class OneShotServer {
 public:
  explicit OneShotServer(std::string reply, std::chrono::milliseconds hold = {})
      : reply_(std::move(reply)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::listen(fd_, 1);
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this, hold] {
      int conn = ::accept(fd_, nullptr, nullptr);
      if (conn < 0) return;
      char buf[4096];
      while (true) {
        auto head_end = request_.find("\r\n\r\n");
        if (head_end != std::string::npos) {
          auto cl = request_.find("Content-Length: ");
          std::size_t body = cl == std::string::npos ? 0 : std::stoul(request_.substr(cl + 16));
          if (request_.size() >= head_end + 4 + body) break;
        }
        ssize_t n = ::read(conn, buf, sizeof(buf));
        if (n <= 0) break;
        request_.append(buf, static_cast<std::size_t>(n));
      }
      if (hold.count() > 0) std::this_thread::sleep_for(hold);
      if (!reply_.empty()) (void)::write(conn, reply_.data(), reply_.size());
      ::close(conn);
    });
  }
  ~OneShotServer() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // The request as received; read it only after the client call returned.
  const std::string& request() const { return request_; }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::string reply_;
  std::string request_;
  std::thread thread_;
};

TEST(HttpRequestTest, SendsAndReads) {
  OneShotServer server(
      "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Wisp-Cold-Start: 1\r\n"
      "Content-Length: 11\r\n\r\n{\"ok\":true}");
  auto reply = HttpRequest(server.url(), "POST", "/v1/functions/hello/invoke?x=1", R"({"a":1})",
                           {{"Content-Type", "application/json"}});
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  EXPECT_EQ(reply->status, 201);
  EXPECT_EQ(reply->body, R"({"ok":true})");
  EXPECT_EQ(reply->Header("x-wisp-cold-start").value_or(""), "1");
  const std::string& request = server.request();
  EXPECT_TRUE(Contains(request, "POST /v1/functions/hello/invoke?x=1 HTTP/1.1\r\n"));
  EXPECT_TRUE(Contains(request, "Content-Type: application/json\r\n"));
  EXPECT_TRUE(Contains(request, "Content-Length: 7\r\n"));
  EXPECT_TRUE(Contains(request, "\r\n\r\n{\"a\":1}"));
}

TEST(HttpRequestTest, ErrorStatusIsAValue) {
  OneShotServer server("HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno");
  auto reply = HttpRequest(server.url(), "GET", "/nope");
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  EXPECT_EQ(reply->status, 404);
  EXPECT_EQ(reply->body, "no");
}

TEST(HttpRequestTest, HeadReplyHasNoBody) {
  OneShotServer server("HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n");
  auto reply = HttpRequest(server.url(), "HEAD", "/");
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  EXPECT_EQ(reply->status, 200);
  EXPECT_EQ(reply->body, "");
}

TEST(HttpRequestTest, TruncatedReplyIsIoError) {
  OneShotServer server("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort");
  auto reply = HttpRequest(server.url(), "GET", "/");
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), StatusCode::kIoError);
}

TEST(HttpRequestTest, SilentServerTimesOut) {
  OneShotServer server("", std::chrono::milliseconds(800));
  auto start = std::chrono::steady_clock::now();
  auto reply = HttpRequest(server.url(), "GET", "/", {}, {}, std::chrono::milliseconds(200));
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(700));
}

TEST(HttpRequestTest, RefusedConnectionSaysStartANode) {
  // A port that was just free: nothing listens on it.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  auto url = ParseUrl("http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)));
  ASSERT_TRUE(url.ok());

  auto reply = HttpRequest(*url, "GET", "/healthz");
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), StatusCode::kUnavailable);
  Status s = DescribeTransportError(reply.status(), *url, std::chrono::seconds(5));
  EXPECT_EQ(s.message(), "cannot reach the wisp node at " + url->ToString() +
                             ": connection refused. Is it running? Start one with `wisp up`.");
}

TEST(HttpRequestTest, RefusesBadInput) {
  EXPECT_FALSE(HttpRequest("ftp://x", "GET", "/").ok());
  EXPECT_FALSE(HttpRequest("http://127.0.0.1:1", "G ET", "/").ok());
  EXPECT_FALSE(HttpRequest("http://127.0.0.1:1", "GET", "no-slash").ok());
  EXPECT_FALSE(HttpRequest("http://127.0.0.1:1", "GET", "/", {}, {{"X", "a\r\nB: c"}}).ok());
}

}  // namespace
}  // namespace wisp
