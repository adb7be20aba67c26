#include "models/model_store.h"

#include <openssl/evp.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <type_traits>

#include <fmt/format.h>

#include "inference/onnx_info.h"
#include "inference/tensor_json.h"

namespace wisp {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr std::size_t kMaxNameLength = 64;

Result<std::string> ReadWholeFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return IoError(fmt::format("cannot read {}", path.string()));
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) return IoError(fmt::format("cannot read {}", path.string()));
  return out.str();
}

Status WriteWholeFile(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return IoError(fmt::format("cannot write {}", path.string()));
  return Status::Ok();
}

bool IsNumber(std::string_view text, std::uint64_t& value) {
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  return ec == std::errc() && ptr == text.data() + text.size();
}

template <typename T>
Result<T> Field(const json& doc, const char* key) {
  auto it = doc.find(key);
  if (it == doc.end()) return InvalidArgument(fmt::format("model metadata: {} is missing", key));
  // nlohmann converts any number to an integer type with a plain cast, which is undefined for
  // a value out of the type's range (1e50, -1 for unsigned): check the kind and range first.
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    const bool fits = it->is_number_unsigned() ? it->template get<std::uint64_t>() <=
                                                     std::uint64_t{std::numeric_limits<T>::max()}
                                               : it->is_number_integer() && std::is_signed_v<T>;
    if (!fits) {
      return InvalidArgument(
          fmt::format("model metadata: {} must be a whole number in range", key));
    }
  }
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    return InvalidArgument(fmt::format("model metadata: {} has the wrong type", key));
  }
}

bool IsChannelName(std::string_view text) { return text == "stable" || text == "canary"; }

}  // namespace

bool IsValidModelName(std::string_view text) {
  if (text.empty() || text.size() > kMaxNameLength) return false;
  if (text.front() == '.' || text.front() == '-') return false;
  return std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

Result<ModelRef> ParseModelRef(std::string_view text) {
  ModelRef ref;
  auto at = text.find('@');
  ref.name = std::string(text.substr(0, at));
  if (at != std::string_view::npos) ref.version = std::string(text.substr(at + 1));
  if (!IsValidModelName(ref.name)) {
    return InvalidArgument(fmt::format(
        "'{}' is not a model name (1-64 of A-Z a-z 0-9 . _ -, not starting with . or -)",
        ref.name));
  }
  if (at != std::string_view::npos && !IsValidModelName(ref.version)) {
    return InvalidArgument(fmt::format(
        "'{}' is not a model version (1-64 of A-Z a-z 0-9 . _ -, not starting with . or -)",
        ref.version));
  }
  return ref;
}

std::string Sha256Hex(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr);
  std::string hex;
  hex.reserve(length * 2);
  for (unsigned int i = 0; i < length; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

json ModelMetadataToJson(const ModelMetadata& m) {
  json doc = ModelInfoToJson(m.info);
  doc["name"] = m.name;
  doc["version"] = m.version;
  doc["sha256"] = m.sha256;
  doc["size_bytes"] = m.size_bytes;
  doc["backend"] = m.backend;
  doc["pushed_at_ms"] = m.pushed_at_ms;
  doc["op_types"] = m.op_types;
  doc["opset"] = m.opset;
  doc["producer"] = m.producer;
  return doc;
}

Result<ModelMetadata> ModelMetadataFromText(std::string_view text) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return InvalidArgument("model metadata is not a JSON object");
  }
  ModelMetadata m;
  ASSIGN_OR_RETURN(m.name, Field<std::string>(doc, "name"));
  ASSIGN_OR_RETURN(m.version, Field<std::string>(doc, "version"));
  ASSIGN_OR_RETURN(m.sha256, Field<std::string>(doc, "sha256"));
  ASSIGN_OR_RETURN(m.size_bytes, Field<std::uint64_t>(doc, "size_bytes"));
  ASSIGN_OR_RETURN(m.backend, Field<std::string>(doc, "backend"));
  ASSIGN_OR_RETURN(m.pushed_at_ms, Field<std::int64_t>(doc, "pushed_at_ms"));
  ASSIGN_OR_RETURN(m.op_types, Field<std::vector<std::string>>(doc, "op_types"));
  ASSIGN_OR_RETURN(m.opset, Field<std::int64_t>(doc, "opset"));
  ASSIGN_OR_RETURN(m.producer, Field<std::string>(doc, "producer"));
  ASSIGN_OR_RETURN(m.info, ModelInfoFromJson(doc));
  if (!IsValidModelName(m.name) || !IsValidModelName(m.version)) {
    return InvalidArgument("model metadata: bad name or version");
  }
  if (m.sha256.size() != 64) return InvalidArgument("model metadata: sha256 is not 64 hex digits");
  return m;
}

