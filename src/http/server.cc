#include "http/server.h"

#include <algorithm>
#include <array>
#include <iterator>
#include <memory>
#include <optional>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio/socket_base.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <nlohmann/json.hpp>

namespace wisp {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// Concrete executor types instead of Beast's type-erased defaults: the erased executor's copies
// and destructions showed up at several percent of a no-op invoke's profile.
using Executor = asio::io_context::executor_type;
using Socket = asio::basic_stream_socket<tcp, Executor>;
using Stream = beast::basic_stream<tcp, Executor, beast::unlimited_rate_policy>;

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
  HttpSession(Socket socket, HttpListener& owner) : stream_(std::move(socket)), owner_(&owner) {
    owner_->sessions_.insert(this);
    owner_->metrics_.connections_open.fetch_add(1, std::memory_order_relaxed);
  }
  ~HttpSession() {
    if (owner_ == nullptr) return;  // the listener went first (see Detach)
    owner_->sessions_.erase(this);
    owner_->metrics_.connections_open.fetch_sub(1, std::memory_order_relaxed);
  }

  // The listener is being destroyed while this session still lives in a queued handler (the
  // loop was stopped at the drain timeout): the session must not touch it afterwards. Its
  // handlers never run again; they are only destroyed with the io_context.
  void Detach() { owner_ = nullptr; }

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
  const HttpConfig& config() const { return owner_->config_; }

