// Gives model functions' `upstream:` (runtime/model/model_runtime.h) the node's HTTP client.
// Kept apart from the shard code: http/client.h and http/server.h both name an HttpResponse.
#pragma once

namespace wisp {

// Installs the blocking HTTP client (http/client.h) as the model runtime's upstream caller.
// Call once at node start; any thread.
void InstallModelUpstreamCaller();

}  // namespace wisp
