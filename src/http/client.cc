#include "http/client.h"

// <utility> before any Asio header: Boost 1.74's asio uses std::exchange without including it,
// which GCC 12 in C++20 mode does not forgive.
#include <utility>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream_base.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
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

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// RFC 9110 token characters: what a method or a header name may hold.
bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string::npos;
  });
}

// Beast writes fields as given, so a CR or LF here would let a value forge more headers.
bool HasLineBreakOrNul(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

// "Connection refused" -> "connection refused", to sit after a colon in a sentence.
std::string Describe(const boost::system::error_code& ec) {
  std::string text = ec.message();
  if (!text.empty()) text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  return text;
}

std::string Seconds(std::chrono::milliseconds timeout) {
  auto ms = timeout.count();
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

// An error OpenSSL reported on an established TLS connection (an alert from the server, e.g.
// "tlsv13 alert certificate required" when it wants a client certificate), as opposed to the
// TCP connection simply ending.
bool IsTlsRefusal(const boost::system::error_code& ec) {
  return ec.category() == asio::error::get_ssl_category() &&
         ERR_GET_REASON(static_cast<unsigned long>(ec.value())) !=
             SSL_R_UNEXPECTED_EOF_WHILE_READING;
}

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// Writes the request and reads the reply on a connected (and, for TLS, handshaken) stream,
// recording the stage reached and the first failure.
template <typename Stream>
void SendAndReceive(Stream& stream, http_internal::BeastRequest& request,
                    beast::flat_buffer& buffer, http_internal::BeastReplyParser& parser,
                    http_internal::Stage& stage, boost::system::error_code& failure) {
  using http_internal::Stage;
  stage = Stage::kSend;
  http::async_write(stream, request, [&](auto ec, std::size_t) {
    if (ec) {
      failure = ec;
      return;
    }
    stage = Stage::kReceive;
    // The header alone first: see http_internal::PrepareReplyParser.
    http::async_read_header(stream, buffer, parser, [&](auto ec, std::size_t) {
      if (ec) {
        failure = ec;
        return;
      }
      http::async_read(stream, buffer, parser, [&](auto ec, std::size_t) {
        if (ec) {
          failure = ec;
          return;
        }
        stage = Stage::kDone;
      });
    });
  });
}

}  // namespace

namespace http_internal {

std::string HostPort(const Url& url) {
  std::string host = url.host.find(':') == std::string::npos ? url.host : "[" + url.host + "]";
  return host + ":" + std::to_string(url.port);
}

Result<BeastRequest> BuildRequest(const Url& url, std::string_view method, std::string_view target,
                                  std::string body, const HttpHeaders& headers) {
  if (!IsToken(method)) {
    return InvalidArgument("'" + std::string(method) + "' is not an HTTP method");
  }
  if (target.empty() || target.front() != '/' ||
      target.find_first_of(std::string_view(" \r\n\0", 4)) != std::string_view::npos) {
    return InvalidArgument("request target '" + std::string(target) +
                           "' must start with '/' and hold no spaces or line breaks");
  }

  BeastRequest request;
  request.version(11);
  request.method_string({method.data(), method.size()});
  request.target(url.base_path + std::string(target));
  request.set(http::field::host, HostPort(url));
  request.set(http::field::user_agent, "wisp-client");
  request.set(http::field::connection, "close");
  for (const auto& [name, value] : headers) {
    if (!IsToken(name) || HasLineBreakOrNul(value)) {
      return InvalidArgument("bad header '" + name + "': names are tokens, values one line");
    }
    request.set(name, value);
  }
  request.body() = std::move(body);
  request.prepare_payload();
  return request;
}

void PrepareReplyParser(const BeastRequest& request, BeastReplyParser& parser) {
  parser.body_limit(kMaxReplyBodyBytes);
  // A reply to HEAD announces a Content-Length but carries no body.
  if (request.method() == http::verb::head) parser.skip(true);
}

Status DeadlineFailure(const Url& url, std::chrono::milliseconds timeout) {
  return DeadlineExceeded(url.ToString() + ": no complete reply within " + Seconds(timeout));
}

Status TransportFailure(const Url& url, Stage stage, const boost::system::error_code& failure,
                        std::chrono::milliseconds timeout, std::string_view tls_detail) {
  if (failure == beast::error::timeout) return DeadlineFailure(url, timeout);
  const std::string where = url.ToString();
  if ((stage == Stage::kSend || stage == Stage::kReceive) && IsTlsRefusal(failure)) {
    return Unavailable(where + ": TLS connection refused: " + Describe(failure));
  }
  switch (stage) {
    case Stage::kResolve:
      return Unavailable(where + ": cannot resolve host '" + url.host + "': " + Describe(failure));
    case Stage::kConnect:
      return Unavailable(where + ": " + Describe(failure));
    case Stage::kHandshake: {
      std::string text = where + ": TLS handshake failed: " + Describe(failure);
      if (!tls_detail.empty()) text += ": " + std::string(tls_detail);
      return Unavailable(text);
    }
    case Stage::kSend:
      return IoError(where + ": connection lost while sending the request: " + Describe(failure));
    case Stage::kReceive:
      if (failure == http::error::body_limit) {
        return ResourceExhausted(where + ": reply body larger than " +
                                 std::to_string(kMaxReplyBodyBytes >> 20) + " MiB");
      }
      if (failure.category() == http::make_error_code(http::error::bad_version).category() &&
          failure != http::error::end_of_stream && failure != http::error::partial_message) {
        return IoError(where + ": the reply is not valid HTTP: " + Describe(failure));
      }
      return IoError(where +
                     ": connection closed before the reply was complete: " + Describe(failure));
    case Stage::kDone:
      break;
  }
  return Internal(where + ": exchange reported as failed after it completed");
}

HttpResponse TakeReply(BeastReplyParser& parser) {
  auto& message = parser.get();
  HttpResponse response;
  response.status = static_cast<int>(message.result_int());
  for (const auto& field : message) {
    response.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  }
  response.body = std::move(message.body());
  return response;
}

}  // namespace http_internal

using http_internal::HostPort;

std::string Url::ToString() const {
  return (https ? "https://" : "http://") + HostPort(*this) + base_path;
}

Result<Url> ParseUrl(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  const std::string original(text);
  if (text.empty()) return InvalidArgument("empty server URL: pass one like http://127.0.0.1:8080");

  bool https = false;
  if (auto pos = text.find("://"); pos != std::string_view::npos) {
    std::string scheme = Lower(text.substr(0, pos));
    if (scheme != "http" && scheme != "https") {
      return InvalidArgument("'" + original + "': only http:// and https:// URLs are supported, " +
                             "like http://127.0.0.1:8080");
    }
    https = scheme == "https";
    text.remove_prefix(pos + 3);
  }
  if (text.find_first_of("?#") != std::string_view::npos) {
    return InvalidArgument("'" + original + "': a server URL takes no query or fragment");
  }

  std::string_view authority = text.substr(0, text.find('/'));
  std::string_view path =
      authority.size() < text.size() ? text.substr(authority.size()) : std::string_view();
  if (authority.find('@') != std::string_view::npos) {
    return InvalidArgument("'" + original +
                           "': user info in the URL is not supported; pass the token with "
                           "--token or WISP_TOKEN");
  }

  Url url;
  url.https = https;
  url.port = https ? 443 : 80;
  std::string_view port_text;
  bool has_port = false;
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) {
      return InvalidArgument("'" + original + "': missing ']' after the IPv6 address");
    }
    url.host = std::string(authority.substr(1, close - 1));
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        return InvalidArgument("'" + original + "': expected ':PORT' after ']'");
      }
      port_text = rest.substr(1);
      has_port = true;
    }
  } else {
    auto colon = authority.find(':');
    if (colon != std::string_view::npos &&
        authority.find(':', colon + 1) != std::string_view::npos) {
      return InvalidArgument("'" + original + "': write an IPv6 address in brackets, like " +
                             "http://[::1]:8080");
    }
    url.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      has_port = true;
    }
  }
  if (url.host.empty()) {
    return InvalidArgument("'" + original + "': no host; pass a URL like http://127.0.0.1:8080");
  }
  url.host = Lower(url.host);
  if (has_port) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
    if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() ||
        value == 0 || value > 65535) {
      return InvalidArgument("'" + original + "': the port must be a number from 1 to 65535");
    }
    url.port = static_cast<std::uint16_t>(value);
  }
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  url.base_path = std::string(path);
  return url;
}

