// The asynchronous HTTP client (src/http/async_client.h) against a real server on loopback: a
// small Beast server on its own thread whose behaviour is chosen by the request target.
#include <utility>  // before Asio (see src/http/client.cc)

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "http/async_client.h"
#include "http/client.h"

namespace wisp {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using std::chrono::milliseconds;

// Replies by target:
//   /status/NNN  status NNN, body "status NNN"
//   /silent      reads the request and never answers; keeps the connection open until the end
//   /huge        announces a body one byte over kMaxReplyBodyBytes, then sends a few bytes
//   /enormous    the same with 1 TiB announced
//   /truncated   announces 100 bytes, sends 13 and closes
//   /garbage     answers with bytes that are not HTTP
//   anything else  200, body "METHOD TARGET\nBODY", X-Echo = the request's X-Test header
class LoopbackServer {
 public:
  LoopbackServer() : acceptor_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    Accept();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~LoopbackServer() {
    io_.stop();
    thread_.join();
  }

  Url url(std::string base_path = "") const {
    return Url{"127.0.0.1", acceptor_.local_endpoint().port(), std::move(base_path)};
  }
  // Requests to /silent read so far.
  int silent_requests() const { return silent_requests_.load(); }

 private:
  struct Session {
    explicit Session(tcp::socket s) : socket(std::move(s)) {}
    tcp::socket socket;
    beast::flat_buffer buffer;
    http::request<http::string_body> request;
    http::response<http::string_body> response;
    std::string raw;
  };

  void Accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
      if (ec) return;
      auto session = std::make_shared<Session>(std::move(socket));
      http::async_read(session->socket, session->buffer, session->request,
                       [this, session](boost::system::error_code ec, std::size_t) {
                         if (!ec) Answer(session);
                       });
      Accept();
    });
  }

  void Answer(const std::shared_ptr<Session>& session) {
    const std::string target(session->request.target());
    if (target == "/silent") {
      silent_.push_back(session);  // held, unanswered, until the server goes
      ++silent_requests_;
      return;
    }
    auto closed = [session](boost::system::error_code, std::size_t) {
      boost::system::error_code ignored;
      session->socket.shutdown(tcp::socket::shutdown_send, ignored);
    };
    if (target == "/huge" || target == "/enormous" || target == "/truncated") {
      const std::uint64_t announced = target == "/huge"       ? kMaxReplyBodyBytes + 1
                                      : target == "/enormous" ? std::uint64_t{1} << 40
                                                              : 100;
      session->raw = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(announced) +
                     "\r\n\r\nnot all of it";
      asio::async_write(session->socket, asio::buffer(session->raw), closed);
      return;
    }
    if (target == "/garbage") {
      session->raw = "this is not HTTP\r\n\r\n";
      asio::async_write(session->socket, asio::buffer(session->raw), closed);
      return;
    }
    auto& response = session->response;
    response.version(11);
    if (target.rfind("/status/", 0) == 0) {
      response.result(std::stoi(target.substr(8)));
      response.body() = "status " + target.substr(8);
    } else {
      response.result(http::status::ok);
      response.set("X-Echo", session->request["X-Test"]);
      response.body() = std::string(session->request.method_string()) + " " + target + "\n" +
                        session->request.body();
    }
    response.set(http::field::content_type, "text/plain");
    response.set(http::field::connection, "close");
    response.prepare_payload();
    http::async_write(session->socket, response, closed);
  }

  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::vector<std::shared_ptr<Session>> silent_;  // server thread only
  std::atomic<int> silent_requests_{0};
  std::thread thread_;
};

