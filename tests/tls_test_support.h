// Shared by unit and integration tests of https: certificates made at test time with the
// `openssl` CLI, and a small TLS HTTP/1.1 server on loopback (Beast over OpenSSL) that echoes.
// Header-only so that both test binaries can include it ("../tls_test_support.h").
#pragma once

#include <utility>  // before Asio (see src/http/client.cc)

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream_base.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace wisp::tls_test {

// A CA and certificates signed by it (EC P-256, valid two days), made once per process in a
// temporary directory that goes at exit:
//   ca.crt                  the CA to trust (ca_file)
//   server.crt/.key         SAN IP:127.0.0.1, DNS:localhost
//   other-host.crt/.key     SAN DNS:other.example only (a valid chain, the wrong name)
//   self-signed.crt/.key    SAN IP:127.0.0.1, signed by itself (an untrusted chain)
//   client.crt/.key         CN=wisp-node, for mutual TLS
class Certificates {
 public:
  Certificates() { Make(); }

  // The set, or nullptr with `error` set when openssl failed (tests then skip).
  static const Certificates* Get(std::string* error) {
    static const Certificates made;
    if (!made.error_.empty()) {
      *error = made.error_;
      return nullptr;
    }
    return &made;
  }
  ~Certificates() {
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

 private:
  void Make() {
    char pattern[] = "/tmp/wisp-tls-XXXXXX";
    if (mkdtemp(pattern) == nullptr) {
      error_ = "mkdtemp failed";
      return;
    }
    dir_ = pattern;
    const std::string key = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    auto signed_by_ca = [&](const std::string& name, const std::string& subject,
                            const std::string& san) {
      std::string ext = san.empty() ? "" : " -extfile " + name + ".ext";
      return std::string(san.empty() ? ""
                                     : "echo subjectAltName=" + san + " > " + name + ".ext && ") +
             "openssl req" + key + " -keyout " + name + ".key -out " + name +
             ".csr -subj /CN=" + subject + " && openssl x509 -req -in " + name +
             ".csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2" + ext + " -out " + name +
             ".crt && ";
    };
    const std::string script =
        "cd " + dir_ + " && exec >openssl.log 2>&1 && openssl req -x509" + key +
        " -keyout ca.key -out ca.crt -days 2 -subj /CN=wisp-test-ca && " +
        signed_by_ca("server", "127.0.0.1", "IP:127.0.0.1,DNS:localhost") +
        signed_by_ca("other-host", "other.example", "DNS:other.example") +
        signed_by_ca("client", "wisp-node", "") + "openssl req -x509" + key +
        " -keyout self-signed.key -out self-signed.crt -days 2 -subj /CN=127.0.0.1" +
        " -addext subjectAltName=IP:127.0.0.1";
    if (std::system(script.c_str()) != 0) {
      std::ifstream log(dir_ + "/openssl.log");
      std::stringstream text;
      text << log.rdbuf();
      error_ = "cannot make test certificates with openssl:\n" + text.str();
    }
  }

  std::string dir_;
  std::string error_;
};

// An https server on 127.0.0.1 with a thread of its own. Every request gets 200 with the body
// "METHOD TARGET\nBODY" and headers X-Client-CN (the client certificate's common name, or "")
// and X-SNI (the server name the client sent, or ""). With `client_ca` set it requires a client
// certificate signed by that CA; a client without one fails the handshake (its connection is
// held open until the server goes, so the client reads the alert rather than a reset).
class TlsEchoServer {
 public:
  TlsEchoServer(const std::string& cert_file, const std::string& key_file,
                const std::string& client_ca = "")
      : context_(boost::asio::ssl::context::tls_server),
        acceptor_(io_, {boost::asio::ip::make_address("127.0.0.1"), 0}) {
    context_.use_certificate_chain_file(cert_file);
    context_.use_private_key_file(key_file, boost::asio::ssl::context::pem);
    if (!client_ca.empty()) {
      context_.load_verify_file(client_ca);
      context_.set_verify_mode(boost::asio::ssl::verify_peer |
                               boost::asio::ssl::verify_fail_if_no_peer_cert);
    }
    Accept();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~TlsEchoServer() {
    io_.stop();
    thread_.join();
  }

  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  // The requests answered so far, as "METHOD TARGET\nBODY".
  std::vector<std::string> Received() const {
    std::lock_guard lock(mu_);
    return received_;
  }

 private:
  using Stream = boost::beast::ssl_stream<boost::beast::tcp_stream>;
  struct Session {
    Session(boost::asio::ip::tcp::socket socket, boost::asio::ssl::context& context)
        : stream(std::move(socket), context) {}
    Stream stream;
    boost::beast::flat_buffer buffer;
    boost::beast::http::request<boost::beast::http::string_body> request;
    boost::beast::http::response<boost::beast::http::string_body> response;
  };

  void Accept() {
    acceptor_.async_accept(
        [this](boost::system::error_code ec, boost::asio::ip::tcp::socket socket) {
          if (ec) return;
          auto session = std::make_shared<Session>(std::move(socket), context_);
          session->stream.async_handshake(
              boost::asio::ssl::stream_base::server, [this, session](boost::system::error_code ec) {
                if (ec) {
                  refused_.push_back(session);  // see the class comment
                  return;
                }
                boost::beast::http::async_read(
                    session->stream, session->buffer, session->request,
                    [this, session](boost::system::error_code ec, std::size_t) {
                      if (!ec) Answer(session);
                    });
              });
          Accept();
        });
  }

  void Answer(const std::shared_ptr<Session>& session) {
    namespace http = boost::beast::http;
    SSL* ssl = session->stream.native_handle();
    std::string client_cn;
    if (X509* peer = SSL_get1_peer_certificate(ssl)) {
      char name[256] = {};
      X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, name, sizeof(name));
      client_cn = name;
      X509_free(peer);
    }
    const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    const std::string echo = std::string(session->request.method_string()) + " " +
                             std::string(session->request.target()) + "\n" +
                             session->request.body();
    {
      std::lock_guard lock(mu_);
      received_.push_back(echo);
    }
    auto& response = session->response;
    response.version(11);
    response.result(http::status::ok);
    response.set("X-Client-CN", client_cn);
    response.set("X-SNI", sni != nullptr ? sni : "");
    response.set(http::field::connection, "close");
    response.body() = echo;
    response.prepare_payload();
    http::async_write(session->stream, response, [session](boost::system::error_code, std::size_t) {
      boost::system::error_code ignored;
      session->stream.next_layer().socket().shutdown(boost::asio::ip::tcp::socket::shutdown_send,
                                                     ignored);
    });
  }

  boost::asio::io_context io_;
  boost::asio::ssl::context context_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::vector<std::shared_ptr<Session>> refused_;  // server thread only
  mutable std::mutex mu_;
  std::vector<std::string> received_;  // guarded by mu_
  std::thread thread_;
};

}  // namespace wisp::tls_test