std::optional<std::string> HttpResponse::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key.size() == name.size() &&
        std::equal(key.begin(), key.end(), name.begin(), [](unsigned char a, unsigned char b) {
          return std::tolower(a) == std::tolower(b);
        })) {
      return value;
    }
  }
  return std::nullopt;
}

Result<HttpResponse> HttpRequest(const std::string& url_base, std::string_view method,
                                 std::string_view target, std::string_view body,
                                 const HttpHeaders& headers, std::chrono::milliseconds timeout,
                                 HttpTlsContext* tls) {
  ASSIGN_OR_RETURN(Url url, ParseUrl(url_base));
  return HttpRequest(url, method, target, body, headers, timeout, tls);
}

Result<HttpResponse> HttpRequest(const Url& url, std::string_view method, std::string_view target,
                                 std::string_view body, const HttpHeaders& headers,
                                 std::chrono::milliseconds timeout, HttpTlsContext* tls) {
  using http_internal::Stage;
  ASSIGN_OR_RETURN(http_internal::BeastRequest request,
                   http_internal::BuildRequest(url, method, target, std::string(body), headers));

  asio::io_context io;
  tcp::resolver resolver(io);
  // Exactly one of the two: TLS wraps its own tcp_stream, which carries the deadline.
  std::optional<beast::tcp_stream> plain;
  std::optional<TlsStream> secure;
  std::shared_ptr<HttpTlsContext> system_default;
  if (url.https) {
    if (tls == nullptr) {
      ASSIGN_OR_RETURN(system_default, HttpTlsContext::SystemDefault());
      tls = system_default.get();
    }
    secure.emplace(io, tls->native());
    RETURN_IF_ERROR(http_internal::PrepareTlsSession(secure->native_handle(), url));
  } else {
    plain.emplace(io);
  }
  beast::tcp_stream& tcp_layer = secure ? secure->next_layer() : *plain;
  beast::flat_buffer buffer;
  http_internal::BeastReplyParser parser;
  http_internal::PrepareReplyParser(request, parser);
  const auto deadline = std::chrono::steady_clock::now() + timeout;

  // Each step records how it ended; the first failure stops the chain.
  Stage stage = Stage::kResolve;
  boost::system::error_code failure;

  resolver.async_resolve(url.host, std::to_string(url.port), [&](auto ec, auto endpoints) {
    if (ec) {
      failure = ec;
      return;
    }
    stage = Stage::kConnect;
    tcp_layer.expires_at(deadline);
    tcp_layer.async_connect(endpoints, [&](auto ec, const auto&) {
      if (ec) {
        failure = ec;
        return;
      }
      if (!secure) return SendAndReceive(*plain, request, buffer, parser, stage, failure);
      stage = Stage::kHandshake;
      secure->async_handshake(asio::ssl::stream_base::client, [&](auto ec) {
        if (ec) {
          failure = ec;
          return;
        }
        SendAndReceive(*secure, request, buffer, parser, stage, failure);
      });
    });
  });
  // tcp_stream enforces the deadline on connect, handshake, send and receive; run_until bounds
  // name resolution too, which has no timeout of its own.
  io.run_until(deadline);
  if (stage != Stage::kDone && !failure) {
    resolver.cancel();
    tcp_layer.close();
    io.restart();
    io.run();  // lets the cancelled handlers finish before their captures go away
    return http_internal::DeadlineFailure(url, timeout);
  }
  if (stage != Stage::kDone) {
    const std::string detail =
        stage == Stage::kHandshake ? http_internal::TlsVerifyDetail(secure->native_handle()) : "";
    return http_internal::TransportFailure(url, stage, failure, timeout, detail);
  }
  return http_internal::TakeReply(parser);
}

}  // namespace wisp
