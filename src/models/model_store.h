// The model registry: versioned ONNX models in the node's data directory.
//
// Layout: <data>/models/NAME/VERSION/model.onnx and metadata.json (name, version, sha256,
// size_bytes, backend, pushed_at, inputs, outputs, op_types, opset, producer). Versions are
// immutable: pushing an existing NAME@VERSION is AlreadyExists. A reference is "NAME@VERSION" or
// "NAME" (the version pushed last).
//
// Push checks the bytes with the inference backend before storing them, so a corrupt model or
// one using an operator the backend lacks is refused with the backend's reason
// (InvalidArgument). The check runs in this process (docs/inference.md says why). Load reads
// the file back and compares its sha256 with the metadata (IoError "... is corrupt" on a
// mismatch) before handing the bytes to the backend; every load is a fresh session, so a shard
// caches what it loads.
//
// Channels (docs/inference.md, "Rollout"): each model may have a "stable" and a "canary" channel,
// kept in <data>/models/NAME/channels.json. "NAME@stable" and "NAME@canary" resolve through them
// (so "stable" and "canary" are not allowed as versions). Promote to stable validates the version
// against a user-given reference set first and refuses the switch when any case is off by more
// than the tolerance (InvalidArgument naming the case, the output element and the error).
// A canary takes `percent` of the calls of functions naming NAME@stable; callers report canary
// failures, and AbandonCanary drops it (the automatic rollback). Every channel change bumps
// ChannelGeneration(), which callers compare to know when to re-resolve.
//
// Failures: InvalidArgument (bad name, version or reference; model refused), NotFound (no such
// model or version), AlreadyExists, IoError (the filesystem, a corrupt file).
//
// Threads: thread-safe; one mutex serialises changes to the directory. Writes go to a temporary
// directory that is renamed into place, so a crash never leaves a half-written version.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "wisp/inference.h"

namespace wisp {

struct ModelMetadata {
  std::string name;
  std::string version;
  std::string sha256;  // hex
  std::uint64_t size_bytes = 0;
  std::string backend;
  std::int64_t pushed_at_ms = 0;  // since the epoch
  ModelInfo info;
  std::vector<std::string> op_types;
  std::int64_t opset = 0;
  std::string producer;
};

nlohmann::json ModelMetadataToJson(const ModelMetadata& metadata);
// Parses stored metadata (fuzz/model_metadata_fuzz.cc); InvalidArgument naming the bad field.
Result<ModelMetadata> ModelMetadataFromText(std::string_view text);

struct ModelRef {
  std::string name;
  std::string version;  // empty: the latest
};
// "NAME" or "NAME@VERSION"; names and versions are 1-64 of [A-Za-z0-9._-], not starting with
// '.' or '-'.
Result<ModelRef> ParseModelRef(std::string_view text);
bool IsValidModelName(std::string_view text);

// The channels of one model.
struct ModelChannels {
  std::string name;
  std::string stable;                  // a version; empty: no stable channel yet
  std::string previous_stable;         // what rollback returns to
  std::string canary;                  // empty: no canary
  int canary_percent = 0;              // 1..100 of the calls of NAME@stable functions
  double canary_max_error_rate = 0.2;  // abandoned when its failures in a window exceed this
  int canary_window = 20;              // calls
  std::uint64_t automatic_rollbacks = 0;
  std::string last_change;  // human-readable: what changed last and why
};
nlohmann::json ModelChannelsToJson(const ModelChannels& channels);
Result<ModelChannels> ModelChannelsFromText(std::string_view text);

struct PromoteRequest {
  std::string ref;      // NAME@VERSION
  std::string channel;  // "stable" or "canary"
  int percent = 10;     // canary only
  double max_error_rate = 0.2;
  int window = 20;
  // {"cases": [{"inputs": {NAME: tensor}, "outputs": {NAME: tensor}}], "tolerance": T} (the
  // format of tests/data/models/*.expected.json). Required for stable, optional for canary.
  nlohmann::json reference;
  double tolerance = -1;  // < 0: the reference's "tolerance", else 1e-4
};

// Runs `session` on every case of `reference`; refuses naming the first case off by
// more than `tolerance` (InvalidArgument; max absolute difference per element).
Status CheckReferenceSet(ModelSession& session, const nlohmann::json& reference, double tolerance);

// A session loaded from the store, with what it took.
struct LoadedModel {
  ModelMetadata metadata;
  ModelSessionPtr session;
  double load_seconds = 0;
};

// Lowercase hex SHA-256 of `bytes`.
std::string Sha256Hex(std::string_view bytes);

class ModelStore {
 public:
  // `data_dir` is the node's; models live in data_dir/models. `backend` names an
  // InferenceBackendRegistry entry.
  ModelStore(std::string data_dir, std::string backend = "opencv");

  // Stores `bytes` as NAME@VERSION (`version` empty: one more than the highest numeric version,
  // starting at "1").
  Result<ModelMetadata> Push(std::string_view name, std::string_view version,
                             std::string_view bytes);
  // Every version of every model, by name then push order.
  Result<std::vector<ModelMetadata>> List();
  Result<ModelMetadata> Describe(std::string_view ref);
  // "NAME": every version (and the channels); "NAME@VERSION": that one, unless a channel names
  // it (InvalidArgument). Returns what was removed.
  Result<std::vector<std::string>> Remove(std::string_view ref);
  // Integrity-checked load of a fresh session.
  Result<LoadedModel> Load(std::string_view ref);

  // Channels: see the file comment.
  Result<ModelChannels> Promote(const PromoteRequest& request);
  // Drops the canary if there is one; otherwise returns stable to its previous version.
  Result<ModelChannels> Rollback(std::string_view name);
  Result<ModelChannels> Channels(std::string_view name);
  // The automatic rollback: drops `version` from the canary channel (if it is still there) and
  // records `reason`. Logged at warning level.
  Result<ModelChannels> AbandonCanary(std::string_view name, std::string_view version,
                                      std::string_view reason);
  std::uint64_t ChannelGeneration() const { return generation_.load(std::memory_order_acquire); }

  const std::string& root() const { return root_; }

 private:
  Result<InferenceBackendPtr> Backend();
  Result<std::vector<ModelMetadata>> VersionsOf(const std::string& name);  // in push order
  Result<ModelMetadata> Resolve(const ModelRef& ref);
  Result<ModelChannels> ReadChannels(const std::string& name);  // mu_ held
  Status WriteChannels(const ModelChannels& channels);          // mu_ held; bumps generation_

  std::string root_;
  std::string backend_name_;
  std::mutex mu_;
  InferenceBackendPtr backend_;  // created on first use
  std::atomic<std::uint64_t> generation_{0};
};

}  // namespace wisp