json ModelChannelsToJson(const ModelChannels& c) {
  json doc = {{"name", c.name},
              {"stable", c.stable},
              {"previous_stable", c.previous_stable},
              {"canary", c.canary},
              {"canary_percent", c.canary_percent},
              {"canary_max_error_rate", c.canary_max_error_rate},
              {"canary_window", c.canary_window},
              {"automatic_rollbacks", c.automatic_rollbacks},
              {"last_change", c.last_change}};
  return doc;
}

Result<ModelChannels> ModelChannelsFromText(std::string_view text) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return InvalidArgument("model channels are not a JSON object");
  }
  ModelChannels c;
  ASSIGN_OR_RETURN(c.name, Field<std::string>(doc, "name"));
  ASSIGN_OR_RETURN(c.stable, Field<std::string>(doc, "stable"));
  ASSIGN_OR_RETURN(c.previous_stable, Field<std::string>(doc, "previous_stable"));
  ASSIGN_OR_RETURN(c.canary, Field<std::string>(doc, "canary"));
  ASSIGN_OR_RETURN(c.canary_percent, Field<int>(doc, "canary_percent"));
  ASSIGN_OR_RETURN(c.canary_max_error_rate, Field<double>(doc, "canary_max_error_rate"));
  ASSIGN_OR_RETURN(c.canary_window, Field<int>(doc, "canary_window"));
  ASSIGN_OR_RETURN(c.automatic_rollbacks, Field<std::uint64_t>(doc, "automatic_rollbacks"));
  ASSIGN_OR_RETURN(c.last_change, Field<std::string>(doc, "last_change"));
  return c;
}

namespace {

// Reference tensors are nested arrays, or {"shape": [...], "data": [flat]} (the form of
// tests/data/models/*.expected.json); the latter becomes nested arrays.
json NestedFromFlat(const json& data, const json& shape, std::size_t dim, std::size_t& at) {
  if (dim == shape.size()) return at < data.size() ? data[at++] : json();
  json level = json::array();
  const std::int64_t n = shape[dim].is_number_integer() ? shape[dim].get<std::int64_t>() : 0;
  for (std::int64_t i = 0; i < n && i < (1 << 20); ++i) {
    level.push_back(NestedFromFlat(data, shape, dim + 1, at));
  }
  return level;
}

json ReferenceTensor(const json& value) {
  if (!value.is_object() || !value.contains("data")) return value;
  const json& data = value["data"];
  const json shape = value.value("shape", json::array({data.is_array() ? data.size() : 0}));
  if (!data.is_array() || !shape.is_array()) return value;
  // Only a shape that holds exactly the data is unfolded; any other is left as given (and then
  // fails the comparison with a message), so a shape like [1e6, 1e6] cannot blow up memory.
  std::uint64_t elements = 1;
  for (const json& dim : shape) {
    if (!dim.is_number_unsigned() || dim.get<std::uint64_t>() > data.size()) return value;
    elements *= dim.get<std::uint64_t>();
    if (elements > data.size()) return value;
  }
  if (elements != data.size()) return value;
  std::size_t at = 0;
  return NestedFromFlat(data, shape, 0, at);
}

}  // namespace

