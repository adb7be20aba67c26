// OpenStateBackend: the one place the node turns a configured backend name into a backend.
// It looks the name up in the registry only, so the core never names a concrete backend;
// extensions register themselves (e.g. RegisterSqliteStateBackend) before the node starts.

#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "wisp/state_store.h"

namespace wisp {

Result<StateBackendPtr> OpenStateBackend(std::string_view name,
                                         const StateBackendOptions& options) {
  const StateBackendFactory* factory = StateBackendRegistry::Get().Find(name);
  if (factory == nullptr) {
    std::vector<std::string> names = StateBackendRegistry::Get().Names();
    return NotFound(
        fmt::format("unknown state backend '{}' (registered: {})", name,
                    names.empty() ? "none" : fmt::format("{}", fmt::join(names, ", "))));
  }
  Result<StateBackendPtr> backend = (*factory)(options);
  if (!backend.ok()) return backend.status().WithContext(fmt::format("state backend '{}'", name));
  if (*backend == nullptr) return Internal(fmt::format("state backend '{}' returned null", name));
  return backend;
}

}  // namespace wisp
