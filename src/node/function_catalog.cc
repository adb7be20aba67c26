#include "node/function_catalog.h"

#include "gateway/filter_chain.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

namespace wisp {
namespace fs = std::filesystem;

namespace {

constexpr const char* kDeployInfoFile = ".wisp-deploy.json";

Result<std::string> ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return IoError(fmt::format("cannot read {}", path.string()));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Writes and fsyncs a small file, so what a deploy acknowledged survives a power cut.
Status WriteFileSynced(const fs::path& path, std::string_view contents) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0)
    return IoError(fmt::format("cannot write {}: {}", path.string(), std::strerror(errno)));
  const bool ok =
      ::write(fd, contents.data(), contents.size()) == static_cast<ssize_t>(contents.size()) &&
      ::fsync(fd) == 0;
  ::close(fd);
  return ok ? Status::Ok() : IoError(fmt::format("cannot write {}", path.string()));
}

// Makes renames inside `dir` durable.
Status SyncDirectory(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return IoError(fmt::format("cannot open {}: {}", dir.string(), std::strerror(errno)));
  const int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? Status::Ok() : IoError(fmt::format("cannot sync {}", dir.string()));
}

std::string RandomSuffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{:016x}", rng());
}

}  // namespace

void FunctionLog::Append(LogLevel level, std::string_view message) {
  if (message.size() > kMaxMessageBytes) message = message.substr(0, kMaxMessageBytes);
  Entry entry{std::chrono::system_clock::now(), level, std::string(message)};
  std::lock_guard lock(mu_);
  if (entries_.size() == kCapacity) entries_.pop_front();
  entries_.push_back(std::move(entry));
}

std::vector<FunctionLog::Entry> FunctionLog::Tail(std::size_t n) const {
  std::lock_guard lock(mu_);
  n = std::min(n, entries_.size());
  return {entries_.end() - static_cast<std::ptrdiff_t>(n), entries_.end()};
}

FunctionCatalog::FunctionCatalog(std::string data_dir, MetricsRegistry* metrics)
    : functions_dir_((fs::path(data_dir) / "functions").string()),
      metrics_(metrics),
      functions_(std::make_shared<FunctionMap>()) {}

std::shared_ptr<const FunctionMap> FunctionCatalog::Snapshot() const {
  std::lock_guard lock(mu_);
  return functions_;
}

DeployedFunctionPtr FunctionCatalog::Find(std::string_view name) const {
  auto snapshot = Snapshot();
  auto it = snapshot->find(name);
  return it == snapshot->end() ? nullptr : it->second;
}

void FunctionCatalog::Publish(std::shared_ptr<const FunctionMap> next) {
  std::lock_guard lock(mu_);
  functions_ = std::move(next);
  generation_.fetch_add(1, std::memory_order_acq_rel);
}

Result<DeployedFunctionPtr> FunctionCatalog::Prepare(
    const FunctionSpec& spec, const std::string& dir,
    std::chrono::system_clock::time_point deployed_at, std::vector<std::string> files) {
  const RuntimeFactory* factory = RuntimeRegistry::Get().Find(spec.runtime);
  if (!factory) {
    return InvalidArgument(fmt::format("function '{}': unknown runtime '{}' (this node has: {})",
                                       spec.name, spec.runtime,
                                       fmt::join(RuntimeRegistry::Get().Names(), ", ")));
  }
  auto fn = std::make_shared<DeployedFunction>();
  fn->spec = std::make_shared<const FunctionSpec>(spec);
  fn->dir = dir;
  fn->runtime = (*factory)();
  fn->deployed_at = deployed_at;
  fn->files = std::move(files);
  return DeployedFunctionPtr(std::move(fn));
}

