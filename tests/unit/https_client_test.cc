// https in both HTTP clients (src/http/client.h, src/http/async_client.h, src/http/tls.h)
// against a real TLS server on loopback, with certificates made at test time by openssl.
#include <utility>  // before Asio (see src/http/client.cc)

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "../tls_test_support.h"
#include "http/async_client.h"
#include "http/client.h"
#include "http/tls.h"
#include "node/model_upstream.h"
#include "runtime/model/model_runtime.h"

namespace wisp {
namespace {

using std::chrono::milliseconds;
using tls_test::Certificates;
using tls_test::TlsEchoServer;

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

Url HttpsUrl(const std::string& host, std::uint16_t port) {
  Url url;
  url.host = host;
  url.port = port;
  url.https = true;
  return url;
}

// Runs every test with the blocking client and with the asynchronous one.
class HttpsClientTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    std::string error;
    certs_ = Certificates::Get(&error);
    if (certs_ == nullptr) GTEST_SKIP() << error;
  }

  std::string Cert(const std::string& name) const { return certs_->Path(name); }

  std::shared_ptr<HttpTlsContext> Context(HttpTlsOptions options) const {
    auto tls = HttpTlsContext::Create(options);
    EXPECT_TRUE(tls.ok()) << tls.status().ToString();
    return tls.ok() ? *tls : nullptr;
  }
  std::shared_ptr<HttpTlsContext> TrustingTestCa() const {
    return Context({.ca_file = Cert("ca.crt")});
  }

  Result<HttpResponse> Call(const Url& url, const std::string& method, const std::string& target,
                            const std::string& body, std::shared_ptr<HttpTlsContext> tls,
                            milliseconds timeout = milliseconds(10'000)) const {
    if (!GetParam()) return HttpRequest(url, method, target, body, {}, timeout, tls.get());
    boost::asio::io_context io;
    std::optional<Result<HttpResponse>> outcome;
    AsyncHttpRequest(
        io, url, method, target, body, {}, timeout,
        [&](Result<HttpResponse> reply) { outcome.emplace(std::move(reply)); }, std::move(tls));
    io.run();
    if (!outcome) return Internal("done never ran");
    return std::move(*outcome);
  }

  const Certificates* certs_ = nullptr;
};

TEST_P(HttpsClientTest, GetAndPostRoundTripWithTheCaFile) {
  TlsEchoServer server(Cert("server.crt"), Cert("server.key"));
  auto tls = TrustingTestCa();
  const Url url = HttpsUrl("127.0.0.1", server.port());

  auto get = Call(url, "GET", "/hello?x=1", "", tls);
  ASSERT_TRUE(get.ok()) << get.status().ToString();
  EXPECT_EQ(get->status, 200);
  EXPECT_EQ(get->body, "GET /hello?x=1\n");
  EXPECT_EQ(get->Header("X-Client-CN").value_or("?"), "");  // no client certificate was sent
  EXPECT_EQ(get->Header("X-SNI").value_or("?"), "");        // no SNI for an IP address

  auto post = Call(url, "POST", "/alerts", R"({"pump":"p1"})", tls);
  ASSERT_TRUE(post.ok()) << post.status().ToString();
  EXPECT_EQ(post->status, 200);
  EXPECT_EQ(post->body, "POST /alerts\n{\"pump\":\"p1\"}");
  EXPECT_EQ(server.Received().size(), 2u);
}

TEST_P(HttpsClientTest, HostNameIsVerifiedAndSentAsSni) {
  TlsEchoServer server(Cert("server.crt"), Cert("server.key"));
  auto reply = Call(HttpsUrl("localhost", server.port()), "GET", "/", "", TrustingTestCa());
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  EXPECT_EQ(reply->Header("X-SNI").value_or(""), "localhost");
}

TEST_P(HttpsClientTest, UntrustedServerCertificateIsRefusedWithOpenSslsReason) {
  TlsEchoServer server(Cert("self-signed.crt"), Cert("self-signed.key"));
  auto reply = Call(HttpsUrl("127.0.0.1", server.port()), "POST", "/alerts", "x", TrustingTestCa());
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), StatusCode::kUnavailable) << reply.status().ToString();
  EXPECT_TRUE(Contains(reply.status().message(), "https://127.0.0.1:"));
  EXPECT_TRUE(Contains(reply.status().message(), "certificate verify failed: self-signed"))
      << reply.status().message();
  EXPECT_TRUE(server.Received().empty());
}

TEST_P(HttpsClientTest, WithoutACaFileTheSystemStoreDoesNotTrustTheTestCa) {
  TlsEchoServer server(Cert("server.crt"), Cert("server.key"));
  auto reply = Call(HttpsUrl("127.0.0.1", server.port()), "GET", "/", "", nullptr);
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(Contains(reply.status().message(), "unable to get local issuer certificate"))
      << reply.status().message();
  EXPECT_TRUE(server.Received().empty());
}

