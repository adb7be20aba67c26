// StateStore: where functions keep state, since they keep none themselves.
//
// Keys live in namespaces (one per function), so two functions never see each other's keys.
// Values are opaque bytes; Incr treats a value as a decimal 64-bit integer. A TTL, when given,
// makes the key disappear that long after the write (reads never return an expired key).
//
// Backends register a StateBackendFactory by name ("sqlite" embedded by default; "redis"
// later) and callers only ever see these two interfaces.
//
// Threads: a StateBackend is shared by the whole node and is thread-safe. Each shard thread
// calls Connect() once and owns the StateStore it gets: a StateStore is used by that one
// thread only, so a backend can keep one connection per shard and no lock on the hot path.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "wisp/registry.h"
#include "wisp/status.h"

namespace wisp {

using Ttl = std::optional<std::chrono::milliseconds>;

class StateStore {
 public:
  virtual ~StateStore() = default;

  // The value, or std::nullopt when the key is absent or expired. IoError if the store fails.
  virtual Result<std::optional<std::string>> Get(std::string_view ns, std::string_view key) = 0;

  // Writes durably (survives a crash of the node once this returns OK).
  virtual Status Put(std::string_view ns, std::string_view key, std::string_view value,
                     Ttl ttl = std::nullopt) = 0;

  // Returns true if a key was removed.
  virtual Result<bool> Delete(std::string_view ns, std::string_view key) = 0;

  // Adds `delta` to the integer stored at key (absent counts as 0) atomically, even with other
  // shards incrementing the same key, and returns the new value. InvalidArgument if the stored
  // value is not an integer. A TTL, when given, is (re)set by the write.
  virtual Result<std::int64_t> Incr(std::string_view ns, std::string_view key,
                                    std::int64_t delta = 1, Ttl ttl = std::nullopt) = 0;

  // Removes every key of a namespace (a function was deleted).
  virtual Status DropNamespace(std::string_view ns) = 0;
};
using StateStorePtr = std::unique_ptr<StateStore>;

class StateBackend {
 public:
  virtual ~StateBackend() = default;
  // A store for the calling thread. Thread-safe.
  virtual Result<StateStorePtr> Connect() = 0;
};
using StateBackendPtr = std::shared_ptr<StateBackend>;

struct StateBackendOptions {
  std::string data_dir;    // the node's data directory; embedded backends keep files here
  bool sync_full = false;  // fsync every commit (survives power loss, slower)
  std::string url;         // for networked backends
};

using StateBackendFactory =
    std::function<Result<StateBackendPtr>(const StateBackendOptions& options)>;
using StateBackendRegistry = Registry<StateBackendFactory>;

// Opens the backend registered under `name`; NotFound lists the registered names.
Result<StateBackendPtr> OpenStateBackend(std::string_view name, const StateBackendOptions& options);

}  // namespace wisp