void FunctionCatalog::LoadFromDisk() {
  std::lock_guard change_lock(change_mu_);
  std::error_code ec;
  fs::create_directories(functions_dir_, ec);
  auto next = std::make_shared<FunctionMap>();
  for (const auto& entry : fs::directory_iterator(functions_dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.starts_with(".")) {
      if (name.starts_with(".staging-") || name.starts_with(".trash-")) {
        fs::remove_all(entry.path(), ec);  // left over from a crash during deploy
      }
      continue;
    }
    auto manifest = ReadFile(entry.path() / "wisp.yaml");
    Result<std::vector<FunctionSpec>> specs =
        manifest.ok() ? ParseManifest(*manifest, name + "/wisp.yaml")
                      : Result<std::vector<FunctionSpec>>(manifest.status());
    if (!specs.ok()) {
      spdlog::error("not loading function '{}': {}", name, specs.status().ToString());
      continue;
    }
    auto spec = std::find_if(specs->begin(), specs->end(),
                             [&](const FunctionSpec& s) { return s.name == name; });
    if (spec == specs->end()) {
      spdlog::error("not loading function '{}': its manifest no longer declares it", name);
      continue;
    }
    auto deployed_at = std::chrono::system_clock::now();
    if (auto info = ReadFile(entry.path() / kDeployInfoFile); info.ok()) {
      auto json = nlohmann::json::parse(*info, nullptr, false);
      if (json.is_object() && json["deployed_at_ms"].is_number_integer()) {
        deployed_at = std::chrono::system_clock::time_point(
            std::chrono::milliseconds(json["deployed_at_ms"].get<std::int64_t>()));
      }
    }
    std::vector<std::string> files;
    if (auto bundle = ReadBundleFromDirectory(entry.path().string()); bundle.ok()) {
      for (const auto& [path, bytes] : bundle->files) files.push_back(path);
    }
    auto fn = Prepare(*spec, entry.path().string(), deployed_at, std::move(files));
    if (!fn.ok()) {
      spdlog::error("not loading function '{}': {}", name, fn.status().ToString());
      continue;
    }
    next->emplace(name, *fn);
  }
  for (auto& [name, fn] : *next) {
    auto mutable_fn = std::const_pointer_cast<DeployedFunction>(fn);
    mutable_fn->metrics = metrics_->ForFunction(name, fn->spec->runtime);
    mutable_fn->filter_metrics =
        metrics_->ForFilters(name, FilterStagesOf(*fn->spec), fn->spec->mqtt_triggers.size());
    mutable_fn->log = logs_.try_emplace(name, std::make_shared<FunctionLog>()).first->second;
    spdlog::info("loaded function '{}' (runtime {}, version {})", name, fn->spec->runtime,
                 fn->spec->version);
  }
  Publish(std::move(next));
}