// A port nothing listens on: bound once to learn a free number, then released.
std::uint16_t ClosedPort() {
  asio::io_context io;
  tcp::acceptor probe(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return probe.local_endpoint().port();
}

// Runs one request to completion on a private io_context and counts the calls to done.
struct Outcome {
  std::optional<Result<HttpResponse>> result;
  int calls = 0;
};
Outcome RunRequest(const Url& url, std::string method, std::string target, std::string body = "",
                   HttpHeaders headers = {}, milliseconds timeout = milliseconds(10'000)) {
  asio::io_context io;
  Outcome outcome;
  AsyncHttpRequest(io, url, std::move(method), std::move(target), std::move(body),
                   std::move(headers), timeout, [&](Result<HttpResponse> result) {
                     ++outcome.calls;
                     outcome.result = std::move(result);
                   });
  io.run();
  return outcome;
}

TEST(AsyncHttpClientTest, RoundTripsBodyAndHeaders) {
  LoopbackServer server;
  auto outcome = RunRequest(server.url("/base"), "POST", "/echo?x=1", R"({"a":1})",
                            {{"X-Test", "hello"}, {"Content-Type", "application/json"}});
  ASSERT_EQ(outcome.calls, 1);
  ASSERT_TRUE(outcome.result->ok()) << outcome.result->status().ToString();
  const HttpResponse& reply = **outcome.result;
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, "POST /base/echo?x=1\n{\"a\":1}");
  EXPECT_EQ(reply.Header("x-echo"), "hello");
  EXPECT_EQ(reply.Header("Content-Type"), "text/plain");
}

TEST(AsyncHttpClientTest, NonOkStatusIsAValue) {
  LoopbackServer server;
  auto outcome = RunRequest(server.url(), "GET", "/status/503");
  ASSERT_EQ(outcome.calls, 1);
  ASSERT_TRUE(outcome.result->ok()) << outcome.result->status().ToString();
  EXPECT_EQ((*outcome.result)->status, 503);
  EXPECT_EQ((*outcome.result)->body, "status 503");
}

TEST(AsyncHttpClientTest, RefusedPortIsUnavailable) {
  const Url url{"127.0.0.1", ClosedPort(), ""};
  auto outcome = RunRequest(url, "POST", "/v1/functions/big/invoke", "{}");
  ASSERT_EQ(outcome.calls, 1);
  ASSERT_FALSE(outcome.result->ok());
  EXPECT_EQ(outcome.result->status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(outcome.result->status().message().rfind(url.ToString() + ": ", 0), 0u)
      << outcome.result->status().message();
}

TEST(AsyncHttpClientTest, SilentServerIsDeadlineExceeded) {
  LoopbackServer server;
  auto outcome = RunRequest(server.url(), "POST", "/silent", "{}", {}, milliseconds(300));
  ASSERT_EQ(outcome.calls, 1);
  ASSERT_FALSE(outcome.result->ok());
  EXPECT_EQ(outcome.result->status().code(), StatusCode::kDeadlineExceeded)
      << outcome.result->status().ToString();
  EXPECT_EQ(outcome.result->status().message().rfind(server.url().ToString() + ": ", 0), 0u);
  EXPECT_EQ(server.silent_requests(), 1);  // the request did reach the server
}

// The deadline counts from the call, so a request whose deadline passed before `io` started it
// is not sent (a zero timeout has always passed by then).
TEST(AsyncHttpClientTest, DeadlinePassedBeforeTheStartIsDeadlineExceeded) {
  LoopbackServer server;
  for (std::string host : {"127.0.0.1", "localhost"}) {
    Url url = server.url();
    url.host = host;
    auto outcome = RunRequest(url, "GET", "/echo", "", {}, milliseconds(0));
    ASSERT_EQ(outcome.calls, 1) << host;
    ASSERT_FALSE(outcome.result->ok()) << host;
    EXPECT_EQ(outcome.result->status().code(), StatusCode::kDeadlineExceeded)
        << outcome.result->status().ToString();
  }
}

TEST(AsyncHttpClientTest, OversizedReplyIsResourceExhausted) {
  LoopbackServer server;
  auto outcome = RunRequest(server.url(), "GET", "/huge");
  ASSERT_EQ(outcome.calls, 1);
  ASSERT_FALSE(outcome.result->ok());
  EXPECT_EQ(outcome.result->status().code(), StatusCode::kResourceExhausted)
      << outcome.result->status().ToString();
}

// An announced size far beyond memory, with body bytes in the same segment as the header: the
// limit must hold before the body is allocated (Beast's eager parse alone lets this through).
TEST(AsyncHttpClientTest, EnormousAnnouncedReplyIsResourceExhaustedInBothClients) {
  LoopbackServer server;
  auto outcome = RunRequest(server.url(), "GET", "/enormous");
  ASSERT_EQ(outcome.calls, 1);
  ASSERT_FALSE(outcome.result->ok());
  EXPECT_EQ(outcome.result->status().code(), StatusCode::kResourceExhausted)
      << outcome.result->status().ToString();
  auto blocking = HttpRequest(server.url(), "GET", "/enormous");
  ASSERT_FALSE(blocking.ok());
  EXPECT_EQ(blocking.status().code(), StatusCode::kResourceExhausted)
      << blocking.status().ToString();
}

TEST(AsyncHttpClientTest, BrokenRepliesAreIoErrorsInBothClients) {
  LoopbackServer server;
  for (auto [target, says] : std::vector<std::pair<std::string, std::string>>{
           {"/truncated", "connection closed before the reply was complete"},
           {"/garbage", "the reply is not valid HTTP"}}) {
    auto outcome = RunRequest(server.url(), "GET", target);
    ASSERT_EQ(outcome.calls, 1) << target;
    ASSERT_FALSE(outcome.result->ok()) << target;
    EXPECT_EQ(outcome.result->status().code(), StatusCode::kIoError)
        << outcome.result->status().ToString();
    EXPECT_NE(outcome.result->status().message().find(says), std::string::npos)
        << outcome.result->status().ToString();
    auto blocking = HttpRequest(server.url(), "GET", target);
    ASSERT_FALSE(blocking.ok()) << target;
    EXPECT_EQ(outcome.result->status().ToString(), blocking.status().ToString());
  }
}

TEST(AsyncHttpClientTest, HeadReplyHasNoBody) {
  LoopbackServer server;
  auto outcome = RunRequest(server.url(), "HEAD", "/echo");
  ASSERT_EQ(outcome.calls, 1);
  ASSERT_TRUE(outcome.result->ok()) << outcome.result->status().ToString();
  EXPECT_EQ((*outcome.result)->status, 200);
  EXPECT_EQ((*outcome.result)->body, "");
}

TEST(AsyncHttpClientTest, MalformedRequestIsInvalidArgument) {
  LoopbackServer server;
  for (auto [method, target, headers] :
       std::vector<std::tuple<std::string, std::string, HttpHeaders>>{
           {"GE T", "/echo", {}},
           {"GET", "echo", {}},
           {"GET", "/echo", {{"X-Test", "a\r\nX-Forged: 1"}}},
       }) {
    auto outcome = RunRequest(server.url(), method, target, "", headers);
    ASSERT_EQ(outcome.calls, 1) << method << " " << target;
    ASSERT_FALSE(outcome.result->ok()) << method << " " << target;
    EXPECT_EQ(outcome.result->status().code(), StatusCode::kInvalidArgument);
  }
}

TEST(AsyncHttpClientTest, HostNameIsResolved) {
  LoopbackServer server;
  Url url = server.url();
  url.host = "localhost";
  auto outcome = RunRequest(url, "GET", "/echo");
  ASSERT_EQ(outcome.calls, 1);
  ASSERT_TRUE(outcome.result->ok()) << outcome.result->status().ToString();
  EXPECT_EQ((*outcome.result)->body, "GET /echo\n");
}

TEST(AsyncHttpClientTest, UnresolvableHostIsUnavailable) {
  // .invalid never resolves (RFC 6761).
  auto outcome = RunRequest(Url{"no-such-node.invalid", 8080, ""}, "GET", "/echo");
  ASSERT_EQ(outcome.calls, 1);
  ASSERT_FALSE(outcome.result->ok());
  EXPECT_EQ(outcome.result->status().code(), StatusCode::kUnavailable)
      << outcome.result->status().ToString();
  EXPECT_NE(outcome.result->status().message().find("cannot resolve host"), std::string::npos);
}

TEST(AsyncHttpClientTest, FiftyConcurrentRequestsOnOneThreadEachCompleteOnce) {
  LoopbackServer server;
  constexpr int kRequests = 50;
  asio::io_context io;
  std::vector<int> calls(kRequests, 0);
  std::vector<std::string> bodies(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    AsyncHttpRequest(io, server.url(), "POST", "/echo/" + std::to_string(i),
                     "event " + std::to_string(i), {}, milliseconds(10'000),
                     [&calls, &bodies, i](Result<HttpResponse> result) {
                       ++calls[i];
                       bodies[i] = result.ok() ? result->body : result.status().ToString();
                     });
  }
  io.run();  // this thread alone runs all 50 exchanges
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_EQ(calls[i], 1) << "request " << i;
    EXPECT_EQ(bodies[i], "POST /echo/" + std::to_string(i) + "\nevent " + std::to_string(i));
  }
}

TEST(AsyncHttpClientTest, DoneIsNeverCalledInline) {
  LoopbackServer server;
  for (std::string method : {"GET", "BAD METHOD"}) {  // a reply, and a refusal found at once
    asio::io_context io;
    bool returned = false;
    std::optional<bool> returned_when_done;
    AsyncHttpRequest(io, server.url(), method, "/echo", "", {}, milliseconds(10'000),
                     [&](Result<HttpResponse>) { returned_when_done = returned; });
    returned = true;
    io.run();
    ASSERT_TRUE(returned_when_done.has_value()) << method;
    EXPECT_TRUE(*returned_when_done) << method;
  }
}

TEST(AsyncHttpClientTest, DestroyedIoContextReleasesAPendingRequest) {
  LoopbackServer server;
  auto token = std::make_shared<int>(0);
  bool done_called = false;
  {
    asio::io_context io;
    AsyncHttpRequest(io, server.url(), "POST", "/silent", "{}", {}, milliseconds(30'000),
                     [token, &done_called](Result<HttpResponse>) { done_called = true; });
    // Run until the server holds the request, so the exchange waits in its read.
    while (server.silent_requests() == 0 && !done_called) io.run_for(milliseconds(10));
    ASSERT_FALSE(done_called);
    EXPECT_GT(token.use_count(), 1);  // the pending exchange holds done
  }
  EXPECT_FALSE(done_called);
  EXPECT_EQ(token.use_count(), 1);  // and gave it up with the io_context
}

TEST(AsyncHttpClientTest, AgreesWithTheBlockingClient) {
  LoopbackServer server;
  const Url closed{"127.0.0.1", ClosedPort(), ""};
  for (const auto& [url, target] : std::vector<std::pair<Url, std::string>>{
           {server.url(), "/echo"}, {server.url(), "/status/404"}, {closed, "/echo"}}) {
    auto blocking = HttpRequest(url, "PUT", target, "same body", {{"X-Test", "same"}});
    auto async = RunRequest(url, "PUT", target, "same body", {{"X-Test", "same"}});
    ASSERT_EQ(async.calls, 1);
    ASSERT_EQ(async.result->ok(), blocking.ok()) << target;
    if (blocking.ok()) {
      EXPECT_EQ((*async.result)->status, blocking->status);
      EXPECT_EQ((*async.result)->body, blocking->body);
      EXPECT_EQ((*async.result)->Header("X-Echo"), blocking->Header("X-Echo"));
    } else {
      EXPECT_EQ(async.result->status().ToString(), blocking.status().ToString());
    }
  }
}

}  // namespace
}  // namespace wisp
