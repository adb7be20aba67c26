#include "http/server.h"

#include <algorithm>
#include <memory>
#include <optional>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio/socket_base.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <nlohmann/json.hpp>

namespace wisp {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

int HttpStatusFor(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
      return 400;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kAlreadyExists:
      return 409;
    case StatusCode::kUnauthenticated:
      return 401;
    case StatusCode::kPermissionDenied:
      return 403;
    case StatusCode::kResourceExhausted:
      return 500;  // a function's memory; 413/429 set apart
    case StatusCode::kDeadlineExceeded:
      return 504;
    case StatusCode::kUnavailable:
      return 503;
    case StatusCode::kFunctionError:
    case StatusCode::kIoError:
    case StatusCode::kInternal:
      return 500;
  }
  return 500;
}

void SetErrorResponse(const Status& status, HttpResponse& response, int http_status) {
  response.result(http_status ? http_status : HttpStatusFor(status.code()));
  response.set(http::field::content_type, "application/json");
  // Tells a client an error of the node's from a reply a handler made with the same status.
  response.set("X-Wisp-Error", status.kind());
  if (status.code() == StatusCode::kUnauthenticated) {
    response.set(http::field::www_authenticate, "Bearer");
  }
  nlohmann::json body = {{"error", {{"kind", status.kind()}, {"message", status.message()}}}};
  response.body() = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  response.body() += '\n';
}

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(tcp::socket socket, HttpListener& owner) : stream_(std::move(socket)), owner_(owner) {
    owner_.sessions_.insert(this);
    owner_.metrics_.connections_open.fetch_add(1, std::memory_order_relaxed);
  }
  ~HttpSession() {
    owner_.sessions_.erase(this);
    owner_.metrics_.connections_open.fetch_sub(1, std::memory_order_relaxed);
  }

  void Start() { WaitForRequest(); }

  // Drain: a connection waiting for its next request is closed now; one in a request closes
  // after its reply.
  void OnDrain() {
    if (idle_) {
      beast::error_code ec;
      stream_.socket().cancel(ec);
    }
  }

 private:
  const HttpConfig& config() const { return owner_.config_; }

  void WaitForRequest() {
    idle_ = true;
    if (owner_.draining_) return Close();
    if (buffer_.size() > 0) return ReadHeader();  // a pipelined request is already here
    stream_.expires_after(config().idle_timeout);
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              self->buffer_.commit(n);
                              if (ec || n == 0) return self->Close();
                              self->ReadHeader();
                            });
  }

  void ReadHeader() {
    idle_ = false;
    parser_.emplace();
    parser_->header_limit(config().max_header_bytes);
    // Beast checks Content-Length against the body limit as soon as the head is parsed, before
    // we know the route; admit the largest any route takes and apply the route's own in OnHeader.
    parser_->body_limit(std::max(config().max_body_bytes, config().max_deploy_body_bytes));
    stream_.expires_after(config().header_timeout);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->OnHeader(ec); });
  }

  void OnHeader(beast::error_code ec) {
    // On a timeout tcp_stream has already closed the socket: there is no one left to tell.
    if (ec == beast::error::timeout) return Close();
    if (ec == http::error::body_limit) {
      return SendError(ResourceExhausted("request body is over the node's largest body limit"),
                       413);
    }
    if (ec == http::error::header_limit) {
      return SendError(ResourceExhausted(fmt::format("request head is larger than {} bytes",
                                                     config().max_header_bytes)),
                       431);
    }
    if (ec == http::error::end_of_stream || ec == asio::error::operation_aborted ||
        ec == asio::error::connection_reset || ec == asio::error::eof) {
      return Close();
    }
    if (ec) return SendError(InvalidArgument("malformed HTTP request: " + ec.message()), 400);

    const auto& head = parser_->get();
    const std::uint64_t limit = owner_.handler_.BodyLimit(head.base());
    if (auto length = parser_->content_length(); length && *length > limit) {
      return SendError(ResourceExhausted(fmt::format(
                           "request body of {} bytes is over this endpoint's limit of {} bytes",
                           *length, limit)),
                       413);
    }
    parser_->body_limit(limit);
    if (parser_->is_done()) return Dispatch();
    if (beast::iequals(head[http::field::expect], "100-continue")) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      return asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                               [self = shared_from_this()](beast::error_code ec, std::size_t) {
                                 if (ec) return self->Close();
                                 self->ReadBody();
                               });
    }
    ReadBody();
  }

  void ReadBody() {
    stream_.expires_after(config().body_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       if (ec == http::error::body_limit) {
                         return self->SendError(
                             ResourceExhausted("request body is over this endpoint's limit"), 413);
                       }
                       if (ec) return self->Close();  // incl. timeout: the socket is closed
                       self->Dispatch();
                     });
  }

  void Dispatch() {
    HttpRequest request = parser_->release();
    response_ = {};
    response_.version(request.version());
    response_.keep_alive(request.keep_alive());
    owner_.handler_.Handle(request, response_);
    Write(/*close=*/!request.keep_alive() || owner_.draining_);
  }

  // Replies with an error and closes: after a protocol error the stream position is unknown.
  void SendError(const Status& status, int http_status) {
    response_ = {};
    response_.version(11);
    SetErrorResponse(status, response_, http_status);
    Write(/*close=*/true);
  }

  void Write(bool close) {
    response_.keep_alive(!close);
    response_.prepare_payload();
    const unsigned code_class = response_.result_int() / 100;
    owner_.metrics_.responses_by_class[code_class < 6 ? code_class : 0].Add();
    stream_.expires_after(config().body_timeout);
    http::async_write(stream_, response_,
                      [self = shared_from_this(), close](beast::error_code ec, std::size_t) {
                        if (ec || close) return self->Close();
                        self->WaitForRequest();
                      });
  }

  void Close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.socket().close(ec);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  HttpResponse response_;
  HttpListener& owner_;
  bool idle_ = true;
};

