// The extensions compiled into this build: the one place that names concrete runtimes and
// state backends (like Envoy's extensions build config). The core only looks them up by name.
#pragma once

namespace wisp {

// Registers every built-in extension. Idempotent; call before the node starts.
void RegisterBuiltinExtensions();

}  // namespace wisp
