// HTTP/1.1 server of one shard (Boost.Beast).
//
// Every shard runs its own HttpListener on its own io_context, all bound to the same port with
// SO_REUSEPORT, so the kernel spreads connections over the shards and a connection lives its
// whole life on one thread: no lock anywhere between accept and reply.
//
// Per connection: keep-alive; the idle timeout runs until the first byte of a request, then the
// header timeout until the request head is complete (so a slowloris client that trickles a head
// is cut off), then the body timeout. The body limit is asked of the handler once the head is
// known, so a deploy may be larger than an invoke; a body over it gets 413 without being read.
//
// Threads: everything here runs on the owning io_context's thread, except the constructor and
// Listen(), which run before that thread starts.
#pragma once

#include <utility>  // before Asio: Boost 1.74 + GCC 12 C++20 needs it (std::exchange)

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_set>

#include "metrics/metrics.h"
#include "node/node.h"
#include "wisp/status.h"

namespace wisp {

using HttpRequest = boost::beast::http::request<boost::beast::http::string_body>;
using HttpResponse = boost::beast::http::response<boost::beast::http::string_body>;
using HttpRequestHead = boost::beast::http::request_header<>;

// What the node does with a request. Called on the shard thread; Handle runs synchronously and
// fills `response` (status, headers, body); the server sets Content-Length and keep-alive.
class HttpHandler {
 public:
  virtual ~HttpHandler() = default;
  virtual std::uint64_t BodyLimit(const HttpRequestHead& head) const = 0;
  virtual void Handle(HttpRequest& request, HttpResponse& response) = 0;
  // Called for every request instead of Handle; the default runs Handle and completes at once.
  // An override may answer later: it keeps `done` and calls it exactly once, on the shard
  // thread, once `response` is filled; the connection reads nothing more until then.
  // `request` and `response` stay valid until `done` is called.
  virtual void HandleDeferred(HttpRequest& request, HttpResponse& response,
                              std::function<void()> done) {
    Handle(request, response);
    done();
  }
};

class HttpSession;

class HttpListener {
 public:
  HttpListener(boost::asio::io_context& io, HttpHandler& handler, const HttpConfig& config,
               HttpShardMetrics& metrics);
  ~HttpListener();

  // Binds host:port with SO_REUSEPORT; port 0 picks a free port (see port()). IoError with
  // the system's reason (address in use, permission denied...).
  Status Listen(const std::string& host, std::uint16_t port);
  std::uint16_t port() const { return port_; }

  // Starts accepting; call on the shard thread or before it runs.
  void Start();

  // Stops accepting and closes idle connections; a connection in the middle of a request
  // finishes it and then closes. Shard thread only.
  void Drain();
  bool draining() const { return draining_; }

 private:
  friend class HttpSession;
  void Accept();

  boost::asio::io_context& io_;
  HttpHandler& handler_;
  const HttpConfig config_;
  HttpShardMetrics& metrics_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::uint16_t port_ = 0;
  bool draining_ = false;
  std::unordered_set<HttpSession*> sessions_;
};

// Fills `response` with the JSON error shape {"error":{"kind","message"}} and the HTTP status
// that goes with the Status code (or `http_status` when non-zero).
void SetErrorResponse(const Status& status, HttpResponse& response, int http_status = 0);
int HttpStatusFor(StatusCode code);

}  // namespace wisp