Result<std::vector<DeployedFunctionPtr>> FunctionCatalog::Deploy(const Bundle& bundle) {
  auto manifest = bundle.files.find("wisp.yaml");
  if (manifest == bundle.files.end()) {
    return InvalidArgument("the bundle has no wisp.yaml at its top level");
  }
  ASSIGN_OR_RETURN(std::vector<FunctionSpec> specs, ParseManifest(manifest->second, "wisp.yaml"));
  std::lock_guard change_lock(change_mu_);

  std::vector<std::string> files;
  for (const auto& [path, bytes] : bundle.files) files.push_back(path);

  // Stage the files once and prove every function loads before anything is published, so a
  // bad deploy leaves the running version untouched.
  std::error_code ignored;
  fs::create_directories(functions_dir_, ignored);
  const fs::path functions_dir(functions_dir_);
  const fs::path staging = functions_dir / (".staging-" + RandomSuffix());
  auto remove = [&](const fs::path& path) { fs::remove_all(path, ignored); };
  if (Status written = WriteBundleToDirectory(bundle, staging.string()); !written.ok()) {
    remove(staging);
    return written;
  }

  const auto now = std::chrono::system_clock::now();
  std::vector<DeployedFunctionPtr> prepared;
  for (const FunctionSpec& spec : specs) {
    Status failed;
    // A function without code (runtime: detector) has no handler file to look for.
    if (!spec.handler_file.empty() && !bundle.files.contains(spec.handler_file)) {
      failed = InvalidArgument(fmt::format("function '{}': handler file '{}' is not in the bundle",
                                           spec.name, spec.handler_file));
    } else if (auto fn = Prepare(spec, (functions_dir / spec.name).string(), now, files);
               !fn.ok()) {
      failed = fn.status();
    } else if (auto probe = (*fn)->runtime->CreateInstance((*fn)->spec, staging.string());
               !probe.ok()) {
      failed = Status(
          probe.status().code() == StatusCode::kInternal ? StatusCode::kInternal
                                                         : StatusCode::kInvalidArgument,
          fmt::format("function '{}' does not load: {}", spec.name, probe.status().message()));
    } else {
      prepared.push_back(*fn);
    }
    if (!failed.ok()) {
      remove(staging);
      return failed;
    }
  }

  // Each function gets its own fsynced copy of the bundle beside its final place (so deleting
  // or redeploying one never touches another from the same manifest), then all are swapped in
  // by rename; if any swap fails, every one already made is undone.
  const std::string info =
      nlohmann::json{
          {"deployed_at_ms",
           std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count()}}
          .dump();
  struct Swap {
    fs::path copy, target, trash;
    bool moved_old = false, moved_new = false;
  };
  std::vector<Swap> swaps;
  for (const auto& fn : prepared) {
    Swap& swap = swaps.emplace_back();
    swap.copy = functions_dir / (".staging-" + RandomSuffix());
    swap.target = functions_dir / fn->spec->name;
    swap.trash = functions_dir / (".trash-" + RandomSuffix());
    Status written = WriteBundleToDirectory(bundle, swap.copy.string());
    if (written.ok()) written = WriteFileSynced(swap.copy / kDeployInfoFile, info);
    if (!written.ok()) {
      for (const Swap& s : swaps) remove(s.copy);
      remove(staging);
      return written.WithContext(fmt::format("cannot store function '{}'", fn->spec->name));
    }
  }
  remove(staging);
  for (Swap& swap : swaps) {
    std::error_code ec;
    if (fs::exists(swap.target, ec)) {
      fs::rename(swap.target, swap.trash, ec);
      swap.moved_old = !ec;
    }
    if (!ec) {
      fs::rename(swap.copy, swap.target, ec);
      swap.moved_new = !ec;
    }
    if (ec) {
      for (Swap& undo : swaps) {
        if (undo.moved_new) remove(undo.target);
        if (undo.moved_old) fs::rename(undo.trash, undo.target, ignored);
        remove(undo.copy);
      }
      return IoError(
          fmt::format("cannot store function in {}: {}", swap.target.string(), ec.message()));
    }
  }
  RETURN_IF_ERROR(SyncDirectory(functions_dir));
  for (const Swap& swap : swaps) remove(swap.trash);

  auto next = std::make_shared<FunctionMap>(*functions_);
  for (const auto& prepared_fn : prepared) {
    const std::string& name = prepared_fn->spec->name;
    auto fn = std::const_pointer_cast<DeployedFunction>(prepared_fn);
    fn->metrics = metrics_->ForFunction(name, fn->spec->runtime);
    fn->filter_metrics =
        metrics_->ForFilters(name, FilterStagesOf(*fn->spec), fn->spec->mqtt_triggers.size());
    fn->log = logs_.try_emplace(name, std::make_shared<FunctionLog>()).first->second;
    fn->log->Append(LogLevel::kInfo, fmt::format("deployed version {}", fn->spec->version));
    (*next)[name] = prepared_fn;
  }
  Publish(std::move(next));
  return prepared;
}

Status FunctionCatalog::Remove(std::string_view name) {
  std::lock_guard change_lock(change_mu_);
  auto it = functions_->find(name);
  if (it == functions_->end()) return NotFound(fmt::format("no function named '{}'", name));
  // Gone from disk first (one rename), so that a restart never brings back a deleted function.
  std::error_code ec;
  const fs::path trash = fs::path(functions_dir_) / (".trash-" + RandomSuffix());
  fs::rename(fs::path(functions_dir_) / std::string(name), trash, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return IoError(
        fmt::format("cannot remove function '{}' from {}: {}", name, functions_dir_, ec.message()));
  }
  RETURN_IF_ERROR(SyncDirectory(functions_dir_));
  fs::remove_all(trash, ec);
  auto next = std::make_shared<FunctionMap>(*functions_);
  next->erase(std::string(name));
  metrics_->RemoveFunction(std::string(name));
  logs_.erase(std::string(name));
  Publish(std::move(next));
  return Status::Ok();
}

}  // namespace wisp
