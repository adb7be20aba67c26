// Gives model functions' `upstream:` (runtime/model/model_runtime.h) the node's HTTP client.
// Kept apart from the shard code: http/client.h and http/server.h both name an HttpResponse.
#pragma once

#include "http/tls_options.h"
#include "wisp/status.h"

namespace wisp {

// Installs the HTTP clients as the model runtime's upstream callers: the blocking one
// (http/client.h) for synchronous calls, the asynchronous one (http/async_client.h) for calls
// that wait on the shard's loop. https upstreams are verified with `tls` (the node's
// actions.tls: CA file, else the system's CAs; client certificate if set), loaded here once.
// InvalidArgument naming the file when a TLS file cannot be loaded; nothing is installed then.
// Call once at node start; any thread.
Status InstallModelUpstreamCaller(const HttpTlsOptions& tls);

}  // namespace wisp
