#include "http/async_client.h"

// <utility> before any Asio header: Boost 1.74's asio uses std::exchange without including it,
// which GCC 12 in C++20 mode does not forgive.
#include <utility>

#include <boost/asio/error.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/stream_base.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <memory>
#include <optional>
#include <string>

#include "http/client_internal.h"
#include "http/tls.h"

namespace wisp {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using http_internal::Stage;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// One request from start to `done`. Every pending handler holds a shared_ptr to it, so it lives
// exactly as long as some operation of it is outstanding. All members are touched only on
// `strand_`.
class Exchange : public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(asio::io_context& io, Url url, http_internal::BeastRequest request,
           std::chrono::steady_clock::time_point deadline, std::chrono::milliseconds timeout,
           std::shared_ptr<HttpTlsContext> tls, HttpDoneCallback done)
      : strand_(asio::make_strand(io)),
        resolver_(strand_),
        resolve_deadline_(strand_),
        tls_(std::move(tls)),
        url_(std::move(url)),
        request_(std::move(request)),
        deadline_(deadline),
        timeout_(timeout),
        done_(std::move(done)) {
    if (tls_) {
      secure_.emplace(strand_, tls_->native());
    } else {
      plain_.emplace(strand_);
    }
    http_internal::PrepareReplyParser(request_, parser_);
  }

  // For TLS, before Start: the host check and SNI (http_internal::PrepareTlsSession).
  Status PrepareTls() {
    return secure_ ? http_internal::PrepareTlsSession(secure_->native_handle(), url_)
                   : Status::Ok();
  }

  // Reports `status` through the strand without starting the exchange.
  void Refuse(Status status) {
    asio::post(strand_,
               [self = shared_from_this(), status = std::move(status)] { self->Finish(status); });
  }

  // Queues the first step on the strand, so that AsyncHttpRequest never runs a handler itself.
  void Start() {
    asio::post(strand_, [self = shared_from_this()] { self->Begin(); });
  }

