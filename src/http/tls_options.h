// Which files an https client trusts and presents: plain data, so that config structs
// (node/node.h) can carry it without pulling in OpenSSL. The context built from it is
// HttpTlsContext (http/tls.h).
#pragma once

#include <string>

namespace wisp {

// PEM file paths. Peer verification is always on; these only say whom to trust and who we are.
struct HttpTlsOptions {
  std::string ca_file;    // CA certificates to trust; empty: the system's (/etc/ssl/certs)
  std::string cert_file;  // client certificate chain for mutual TLS; empty: none
  std::string key_file;   // its private key (unencrypted); set exactly when cert_file is

  bool empty() const { return ca_file.empty() && cert_file.empty() && key_file.empty(); }
  bool operator==(const HttpTlsOptions&) const = default;
};

}  // namespace wisp
