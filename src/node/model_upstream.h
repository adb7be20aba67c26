// Gives model functions' `upstream:` (runtime/model/model_runtime.h) the node's HTTP client.
// Kept apart from the shard code: http/client.h and http/server.h both name an HttpResponse.
#pragma once

namespace wisp {

// Installs the HTTP clients as the model runtime's upstream callers: the blocking one
// (http/client.h) for synchronous calls, the asynchronous one (http/async_client.h) for calls
// that wait on the shard's loop.
// Call once at node start; any thread.
void InstallModelUpstreamCaller();

}  // namespace wisp