 private:
  void Begin() {
    // The deadline counts from the call: a request that waited for `io` past it is not sent.
    if (std::chrono::steady_clock::now() >= deadline_) {
      Finish(http_internal::DeadlineFailure(url_, timeout_));
      return;
    }
    boost::system::error_code not_numeric;
    const auto address = asio::ip::make_address(url_.host, not_numeric);
    if (!not_numeric) {
      Connect(tcp::endpoint(address, url_.port));
      return;
    }
    // getaddrinfo has no timeout of its own, and tcp_stream's deadline starts at connect.
    resolve_deadline_.expires_at(deadline_);
    resolve_deadline_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (ec == asio::error::operation_aborted || self->stage_ != Stage::kResolve) return;
      self->resolver_.cancel();
      self->Finish(http_internal::DeadlineFailure(self->url_, self->timeout_));
    });
    resolver_.async_resolve(url_.host, std::to_string(url_.port),
                            [self = shared_from_this()](boost::system::error_code ec,
                                                        tcp::resolver::results_type endpoints) {
                              self->OnResolved(ec, std::move(endpoints));
                            });
  }

  void OnResolved(boost::system::error_code ec, tcp::resolver::results_type endpoints) {
    if (finished_) return;  // the deadline was reported while getaddrinfo still ran
    resolve_deadline_.cancel();
    if (ec) return Fail(ec);
    Connect(std::move(endpoints));
  }

  // `to` is one endpoint or a resolver's list of them (tried in order).
  template <typename Endpoints>
  void Connect(Endpoints to) {
    stage_ = Stage::kConnect;
    TcpLayer().expires_at(deadline_);
    TcpLayer().async_connect(to, [self = shared_from_this()](boost::system::error_code ec,
                                                             auto&&...) { self->OnConnected(ec); });
  }

  void OnConnected(boost::system::error_code ec) {
    if (ec) return Fail(ec);
    if (!secure_) return Send();
    stage_ = Stage::kHandshake;
    secure_->async_handshake(
        asio::ssl::stream_base::client,
        [self = shared_from_this()](boost::system::error_code ec) { self->OnHandshake(ec); });
  }

  void OnHandshake(boost::system::error_code ec) {
    if (ec) return Fail(ec);
    Send();
  }

  void Send() {
    stage_ = Stage::kSend;
    WithStream([this](auto& stream) {
      http::async_write(stream, request_,
                        [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                          self->OnSent(ec);
                        });
    });
  }

  void OnSent(boost::system::error_code ec) {
    if (ec) return Fail(ec);
    stage_ = Stage::kReceive;
    // The header alone first: see http_internal::PrepareReplyParser.
    WithStream([this](auto& stream) {
      http::async_read_header(
          stream, buffer_, parser_,
          [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
            self->OnHeaderReceived(ec);
          });
    });
  }

  void OnHeaderReceived(boost::system::error_code ec) {
    if (ec) return Fail(ec);
    WithStream([this](auto& stream) {
      http::async_read(stream, buffer_, parser_,
                       [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                         self->OnReceived(ec);
                       });
    });
  }

  void OnReceived(boost::system::error_code ec) {
    if (ec) return Fail(ec);
    stage_ = Stage::kDone;
    Finish(http_internal::TakeReply(parser_));
  }

  void Fail(const boost::system::error_code& ec) {
    const std::string detail = stage_ == Stage::kHandshake
                                   ? http_internal::TlsVerifyDetail(secure_->native_handle())
                                   : std::string();
    Finish(http_internal::TransportFailure(url_, stage_, ec, timeout_, detail));
  }

  // The TCP connection under TLS, or the plain one: it carries the deadline.
  beast::tcp_stream& TcpLayer() { return secure_ ? secure_->next_layer() : *plain_; }

  template <typename Fn>
  void WithStream(Fn&& fn) {
    if (secure_) {
      fn(*secure_);
    } else {
      fn(*plain_);
    }
  }

  // Reports the outcome once; later handlers (a cancelled resolve) find `finished_` set.
  void Finish(Result<HttpResponse> outcome) {
    if (finished_) return;
    finished_ = true;
    boost::system::error_code ignored;
    // No TLS close_notify: the request said `Connection: close` and the reply is complete or
    // given up on, so nothing is left to protect from truncation.
    TcpLayer().socket().shutdown(tcp::socket::shutdown_both, ignored);
    TcpLayer().close();
    HttpDoneCallback done = std::move(done_);
    done_ = nullptr;  // what it captured goes when this call returns, not with the last handler
    if (done) done(std::move(outcome));
  }

  asio::strand<asio::io_context::executor_type> strand_;
  tcp::resolver resolver_;
  asio::steady_timer resolve_deadline_;
  const std::shared_ptr<HttpTlsContext> tls_;  // null for http; before secure_, which uses it
  std::optional<beast::tcp_stream> plain_;     // exactly one of plain_ and secure_ is set
  std::optional<TlsStream> secure_;
  beast::flat_buffer buffer_;
  http_internal::BeastReplyParser parser_;
  const Url url_;
  http_internal::BeastRequest request_;
  const std::chrono::steady_clock::time_point deadline_;
  const std::chrono::milliseconds timeout_;
  HttpDoneCallback done_;
  Stage stage_ = Stage::kResolve;
  bool finished_ = false;
};

}  // namespace

void AsyncHttpRequest(asio::io_context& io, const Url& url, std::string method, std::string target,
                      std::string body, HttpHeaders headers, std::chrono::milliseconds timeout,
                      HttpDoneCallback done, std::shared_ptr<HttpTlsContext> tls) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // Refusals are reported through `io` too: `done` never runs inside this call.
  auto refuse = [&](Status status) {
    asio::post(io, [done = std::move(done), status = std::move(status)] {
      if (done) done(status);
    });
  };
  auto request = http_internal::BuildRequest(url, method, target, std::move(body), headers);
  if (!request.ok()) return refuse(request.status());
  if (!url.https) {
    tls = nullptr;
  } else if (!tls) {
    auto system_default = HttpTlsContext::SystemDefault();
    if (!system_default.ok()) return refuse(system_default.status());
    tls = *system_default;
  }
  auto exchange = std::make_shared<Exchange>(io, url, std::move(*request), deadline, timeout,
                                             std::move(tls), std::move(done));
  if (Status prepared = exchange->PrepareTls(); !prepared.ok()) {
    return exchange->Refuse(std::move(prepared));
  }
  exchange->Start();
}

}  // namespace wisp