HttpListener::HttpListener(asio::io_context& io, HttpHandler& handler, const HttpConfig& config,
                           HttpShardMetrics& metrics)
    : io_(io), handler_(handler), config_(config), metrics_(metrics), acceptor_(io) {}

HttpListener::~HttpListener() = default;

Status HttpListener::Listen(const std::string& host, std::uint16_t port) {
  beast::error_code ec;
  auto address = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
  if (ec) return InvalidArgument(fmt::format("'{}' is not an IP address to listen on", host));
  tcp::endpoint endpoint(address, port);
  auto fail = [&](std::string_view what) {
    return IoError(fmt::format("cannot {} {}:{}: {}", what, host, port, ec.message()));
  };
  if (acceptor_.open(endpoint.protocol(), ec); ec) return fail("open a socket for");
  acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  int one = 1;
  if (::setsockopt(acceptor_.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    ec.assign(errno, boost::system::system_category());
    return fail("set SO_REUSEPORT on");
  }
  if (acceptor_.bind(endpoint, ec); ec) return fail("listen on");
  if (acceptor_.listen(asio::socket_base::max_listen_connections, ec); ec) return fail("listen on");
  port_ = acceptor_.local_endpoint().port();
  return Status::Ok();
}

void HttpListener::Start() { Accept(); }

void HttpListener::Accept() {
  acceptor_.async_accept(io_, [this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || draining_) return;
    if (!ec) {
      socket.set_option(tcp::no_delay(true), ec);
      metrics_.connections_accepted.Add();
      std::make_shared<HttpSession>(std::move(socket), *this)->Start();
    } else {
      spdlog::warn("accept failed: {}", ec.message());
    }
    Accept();
  });
}

void HttpListener::Drain() {
  draining_ = true;
  beast::error_code ec;
  acceptor_.close(ec);
  // OnDrain may destroy sessions (and erase them from the set) only later, from their own
  // completion handlers, so iterating here is safe.
  for (HttpSession* session : sessions_) session->OnDrain();
}

}  // namespace wisp
