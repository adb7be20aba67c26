#include "node/model_upstream.h"

#include "http/client.h"
#include "runtime/model/model_runtime.h"

namespace wisp {

void InstallModelUpstreamCaller() {
  SetModelUpstreamCaller([](const std::string& url, const std::string& target,
                            const std::string& body,
                            std::chrono::milliseconds timeout) -> Result<UpstreamReply> {
    ASSIGN_OR_RETURN(Url parsed, ParseUrl(url));
    // One connection per escalation, bounded by the deadline (docs/inference.md says the cost).
    ASSIGN_OR_RETURN(
        HttpResponse reply,
        HttpRequest(parsed, "POST", target, body, {{"Content-Type", "application/json"}}, timeout));
    return UpstreamReply{reply.status, std::move(reply.body)};
  });
}

}  // namespace wisp
