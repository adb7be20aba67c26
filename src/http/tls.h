// The TLS side of the HTTP clients (http/client.h, http/async_client.h): an OpenSSL client
// context built once from HttpTlsOptions and shared by every https request made with it.
//
// Verification is always on: the server's chain must end at a trusted CA (the ca_file, else the
// system's), and its certificate must name the URL's host (a DNS name, or an IP address for a
// numeric host). There is no switch to turn either off (docs/decisions.md says why).
//
// Ownership and threads: Create loads the files once; the context is immutable afterwards and
// any number of threads may start requests with it at once (each request makes its own SSL
// object from it). Keep it alive for as long as requests use it: the async client holds a
// shared_ptr until `done` has run.
#pragma once

// <utility> before any Asio header: Boost 1.74's asio uses std::exchange without including it,
// which GCC 12 in C++20 mode does not forgive.
#include <utility>

#include <boost/asio/ssl/context.hpp>

#include <memory>

#include "http/tls_options.h"
#include "wisp/status.h"

namespace wisp {

class HttpTlsContext {
 public:
  // Loads the trust store and, if given, the client certificate and key. InvalidArgument naming
  // the file when one is missing, unreadable, not PEM, or the key does not match the
  // certificate; also when only one of cert_file and key_file is set.
  static Result<std::shared_ptr<HttpTlsContext>> Create(const HttpTlsOptions& options);

  // The context for https URLs when the caller passes none: the system's CAs, no client
  // certificate. Built on first use, then shared; an error (no readable system store) is kept.
  static Result<std::shared_ptr<HttpTlsContext>> SystemDefault();

  const HttpTlsOptions& options() const { return options_; }
  // For making SSL streams; the streams only read it.
  boost::asio::ssl::context& native() { return context_; }

 private:
  explicit HttpTlsContext(HttpTlsOptions options);

  HttpTlsOptions options_;
  boost::asio::ssl::context context_;
};

}  // namespace wisp
