#include "http/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <boost/asio/ip/address.hpp>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include "http/client_internal.h"

namespace wisp {
namespace {

// The reason of the newest queued OpenSSL error ("no certificate or crl found"), and clears the
// queue so that it does not leak into a later, unrelated report.
std::string TakeOpenSslReason() {
  unsigned long code = 0;
  unsigned long last = 0;
  while ((code = ERR_get_error()) != 0) last = code;
  const char* reason = last != 0 ? ERR_reason_error_string(last) : nullptr;
  return reason != nullptr ? reason : "unknown OpenSSL error";
}

// OpenSSL's own messages for a missing file are vague; say which key names which file first.
Status CheckReadable(const char* key, const std::string& path) {
  std::ifstream file(path);
  if (!file) {
    return InvalidArgument(std::string(key) + " '" + path +
                           "': cannot read it: " + std::strerror(errno));
  }
  return Status::Ok();
}

// A key file that is encrypted would make OpenSSL ask for a pass phrase on the terminal; fail
// instead (the node runs unattended).
int RefusePassphrase(char*, int, int, void*) { return 0; }

}  // namespace

HttpTlsContext::HttpTlsContext(HttpTlsOptions options)
    : options_(std::move(options)), context_(boost::asio::ssl::context::tls_client) {}

Result<std::shared_ptr<HttpTlsContext>> HttpTlsContext::Create(const HttpTlsOptions& options) {
  if (options.cert_file.empty() != options.key_file.empty()) {
    return InvalidArgument(
        "cert_file and key_file go together: set both for a client certificate, or neither");
  }
  std::shared_ptr<HttpTlsContext> tls(new HttpTlsContext(options));
  SSL_CTX* ctx = tls->context_.native_handle();
  ERR_clear_error();
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_default_passwd_cb(ctx, RefusePassphrase);

  if (options.ca_file.empty()) {
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
      return InvalidArgument("cannot load the system's trusted CAs: " + TakeOpenSslReason());
    }
  } else {
    RETURN_IF_ERROR(CheckReadable("ca_file", options.ca_file));
    if (SSL_CTX_load_verify_locations(ctx, options.ca_file.c_str(), nullptr) != 1) {
      return InvalidArgument("ca_file '" + options.ca_file +
                             "': no PEM CA certificate in it: " + TakeOpenSslReason());
    }
  }

  if (!options.cert_file.empty()) {
    RETURN_IF_ERROR(CheckReadable("cert_file", options.cert_file));
    RETURN_IF_ERROR(CheckReadable("key_file", options.key_file));
    if (SSL_CTX_use_certificate_chain_file(ctx, options.cert_file.c_str()) != 1) {
      return InvalidArgument("cert_file '" + options.cert_file +
                             "': not a PEM certificate: " + TakeOpenSslReason());
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, options.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      // OpenSSL compares the key with the certificate as it loads it.
      const std::string reason = TakeOpenSslReason();
      if (reason.find("mismatch") != std::string::npos) {
        return InvalidArgument("key_file '" + options.key_file +
                               "' does not belong to cert_file '" + options.cert_file +
                               "': " + reason);
      }
      return InvalidArgument("key_file '" + options.key_file +
                             "': not an unencrypted PEM private key: " + reason);
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      return InvalidArgument("key_file '" + options.key_file + "' does not belong to cert_file '" +
                             options.cert_file + "': " + TakeOpenSslReason());
    }
  }
  return tls;
}

Result<std::shared_ptr<HttpTlsContext>> HttpTlsContext::SystemDefault() {
  static const Result<std::shared_ptr<HttpTlsContext>> system_default = Create({});
  return system_default;
}

namespace http_internal {

Status PrepareTlsSession(SSL* ssl, const Url& url) {
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  boost::system::error_code not_numeric;
  boost::asio::ip::make_address(url.host, not_numeric);
  if (!not_numeric) {
    // An address is checked against the certificate's IP SANs; SNI carries names only.
    if (X509_VERIFY_PARAM_set1_ip_asc(param, url.host.c_str()) != 1) {
      return InvalidArgument("'" + url.host + "' is not an IP address OpenSSL can check");
    }
    return Status::Ok();
  }
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (X509_VERIFY_PARAM_set1_host(param, url.host.c_str(), url.host.size()) != 1 ||
      SSL_set_tlsext_host_name(ssl, url.host.c_str()) != 1) {
    ERR_clear_error();
    return InvalidArgument("'" + url.host + "' is not a host name TLS can check");
  }
  return Status::Ok();
}

std::string TlsVerifyDetail(SSL* ssl) {
  const long result = SSL_get_verify_result(ssl);
  if (result == X509_V_OK) return {};
  return X509_verify_cert_error_string(result);
}

}  // namespace http_internal
}  // namespace wisp