TEST_P(HttpsClientTest, CertificateForAnotherNameIsRefused) {
  TlsEchoServer server(Cert("other-host.crt"), Cert("other-host.key"));
  auto by_address = Call(HttpsUrl("127.0.0.1", server.port()), "GET", "/", "", TrustingTestCa());
  ASSERT_FALSE(by_address.ok());
  EXPECT_EQ(by_address.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(Contains(by_address.status().message(), "IP address mismatch"))
      << by_address.status().message();

  auto by_name = Call(HttpsUrl("localhost", server.port()), "GET", "/", "", TrustingTestCa());
  ASSERT_FALSE(by_name.ok());
  EXPECT_EQ(by_name.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(Contains(by_name.status().message(), "hostname mismatch"))
      << by_name.status().message();
  EXPECT_TRUE(server.Received().empty());
}

TEST_P(HttpsClientTest, ServerRequiringAClientCertificateGetsOnlyWithOne) {
  TlsEchoServer server(Cert("server.crt"), Cert("server.key"), Cert("ca.crt"));
  const Url url = HttpsUrl("127.0.0.1", server.port());

  auto without = Call(url, "POST", "/alerts", "x", TrustingTestCa());
  ASSERT_FALSE(without.ok());
  // TLS 1.3: the client's handshake ends before the server checks; its alert comes on the read.
  EXPECT_EQ(without.status().code(), StatusCode::kUnavailable) << without.status().ToString();
  EXPECT_TRUE(Contains(without.status().message(), "certificate required"))
      << without.status().message();
  EXPECT_TRUE(server.Received().empty());

  auto mutual = Context(
      {.ca_file = Cert("ca.crt"), .cert_file = Cert("client.crt"), .key_file = Cert("client.key")});
  auto with = Call(url, "POST", "/alerts", "x", mutual);
  ASSERT_TRUE(with.ok()) << with.status().ToString();
  EXPECT_EQ(with->status, 200);
  EXPECT_EQ(with->Header("X-Client-CN").value_or(""), "wisp-node");
  EXPECT_EQ(server.Received().size(), 1u);
}

TEST_P(HttpsClientTest, DeadlineCoversAHandshakeThatNeverHappens) {
  // The kernel completes TCP connections into the backlog of a listening socket nobody accepts
  // from: the client connects, sends its ClientHello and never hears back.
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor mute(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  const Url url = HttpsUrl("127.0.0.1", mute.local_endpoint().port());
  auto reply = Call(url, "GET", "/", "", TrustingTestCa(), milliseconds(300));
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), StatusCode::kDeadlineExceeded) << reply.status().ToString();
}

INSTANTIATE_TEST_SUITE_P(BothClients, HttpsClientTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Async" : "Blocking"; });

class HttpTlsContextTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    certs_ = Certificates::Get(&error);
    if (certs_ == nullptr) GTEST_SKIP() << error;
  }
  Status Create(HttpTlsOptions options) { return HttpTlsContext::Create(options).status(); }
  const Certificates* certs_ = nullptr;
};

TEST_F(HttpTlsContextTest, BadFilesAreInvalidArgumentNamingTheFile) {
  const std::string missing = certs_->Path("no-such-ca.crt");
  Status s = Create({.ca_file = missing});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(s.message(), "ca_file '" + missing + "'")) << s.message();

  const std::string garbage = certs_->Path("garbage.pem");
  std::ofstream(garbage) << "not a certificate\n";
  s = Create({.ca_file = garbage});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(s.message(), "ca_file '" + garbage + "'")) << s.message();

  s = Create({.cert_file = certs_->Path("client.crt"), .key_file = garbage});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(s.message(), "key_file '" + garbage + "'")) << s.message();

  s = Create({.cert_file = certs_->Path("client.crt"), .key_file = certs_->Path("server.key")});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(s.message(), "does not belong")) << s.message();

  s = Create({.cert_file = certs_->Path("client.crt")});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(s.message(), "go together")) << s.message();

  EXPECT_TRUE(Create({.ca_file = certs_->Path("ca.crt"),
                      .cert_file = certs_->Path("client.crt"),
                      .key_file = certs_->Path("client.key")})
                  .ok());
}

// The node's upstream callers for model functions (node/model_upstream.cc) reach an https
// upstream with the node's TLS options, in both the blocking and the asynchronous form.
TEST_F(HttpTlsContextTest, ModelUpstreamCallersUseTheNodesTlsOptions) {
  const UpstreamCaller saved = CurrentUpstreamCaller();
  const AsyncUpstreamCaller saved_async = CurrentAsyncUpstreamCaller();
  TlsEchoServer upstream(certs_->Path("server.crt"), certs_->Path("server.key"));
  const std::string url = "https://127.0.0.1:" + std::to_string(upstream.port());

  Status bad = InstallModelUpstreamCaller({.ca_file = certs_->Path("missing-ca.crt")});
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(bad.message(), "missing-ca.crt")) << bad.message();

  ASSERT_TRUE(InstallModelUpstreamCaller({.ca_file = certs_->Path("ca.crt")}).ok());
  auto reply = CurrentUpstreamCaller()(url, "/v1/functions/big/invoke", "{}", milliseconds(5000));
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  EXPECT_EQ(reply->status, 200);
  EXPECT_EQ(reply->body, "POST /v1/functions/big/invoke\n{}");

  boost::asio::io_context io;
  std::optional<Result<UpstreamReply>> async_reply;
  CurrentAsyncUpstreamCaller()(io, url, "/v1/functions/big/invoke", "{\"a\":1}", milliseconds(5000),
                               [&](Result<UpstreamReply> r) { async_reply.emplace(std::move(r)); });
  io.run();
  ASSERT_TRUE(async_reply.has_value());
  ASSERT_TRUE(async_reply->ok()) << async_reply->status().ToString();
  EXPECT_EQ((*async_reply)->body, "POST /v1/functions/big/invoke\n{\"a\":1}");

  // Without the node's CA file the same upstream is not trusted.
  ASSERT_TRUE(InstallModelUpstreamCaller({}).ok());
  auto untrusted = CurrentUpstreamCaller()(url, "/x", "{}", milliseconds(5000));
  EXPECT_EQ(untrusted.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(upstream.Received().size(), 2u);

  SetModelUpstreamCaller(saved);
  SetModelAsyncUpstreamCaller(saved_async);
}

}  // namespace
}  // namespace wisp
