// A small blocking HTTP/1.1 client (http:// and https://): the `wisp` CLI's transport, the
// integration tests', and the node's sender of HTTP actions (src/node/http_actions.h). Do not
// include it next to http/server.h: both name an `HttpResponse` (the server's is Beast's
// message type).
//
// One call is one TCP connection carrying one request (`Connection: close`). There is no pool
// and no shared state, so any thread may call HttpRequest at any time, also concurrently: each
// call runs a private io_context on the calling thread and blocks until the reply is read,
// the timeout passes, or the transfer fails. The timeout covers the whole exchange, the TLS
// handshake included.
//
// https: the server's certificate is always verified (chain and host name, http/tls.h) against
// the HttpTlsContext passed, or the system's CAs when none is. A client certificate (mutual
// TLS) comes from that context.
//
// Errors: an HTTP reply of any status (404, 500, ...) is a value; the caller decides what the
// status means. The Status is non-OK only when no complete reply arrived:
//   InvalidArgument    the URL, method, target or a header is malformed
//   Unavailable        no connection: refused, unreachable, the host name did not resolve, or
//                      TLS failed ("TLS handshake failed: certificate verify failed:
//                      self-signed certificate", or the server refused our certificate)
//   DeadlineExceeded   the exchange took longer than the timeout
//   ResourceExhausted  the reply body is larger than kMaxReplyBodyBytes
//   IoError            the connection broke after it was made, or the reply is not HTTP
// Transport messages start with the base URL: "http://127.0.0.1:8080: connection refused".
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "wisp/status.h"

namespace wisp {

class HttpTlsContext;  // http/tls.h

// The base of a node's address: where requests go, not one request.
struct Url {
  std::string host;         // "127.0.0.1", "edge-3.plant", "::1" (IPv6 without brackets)
  std::uint16_t port = 80;  // 443 is the default for https
  std::string base_path;    // "" or "/prefix" without a trailing '/'; put before every target
  bool https = false;

  // "http[s]://host:port[/prefix]"; the port is always written so that printed URLs compare.
  std::string ToString() const;
  bool operator==(const Url&) const = default;
};

// Parses "http[s]://host[:port][/prefix]"; a bare "host[:port]" means http. Refuses other
// schemes, user info, queries and fragments with a message that says what to pass.
Result<Url> ParseUrl(std::string_view text);

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

struct HttpResponse {
  int status = 0;
  HttpHeaders headers;  // as received, in order
  std::string body;

  // The value of the first header called `name` (any case), or nullopt.
  std::optional<std::string> Header(std::string_view name) const;
};

inline constexpr std::chrono::milliseconds kDefaultHttpTimeout{30'000};
inline constexpr std::uint64_t kMaxReplyBodyBytes = 64ull << 20;

// Sends `method target` to the node at `url` and reads the whole reply. `target` starts with
// '/' and may carry a query; it goes after url.base_path. Content-Length comes from `body`
// (and is left out for a body-less GET/HEAD); `headers` are sent as given, e.g.
// {"Content-Type", "application/json"} or {"Authorization", "Bearer ..."}.
// `tls` is used for an https URL (null: HttpTlsContext::SystemDefault()) and only borrowed for
// the call; an http URL ignores it.
Result<HttpResponse> HttpRequest(const Url& url, std::string_view method, std::string_view target,
                                 std::string_view body = {}, const HttpHeaders& headers = {},
                                 std::chrono::milliseconds timeout = kDefaultHttpTimeout,
                                 HttpTlsContext* tls = nullptr);

// The same with the base URL as text ("http://127.0.0.1:8080"), parsed by ParseUrl.
Result<HttpResponse> HttpRequest(const std::string& url_base, std::string_view method,
                                 std::string_view target, std::string_view body = {},
                                 const HttpHeaders& headers = {},
                                 std::chrono::milliseconds timeout = kDefaultHttpTimeout,
                                 HttpTlsContext* tls = nullptr);

}  // namespace wisp
