// A one-shot asynchronous HTTP/1.1 request (http:// or https://) on the caller's io_context: what a
// shard uses to ask another node (hierarchical inference, docs/inference.md) without holding its
// thread while the reply travels. The blocking twin is HttpRequest in http/client.h; both build the
// same request and report failures the same way. Do not include it next to http/server.h (both
// would name an `HttpResponse`).
//
// One call is one TCP connection carrying one request (`Connection: close`), no pool. A host
// that is a numeric address (127.0.0.1, ::1) is connected to directly; a name is resolved with
// the resolver (getaddrinfo on Asio's resolver thread).
//
// Completion: `done` runs exactly once, on a thread running `io` (through a strand, so `io` may
// be run by several threads), and never inside AsyncHttpRequest itself, also when the arguments
// are refused at once. It receives the reply or a Status:
//   InvalidArgument    the method, target or a header is malformed
//   Unavailable        no connection: refused, unreachable, the host name did not resolve, or
//                      TLS failed (an untrusted or misnamed certificate, or the server refused
//                      ours); https is verified exactly as in the blocking client (http/tls.h)
//   DeadlineExceeded   the exchange (resolve, connect, TLS handshake, send, receive) took
//                      longer than timeout
//   ResourceExhausted  the reply body is larger than kMaxReplyBodyBytes
//   IoError            the connection broke after it was made, or the reply is not HTTP
// An HTTP reply of any status (404, 500, ...) is a value. Messages start with the base URL, like
// the blocking client's: "http://127.0.0.1:8080: connection refused".
//
// Ownership: the request's state (socket, buffers, `done`) lives in a shared object that its own
// pending handlers keep alive; the caller keeps nothing and cannot cancel. `io` must outlive the
// request. If `io` is stopped for good or destroyed before the exchange ends, `done` never runs:
// the pending handlers are destroyed with `io`, and `done` with them (so whatever `done` captured
// is released then). A name being resolved when the deadline passes is reported at the deadline,
// but its getaddrinfo call runs to its end on the resolver thread, holding the request's state.
//
// Threads: any thread may call AsyncHttpRequest, also concurrently; it only checks the arguments
// and posts the work to `io`.
#pragma once

// <utility> before any Asio header: Boost 1.74's asio uses std::exchange without including it,
// which GCC 12 in C++20 mode does not forgive.
#include <utility>

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "http/client.h"
#include "wisp/status.h"

namespace wisp {

using HttpDoneCallback = std::function<void(Result<HttpResponse>)>;

// Sends `method target` with `body` and `headers` to the node at `url` and calls `done` with the
// whole reply or a Status. `target` starts with '/' and may carry a query; it goes after
// url.base_path. Content-Length comes from `body` (left out for a body-less GET/HEAD).
// `timeout` covers the whole exchange, counted from this call (time spent waiting for `io` to
// start the work counts too; a request that waited past its deadline is not sent).
// `done` must be callable and should not throw.
// `tls` is used for an https URL (null: HttpTlsContext::SystemDefault()) and held until `done`
// has run; an http URL ignores it.
void AsyncHttpRequest(boost::asio::io_context& io, const Url& url, std::string method,
                      std::string target, std::string body, HttpHeaders headers,
                      std::chrono::milliseconds timeout, HttpDoneCallback done,
                      std::shared_ptr<HttpTlsContext> tls = nullptr);

}  // namespace wisp
