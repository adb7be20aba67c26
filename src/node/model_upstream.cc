#include "node/model_upstream.h"

#include <utility>  // before Asio (Boost 1.74 + GCC 12 C++20)

#include <boost/asio/post.hpp>

#include "http/async_client.h"
#include "http/client.h"
#include "http/tls.h"
#include "runtime/model/model_runtime.h"

namespace wisp {

namespace {
const HttpHeaders& JsonContentType() {
  static const HttpHeaders headers = {{"Content-Type", "application/json"}};
  return headers;
}
}  // namespace

Status InstallModelUpstreamCaller(const HttpTlsOptions& tls_options) {
  // One TLS context for every https upstream; null (the system's CAs, built on first use) when
  // the node names no files.
  std::shared_ptr<HttpTlsContext> tls;
  if (!tls_options.empty()) {
    auto created = HttpTlsContext::Create(tls_options);
    if (!created.ok()) return created.status().WithContext("actions.tls");
    tls = std::move(*created);
  }
  // MQTT and timer calls: one connection per escalation, bounded by the deadline, on the shard
  // thread (docs/inference.md says the cost).
  SetModelUpstreamCaller([tls](const std::string& url, const std::string& target,
                               const std::string& body,
                               std::chrono::milliseconds timeout) -> Result<UpstreamReply> {
    ASSIGN_OR_RETURN(Url parsed, ParseUrl(url));
    ASSIGN_OR_RETURN(HttpResponse reply, HttpRequest(parsed, "POST", target, body,
                                                     JsonContentType(), timeout, tls.get()));
    return UpstreamReply{reply.status, std::move(reply.body)};
  });
  // HTTP invokes: the same request on the shard's own loop, which serves others meanwhile.
  SetModelAsyncUpstreamCaller([tls](boost::asio::io_context& io, const std::string& url,
                                    const std::string& target, std::string body,
                                    std::chrono::milliseconds timeout, AsyncUpstreamDone done) {
    auto parsed = ParseUrl(url);
    if (!parsed.ok()) {
      // Completion is never inline (the caller's contract): go through the loop.
      return boost::asio::post(
          io, [done = std::move(done), status = parsed.status()] { done(status); });
    }
    AsyncHttpRequest(
        io, *parsed, "POST", target, std::move(body), JsonContentType(), timeout,
        [done = std::move(done)](Result<HttpResponse> reply) {
          if (!reply.ok()) return done(reply.status());
          done(UpstreamReply{reply->status, std::move(reply->body)});
        },
        tls);
  });
  return Status::Ok();
}

}  // namespace wisp