Status CheckReferenceSet(ModelSession& session, const json& reference, double tolerance) {
  if (!reference.is_object() || !reference.contains("cases") || !reference["cases"].is_array() ||
      reference["cases"].empty()) {
    return InvalidArgument("the reference set needs {\"cases\": [{\"inputs\", \"outputs\"}, ...]}");
  }
  if (tolerance < 0) {
    auto it = reference.find("tolerance");
    tolerance = it != reference.end() && it->is_number() ? it->get<double>() : 1e-4;
  }
  const json& cases = reference["cases"];
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const json& c = cases[i];
    if (!c.is_object() || !c.contains("inputs") || !c.contains("outputs") ||
        !c["outputs"].is_object()) {
      return InvalidArgument(fmt::format("reference case {} needs inputs and outputs", i));
    }
    json case_inputs = c["inputs"];
    if (case_inputs.is_object()) {
      for (auto& [name, value] : case_inputs.items()) value = ReferenceTensor(value);
    }
    auto inputs = InputsFromJson(case_inputs, session.Info());
    if (!inputs.ok()) {
      return InvalidArgument(fmt::format("reference case {}: {}", i, inputs.status().message()));
    }
    auto outputs = session.Run(*inputs);
    if (!outputs.ok()) {
      return InvalidArgument(
          fmt::format("reference case {}: the model failed: {}", i, outputs.status().message()));
    }
    for (const auto& item : c["outputs"].items()) {
      // Named copies: clang cannot capture structured bindings in the lambda below.
      const std::string name = item.key();
      const json& expected_json = item.value();
      auto found = std::find_if(outputs->begin(), outputs->end(),
                                [&](const NamedTensor& t) { return t.first == name; });
      if (found == outputs->end()) {
        return InvalidArgument(
            fmt::format("reference case {}: the model has no output {}", i, name));
      }
      auto expected_tensor = TensorFromJson(ReferenceTensor(expected_json), name);
      if (!expected_tensor.ok()) {
        return InvalidArgument(
            fmt::format("reference case {}: {}", i, expected_tensor.status().message()));
      }
      const Tensor& expected = *expected_tensor;
      const Tensor& got = found->second;
      if (got.data.size() != expected.data.size()) {
        return InvalidArgument(
            fmt::format("reference case {}: output {} has {} values, expected {}", i, name,
                        got.data.size(), expected.data.size()));
      }
      for (std::size_t k = 0; k < got.data.size(); ++k) {
        const double off = std::fabs(static_cast<double>(got.data[k]) - expected.data[k]);
        if (!(off <= tolerance)) {  // NaN fails too
          return InvalidArgument(fmt::format(
              "reference case {}: output {}[{}] is {}, expected {} (off by {:.6g}, tolerance {:g})",
              i, name, k, got.data[k], expected.data[k], off, tolerance));
        }
      }
    }
  }
  return Status::Ok();
}

ModelStore::ModelStore(std::string data_dir, std::string backend)
    : root_((fs::path(data_dir) / "models").string()), backend_name_(std::move(backend)) {}

Result<InferenceBackendPtr> ModelStore::Backend() {
  if (backend_) return backend_;
  const auto* factory = InferenceBackendRegistry::Get().Find(backend_name_);
  if (factory == nullptr) {
    return Internal(fmt::format("no inference backend named '{}'", backend_name_));
  }
  backend_ = (*factory)();
  return backend_;
}

Result<std::vector<ModelMetadata>> ModelStore::VersionsOf(const std::string& name) {
  std::vector<ModelMetadata> versions;
  std::error_code ec;
  const fs::path dir = fs::path(root_) / name;
  if (!fs::is_directory(dir, ec)) return versions;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string version = entry.path().filename().string();
    if (!entry.is_directory() || !IsValidModelName(version)) continue;  // skips .tmp-* dirs
    auto text = ReadWholeFile(entry.path() / "metadata.json");
    if (!text.ok()) continue;  // a version being removed
    auto metadata = ModelMetadataFromText(*text);
    if (!metadata.ok()) {
      return IoError(fmt::format("model {}@{}: {}", name, version, metadata.status().message()));
    }
    versions.push_back(std::move(*metadata));
  }
  if (ec) return IoError(fmt::format("cannot list {}: {}", dir.string(), ec.message()));
  std::sort(versions.begin(), versions.end(), [](const ModelMetadata& a, const ModelMetadata& b) {
    return std::tie(a.pushed_at_ms, a.version) < std::tie(b.pushed_at_ms, b.version);
  });
  return versions;
}