  void WaitForRequest() {
    idle_ = true;
    if (owner_->draining_) return Close();
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
    parser_->eager(true);
    // Fast path: a request that is already buffered whole (the usual case for small requests)
    // is parsed here, saving an asynchronous read and its timer per request.
    if (buffer_.size() > 0) {
      beast::error_code ec;
      const std::size_t used = parser_->put(buffer_.data(), ec);
      buffer_.consume(used);
      if (ec != http::error::need_more) return OnHeader(ec);
    }
    stream_.expires_after(config().header_timeout);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->OnHeader(ec); });
  }

  // A read of a request failed: reply when someone is still there to read it.
  void OnReadError(beast::error_code ec) {
    // On a timeout the stream has already closed the socket: there is no one left to tell.
    if (ec == beast::error::timeout) return Close();
    if (ec == http::error::end_of_stream || ec == asio::error::operation_aborted ||
        ec == asio::error::connection_reset || ec == asio::error::eof ||
        ec == http::error::partial_message) {
      return Close();
    }
    if (ec == http::error::body_limit) {
      return SendError(ResourceExhausted("request body is over this endpoint's limit"), 413);
    }
    if (ec == http::error::header_limit) {
      return SendError(ResourceExhausted(fmt::format("request head is larger than {} bytes",
                                                     config().max_header_bytes)),
                       431);
    }
    SendError(InvalidArgument("malformed HTTP request: " + ec.message()), 400);
  }

  void OnHeader(beast::error_code ec) {
    if (ec) return OnReadError(ec);

    const auto& head = parser_->get();
    const std::uint64_t limit = owner_->handler_.BodyLimit(head.base());
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
                       if (ec) return self->OnReadError(ec);
                       self->Dispatch();
                     });
  }

  void Dispatch() {
    request_ = parser_->release();
    head_request_ = request_.method() == http::verb::head;
    response_ = {};
    response_.version(request_.version());
    // The handler may answer later (a call waiting for an instance); the session stays alive
    // in `done` until it does.
    owner_->handler_.HandleDeferred(request_, response_, [self = shared_from_this()] {
      if (self->owner_ == nullptr) return self->Close();  // the listener went meanwhile
      self->Write(/*close=*/!self->request_.keep_alive() || self->owner_->draining_);
    });
  }

  // Replies with an error and closes: after a protocol error the stream position is unknown.
  void SendError(const Status& status, int http_status) {
    response_ = {};
    response_.version(11);
    head_request_ = false;
    lingering_close_ = true;
    SetErrorResponse(status, response_, http_status);
    Write(/*close=*/true);
  }

  // Serialises the response by hand into one reused buffer plus the body (a two-buffer gather
  // write): Beast's generic serializer cost more than the rest of a no-op invoke's user time.
  void Write(bool close) {
    const unsigned code = response_.result_int();
    owner_->metrics_.responses_by_class[code / 100 < 6 ? code / 100 : 0].Add();
    // 1xx, 204 and 304 carry no body and no Content-Length (RFC 9110 8.6).
    const bool bodyless_status = code < 200 || code == 204 || code == 304;
    std::string_view body = bodyless_status ? std::string_view() : response_.body();

    head_.clear();
    head_ += response_.version() == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
    fmt::format_to(std::back_inserter(head_), "{} ", code);
    head_ += response_.reason();
    head_ += "\r\n";
    for (const auto& field : response_) {
      const http::field name = field.name();
      if (name == http::field::content_length || name == http::field::connection ||
          name == http::field::transfer_encoding) {
        continue;  // framing is ours
      }
      head_ += field.name_string();
      head_ += ": ";
      head_ += field.value();
      head_ += "\r\n";
    }
    if (!bodyless_status)
      fmt::format_to(std::back_inserter(head_), "Content-Length: {}\r\n", body.size());
    if (close) {
      head_ += "Connection: close\r\n";
    } else if (response_.version() == 10) {
      head_ += "Connection: keep-alive\r\n";
    }
    head_ += "\r\n";
    if (head_request_) body = {};

    const std::array<asio::const_buffer, 2> buffers = {asio::buffer(head_),
                                                       asio::buffer(body.data(), body.size())};
    stream_.expires_after(config().body_timeout);
    asio::async_write(stream_, buffers,
                      [self = shared_from_this(), close](beast::error_code ec, std::size_t) {
                        if (ec) return self->Close();
                        if (close)
                          return self->lingering_close_ ? self->LingeringClose() : self->Close();
                        self->WaitForRequest();
                      });
  }

  // After an error reply the client may still be sending a body we refused; closing with
  // unread bytes makes the kernel send RST, which can destroy the reply before the client reads
  // it. So stop sending, read and discard for a short while, then close.
  void LingeringClose() {
    if (!linger_buffer_) {
      beast::error_code ec;
      stream_.socket().shutdown(Socket::shutdown_send, ec);
      if (ec) return Close();
      linger_buffer_ = std::make_unique<std::array<char, 4096>>();
    }
    if (discarded_ > kMaxLingerBytes) return Close();
    stream_.expires_after(std::chrono::seconds(1));
    stream_.async_read_some(asio::buffer(*linger_buffer_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              self->discarded_ += n;
                              if (ec) return self->Close();
                              self->LingeringClose();
                            });
  }

  void Close() {
    beast::error_code ec;
    stream_.socket().shutdown(Socket::shutdown_send, ec);
    stream_.socket().close(ec);
  }

  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  HttpRequest request_;  // the request being answered; kept until its reply is written
  HttpResponse response_;
  std::string head_;  // the serialised status line and headers, reused across requests
  bool head_request_ = false;
  bool lingering_close_ = false;
  static constexpr std::size_t kMaxLingerBytes = 1 << 20;
  std::size_t discarded_ = 0;
  std::unique_ptr<std::array<char, 4096>> linger_buffer_;  // only while lingering
  HttpListener* owner_;                                    // null once detached
  bool idle_ = true;
};

HttpListener::HttpListener(asio::io_context& io, HttpHandler& handler, const HttpConfig& config,
                           HttpShardMetrics& metrics)
    : io_(io), handler_(handler), config_(config), metrics_(metrics), acceptor_(io) {}

HttpListener::~HttpListener() {
  for (HttpSession* session : sessions_) session->Detach();
}

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
  acceptor_.async_accept(io_.get_executor(), [this](beast::error_code ec, Socket socket) {
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
