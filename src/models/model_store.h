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
// Failures: InvalidArgument (bad name, version or reference; model refused), NotFound (no such
// model or version), AlreadyExists, IoError (the filesystem, a corrupt file).
//
// Threads: thread-safe; one mutex serialises changes to the directory. Writes go to a temporary
// directory that is renamed into place, so a crash never leaves a half-written version.
#pragma once

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
  // "NAME": every version; "NAME@VERSION": that one. Returns what was removed.
  Result<std::vector<std::string>> Remove(std::string_view ref);
  // Integrity-checked load of a fresh session.
  Result<LoadedModel> Load(std::string_view ref);

  const std::string& root() const { return root_; }

 private:
  Result<InferenceBackendPtr> Backend();
  Result<std::vector<ModelMetadata>> VersionsOf(const std::string& name);  // in push order
  Result<ModelMetadata> Resolve(const ModelRef& ref);

  std::string root_;
  std::string backend_name_;
  std::mutex mu_;
  InferenceBackendPtr backend_;  // created on first use
};

}  // namespace wisp