Result<ModelMetadata> ModelStore::Resolve(const ModelRef& ref) {
  ASSIGN_OR_RETURN(auto versions, VersionsOf(ref.name));
  if (versions.empty()) {
    return NotFound(fmt::format("no model named '{}' (see `wisp model ls`)", ref.name));
  }
  if (ref.version.empty()) return versions.back();
  std::string version = ref.version;
  if (IsChannelName(version)) {
    ASSIGN_OR_RETURN(ModelChannels channels, ReadChannels(ref.name));
    version = version == "stable" ? channels.stable : channels.canary;
    if (version.empty()) {
      return NotFound(
          fmt::format("model '{}' has no {} channel (wisp model promote {}@V --channel {})",
                      ref.name, ref.version, ref.name, ref.version));
    }
  }
  for (auto& m : versions) {
    if (m.version == version) return std::move(m);
  }
  return NotFound(fmt::format("model '{}' has no version '{}'", ref.name, version));
}

Result<ModelChannels> ModelStore::ReadChannels(const std::string& name) {
  const fs::path path = fs::path(root_) / name / "channels.json";
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    ModelChannels empty;
    empty.name = name;
    return empty;
  }
  ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path));
  auto channels = ModelChannelsFromText(text);
  if (!channels.ok()) {
    return IoError(fmt::format("model {}: channels.json: {}", name, channels.status().message()));
  }
  return channels;
}

Status ModelStore::WriteChannels(const ModelChannels& channels) {
  const fs::path dir = fs::path(root_) / channels.name;
  RETURN_IF_ERROR(
      WriteWholeFile(dir / ".channels.json.tmp", ModelChannelsToJson(channels).dump(1)));
  std::error_code ec;
  fs::rename(dir / ".channels.json.tmp", dir / "channels.json", ec);
  if (ec)
    return IoError(fmt::format("cannot store the channels of {}: {}", channels.name, ec.message()));
  generation_.fetch_add(1, std::memory_order_acq_rel);
  return Status::Ok();
}

Result<ModelChannels> ModelStore::Promote(const PromoteRequest& request) {
  ASSIGN_OR_RETURN(ModelRef ref, ParseModelRef(request.ref));
  if (ref.version.empty() || IsChannelName(ref.version)) {
    return InvalidArgument("promote names a version: NAME@VERSION");
  }
  if (!IsChannelName(request.channel)) {
    return InvalidArgument(fmt::format("channel '{}' (use stable or canary)", request.channel));
  }
  const bool to_stable = request.channel == "stable";
  if (!to_stable && (request.percent < 1 || request.percent > 100)) {
    return InvalidArgument("a canary takes 1..100 percent of the calls");
  }
  if (!to_stable &&
      (request.window < 1 || request.max_error_rate < 0 || request.max_error_rate > 1)) {
    return InvalidArgument("a canary needs window >= 1 and 0 <= max error rate <= 1");
  }
  if (to_stable && request.reference.is_null()) {
    return InvalidArgument(
        "switching the stable channel needs a reference set (--reference FILE.json)");
  }
  // Validation runs on a fresh session, outside the store's lock (it runs the model).
  ASSIGN_OR_RETURN(LoadedModel loaded, Load(ref.name + "@" + ref.version));
  if (!request.reference.is_null()) {
    Status checked = CheckReferenceSet(*loaded.session, request.reference, request.tolerance);
    if (!checked.ok()) {
      return InvalidArgument(fmt::format("{}@{} refused for {}: {}", ref.name, ref.version,
                                         request.channel, checked.message()));
    }
  }
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(ModelChannels channels, ReadChannels(ref.name));
  if (to_stable) {
    if (channels.stable != ref.version) channels.previous_stable = channels.stable;
    channels.stable = ref.version;
    if (channels.canary == ref.version) {
      channels.canary.clear();
      channels.canary_percent = 0;
    }
    channels.last_change = fmt::format("stable -> {} (validated)", ref.version);
  } else {
    channels.canary = ref.version;
    channels.canary_percent = request.percent;
    channels.canary_max_error_rate = request.max_error_rate;
    channels.canary_window = request.window;
    channels.last_change = fmt::format("canary -> {} at {}%", ref.version, request.percent);
  }
  RETURN_IF_ERROR(WriteChannels(channels));
  return channels;
}

