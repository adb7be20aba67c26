// Pieces the blocking client (client.cc) and the asynchronous one (async_client.cc) share, so
// both build the same request and map failures to the same Status. Internal to src/http/: the
// public types are in client.h. Pure functions; any thread.
#pragma once

// <utility> before any Asio header: Boost 1.74's asio uses std::exchange without including it,
// which GCC 12 in C++20 mode does not forgive.
#include <utility>

#include <openssl/ssl.h>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <string>
#include <string_view>

#include "http/client.h"
#include "wisp/status.h"

namespace wisp::http_internal {

using BeastRequest = boost::beast::http::request<boost::beast::http::string_body>;
using BeastReplyParser = boost::beast::http::response_parser<boost::beast::http::string_body>;

// How far an exchange got; a failure is reported by the step it happened in.
enum class Stage { kResolve, kConnect, kHandshake, kSend, kReceive, kDone };

// "host:port", with an IPv6 host in brackets: the Host header and the printed URL.
std::string HostPort(const Url& url);

// Checks method, target and headers and builds `method base_path+target` with Host,
// User-Agent, `Connection: close` and Content-Length. InvalidArgument when any part is malformed.
Result<BeastRequest> BuildRequest(const Url& url, std::string_view method, std::string_view target,
                                  std::string body, const HttpHeaders& headers);

// Applies the reply body limit (kMaxReplyBodyBytes) and, for HEAD, skips the announced body.
//
// Read the header alone (http::async_read_header) before the body. Beast 300 (Boost 1.74) checks a
// Content-Length against the limit only when the header is parsed, and for a reply parsed
// eagerly, as http::async_read does, it drops that error when body bytes came in the same read:
// the string body then reserves the announced size (std::bad_alloc for a huge one) and the body
// is not counted against the limit. A header-only read stops at the header and keeps the error.
void PrepareReplyParser(const BeastRequest& request, BeastReplyParser& parser);

// The Status for an exchange that failed at `stage` with `failure` (a Beast timeout included).
// `tls_detail` is TlsVerifyDetail's text for a refused certificate, appended to the message.
Status TransportFailure(const Url& url, Stage stage, const boost::system::error_code& failure,
                        std::chrono::milliseconds timeout, std::string_view tls_detail = {});

// Readies a client SSL object for url.host before its handshake: the certificate must name the
// host (an IP SAN for a numeric host, a DNS name otherwise, no partial wildcards) and a name is
// sent as SNI. InvalidArgument when OpenSSL refuses the host text. Defined in tls.cc.
Status PrepareTlsSession(SSL* ssl, const Url& url);

// Why OpenSSL refused the peer's certificate ("self-signed certificate", "IP address
// mismatch"), or "" when verification did not fail. Defined in tls.cc.
std::string TlsVerifyDetail(SSL* ssl);

// The Status for an exchange that did not finish within `timeout`.
Status DeadlineFailure(const Url& url, std::chrono::milliseconds timeout);

// Moves the parsed reply into the public type (status, headers in order, body).
HttpResponse TakeReply(BeastReplyParser& parser);

}  // namespace wisp::http_internal