Result<ModelChannels> ModelStore::Rollback(std::string_view name) {
  if (!IsValidModelName(name))
    return InvalidArgument(fmt::format("'{}' is not a model name", name));
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(ModelChannels channels, ReadChannels(std::string(name)));
  if (!channels.canary.empty()) {
    channels.last_change = fmt::format("canary {} dropped by rollback", channels.canary);
    channels.canary.clear();
    channels.canary_percent = 0;
  } else if (!channels.previous_stable.empty()) {
    channels.last_change =
        fmt::format("stable {} rolled back to {}", channels.stable, channels.previous_stable);
    std::swap(channels.stable, channels.previous_stable);
  } else {
    return NotFound(
        fmt::format("model '{}' has neither a canary nor a previous stable version", name));
  }
  RETURN_IF_ERROR(WriteChannels(channels));
  return channels;
}

Result<ModelChannels> ModelStore::Channels(std::string_view name) {
  if (!IsValidModelName(name))
    return InvalidArgument(fmt::format("'{}' is not a model name", name));
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(auto versions, VersionsOf(std::string(name)));
  if (versions.empty()) return NotFound(fmt::format("no model named '{}'", name));
  return ReadChannels(std::string(name));
}

Result<ModelChannels> ModelStore::AbandonCanary(std::string_view name, std::string_view version,
                                                std::string_view reason) {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(ModelChannels channels, ReadChannels(std::string(name)));
  if (channels.canary != version) return channels;  // another shard got there first
  channels.canary.clear();
  channels.canary_percent = 0;
  channels.automatic_rollbacks += 1;
  channels.last_change = fmt::format("canary {} rolled back automatically: {}", version, reason);
  RETURN_IF_ERROR(WriteChannels(channels));
  return channels;
}

Result<ModelMetadata> ModelStore::Push(std::string_view name, std::string_view version,
                                       std::string_view bytes) {
  if (!IsValidModelName(name)) {
    return InvalidArgument(fmt::format("'{}' is not a model name", name));
  }
  if (!version.empty() && !IsValidModelName(version)) {
    return InvalidArgument(fmt::format("'{}' is not a model version", version));
  }
  if (IsChannelName(version)) {
    return InvalidArgument(fmt::format("'{}' names a channel, not a version", version));
  }
  ASSIGN_OR_RETURN(OnnxModelSummary summary, ReadOnnxModelSummary(bytes));
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(InferenceBackendPtr backend, Backend());
  // The backend's verdict: it parses the whole graph and runs it once on zeros.
  ASSIGN_OR_RETURN(ModelSessionPtr session, backend->Load(bytes));
  (void)session;

  ASSIGN_OR_RETURN(auto versions, VersionsOf(std::string(name)));
  std::string chosen(version);
  if (chosen.empty()) {
    std::uint64_t highest = 0;
    for (const auto& m : versions) {
      std::uint64_t n = 0;
      if (IsNumber(m.version, n)) highest = std::max(highest, n);
    }
    chosen = std::to_string(highest + 1);
  }
  for (const auto& m : versions) {
    if (m.version == chosen) {
      return AlreadyExists(fmt::format(
          "model {}@{} exists; versions are immutable (push another --version)", name, chosen));
    }
  }

  ModelMetadata m;
  m.name = std::string(name);
  m.version = chosen;
  m.sha256 = Sha256Hex(bytes);
  m.size_bytes = bytes.size();
  m.backend = backend_name_;
  m.pushed_at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  // Keep push order strict even within one millisecond.
  if (!versions.empty() && m.pushed_at_ms <= versions.back().pushed_at_ms) {
    m.pushed_at_ms = versions.back().pushed_at_ms + 1;
  }
  m.info = summary.info;
  m.op_types = summary.op_types;
  m.opset = summary.opset;
  m.producer = summary.producer;

  const fs::path model_dir = fs::path(root_) / m.name;
  const fs::path staging = model_dir / (".tmp-" + m.version);
  std::error_code ec;
  fs::remove_all(staging, ec);
  fs::create_directories(staging, ec);
  if (ec) return IoError(fmt::format("cannot create {}: {}", staging.string(), ec.message()));
  RETURN_IF_ERROR(WriteWholeFile(staging / "model.onnx", bytes));
  RETURN_IF_ERROR(WriteWholeFile(staging / "metadata.json", ModelMetadataToJson(m).dump(1)));
  fs::rename(staging, model_dir / m.version, ec);
  if (ec) {
    fs::remove_all(staging, ec);
    return IoError(fmt::format("cannot store model {}@{}", m.name, m.version));
  }
  return m;
}

Result<std::vector<ModelMetadata>> ModelStore::List() {
  std::lock_guard lock(mu_);
  std::vector<ModelMetadata> all;
  std::error_code ec;
  if (!fs::is_directory(root_, ec)) return all;
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(root_, ec)) {
    std::string name = entry.path().filename().string();
    if (entry.is_directory() && IsValidModelName(name)) names.push_back(std::move(name));
  }
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    ASSIGN_OR_RETURN(auto versions, VersionsOf(name));
    for (auto& m : versions) all.push_back(std::move(m));
  }
  return all;
}

Result<ModelMetadata> ModelStore::Describe(std::string_view text) {
  ASSIGN_OR_RETURN(ModelRef ref, ParseModelRef(text));
  std::lock_guard lock(mu_);
  return Resolve(ref);
}

Result<std::vector<std::string>> ModelStore::Remove(std::string_view text) {
  ASSIGN_OR_RETURN(ModelRef ref, ParseModelRef(text));
  std::lock_guard lock(mu_);
  std::vector<std::string> removed;
  std::error_code ec;
  if (ref.version.empty()) {
    ASSIGN_OR_RETURN(auto versions, VersionsOf(ref.name));
    if (versions.empty()) return NotFound(fmt::format("no model named '{}'", ref.name));
    for (const auto& m : versions) removed.push_back(m.name + "@" + m.version);
    fs::remove_all(fs::path(root_) / ref.name, ec);
  } else {
    ASSIGN_OR_RETURN(ModelMetadata m, Resolve(ref));
    ASSIGN_OR_RETURN(ModelChannels channels, ReadChannels(m.name));
    if (m.version == channels.stable || m.version == channels.canary) {
      return InvalidArgument(fmt::format(
          "{}@{} is the {} channel's version; promote another version or roll back first", m.name,
          m.version, m.version == channels.stable ? "stable" : "canary"));
    }
    removed.push_back(m.name + "@" + m.version);
    fs::remove_all(fs::path(root_) / m.name / m.version, ec);
    // The last version takes the model's directory (and its channels) with it.
    ASSIGN_OR_RETURN(auto remaining, VersionsOf(m.name));
    if (remaining.empty()) fs::remove(fs::path(root_) / m.name / "channels.json", ec);
    fs::remove(fs::path(root_) / m.name, ec);
    ec.clear();
  }
  if (ec) return IoError(fmt::format("cannot remove {}: {}", text, ec.message()));
  return removed;
}

Result<LoadedModel> ModelStore::Load(std::string_view text) {
  ASSIGN_OR_RETURN(ModelRef ref, ParseModelRef(text));
  LoadedModel loaded;
  std::string bytes;
  InferenceBackendPtr backend;
  {
    std::lock_guard lock(mu_);
    ASSIGN_OR_RETURN(loaded.metadata, Resolve(ref));
    ASSIGN_OR_RETURN(bytes, ReadWholeFile(fs::path(root_) / loaded.metadata.name /
                                          loaded.metadata.version / "model.onnx"));
    ASSIGN_OR_RETURN(backend, Backend());
  }
  const auto start = std::chrono::steady_clock::now();
  const ModelMetadata& m = loaded.metadata;
  if (bytes.size() != m.size_bytes || Sha256Hex(bytes) != m.sha256) {
    return IoError(fmt::format(
        "model {}@{} is corrupt: its file no longer matches the sha256 recorded at push "
        "(push it again)",
        m.name, m.version));
  }
  ASSIGN_OR_RETURN(loaded.session, backend->Load(bytes));
  loaded.load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return loaded;
}

}  // namespace wisp
