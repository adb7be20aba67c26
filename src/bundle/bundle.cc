// Bundle encoding, decoding and the directory walk of `wisp deploy DIR`.
//
// DecodeBundle reads untrusted bytes from the network and is fuzzed: nothing here may throw
// out, and every path is checked before anything could use it to name a file on disk.

#include "wisp/bundle.h"

#include "common/cbor.h"
#include "common/quote.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace wisp {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::size_t kMaxPathLength = 255;
constexpr std::size_t kMaxDepth = 16;
constexpr std::string_view kManifestName = "wisp.yaml";

std::string QuotePath(std::string_view s) { return QuoteUntrusted(s, 80); }

Status BadPath(std::string_view path) {
  return InvalidArgument(
      fmt::format("bundle path {} is not allowed: use a relative path with '/' between names of "
                  "A-Z a-z 0-9 . _ - (not starting with '.'), at most {} levels and {} characters",
                  QuotePath(path), kMaxDepth, kMaxPathLength));
}

// Checks the whole set of files: wisp.yaml present, and no path that is both a file and the
// directory of another file ("a" and "a/b"), which could not be written to disk.
Status CheckFileSet(const Bundle& bundle) {
  if (bundle.files.find(std::string(kManifestName)) == bundle.files.end()) {
    return InvalidArgument("bundle has no wisp.yaml at its top level");
  }
  for (const auto& [path, contents] : bundle.files) {
    for (std::size_t slash = path.find('/'); slash != std::string::npos;
         slash = path.find('/', slash + 1)) {
      std::string dir = path.substr(0, slash);
      if (bundle.files.count(dir) != 0) {
        return InvalidArgument(fmt::format("bundle path {} is both a file and the directory of {}",
                                           QuotePath(dir), QuotePath(path)));
      }
    }
  }
  return Status::Ok();
}

Status TooManyFiles(std::size_t max_files) {
  return ResourceExhausted(fmt::format("bundle has more than {} files", max_files));
}
Status TooManyBytes(std::uint64_t max_bytes) {
  return ResourceExhausted(fmt::format("bundle files add up to more than {} bytes", max_bytes));
}

Result<Bundle> DecodeParsed(const json& root, const BundleLimits& limits) {
  if (!root.is_object()) return InvalidArgument("bundle is not a CBOR map");
  for (const auto& [key, value] : root.items()) {
    // Refused rather than ignored: a newer CLI's field must not be dropped without a word.
    if (key != "files") {
      return InvalidArgument(fmt::format("bundle has an unknown field {}", QuotePath(key)));
    }
  }
  auto files = root.find("files");
  if (files == root.end()) return InvalidArgument("bundle has no \"files\" map");
  if (!files->is_object()) return InvalidArgument("bundle field \"files\" is not a map");
  if (files->size() > limits.max_files) return TooManyFiles(limits.max_files);

  Bundle bundle;
  std::uint64_t total = 0;
  for (const auto& [path, value] : files->items()) {
    if (!IsValidBundlePath(path)) return BadPath(path);
    std::string contents;
    if (value.is_binary()) {
      const auto& bytes = value.get_binary();
      contents.assign(bytes.begin(), bytes.end());
    } else if (value.is_string()) {
      contents = value.get<std::string>();
    } else {
      return InvalidArgument(fmt::format("bundle file {} is not a byte string", QuotePath(path)));
    }
    total += contents.size();
    if (total > limits.max_total_bytes) return TooManyBytes(limits.max_total_bytes);
    bundle.files.emplace(path, std::move(contents));
  }
  RETURN_IF_ERROR(CheckFileSet(bundle));
  return bundle;
}

Status WriteFile(const fs::path& path, std::string_view contents) {
  // O_NOFOLLOW: a symlink planted in the function directory must not redirect the write.
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) {
    return IoError(fmt::format("cannot create {}: {}", path.string(), std::strerror(errno)));
  }
  auto fail = [&](std::string_view what) {
    Status s = IoError(fmt::format("cannot {} {}: {}", what, path.string(), std::strerror(errno)));
    ::close(fd);
    return s;
  };
  // The umask would otherwise decide; functions' files are read by the node only, but 0644
  // keeps them readable to an operator inspecting the store.
  if (::fchmod(fd, 0644) != 0) return fail("set the mode of");
  std::size_t done = 0;
  while (done < contents.size()) {
    ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("write");
    }
    done += static_cast<std::size_t>(n);
  }
  // Flushed so that a caller that renames the directory into place afterwards never exposes
  // a half-written function after a power cut.
  if (::fsync(fd) != 0) return fail("flush");
  if (::close(fd) != 0) {
    return IoError(fmt::format("cannot close {}: {}", path.string(), std::strerror(errno)));
  }
  return Status::Ok();
}

Result<std::string> ReadFile(const fs::path& path, std::uint64_t size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return IoError(fmt::format("cannot open {}", path.string()));
  std::string contents(size, '\0');
  in.read(contents.data(), static_cast<std::streamsize>(size));
  if (static_cast<std::uint64_t>(in.gcount()) != size) {
    return IoError(fmt::format("cannot read {} (did it change while deploying?)", path.string()));
  }
  return contents;
}

}  // namespace

bool IsValidBundlePath(std::string_view path) {
  if (path.empty() || path.size() > kMaxPathLength) return false;
  std::size_t depth = 0;
  std::size_t start = 0;
  while (true) {
    std::size_t end = path.find('/', start);
    std::string_view segment =
        path.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    // Covers "", ".", ".." and hidden names in one rule.
    if (segment.empty() || segment.front() == '.') return false;
    for (char c : segment) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '_' || c == '-';
      if (!ok) return false;
    }
    if (++depth > kMaxDepth) return false;
    if (end == std::string_view::npos) return true;
    start = end + 1;
  }
}

Result<Bundle> DecodeBundle(std::string_view cbor_bytes, const BundleLimits& limits) {
  // Cheap early refusal before parsing: even at maximum, file contents plus per-file overhead
  // (path, two CBOR headers) cannot need more than this.
  std::uint64_t max_encoded = limits.max_total_bytes +
                              static_cast<std::uint64_t>(limits.max_files) * (kMaxPathLength + 32) +
                              64;
  if (cbor_bytes.size() > max_encoded) return TooManyBytes(limits.max_total_bytes);
  // Two levels suffice (root map, files map): a deeper bundle is refused before it is built.
  auto root = DecodeCbor(cbor_bytes, "bundle", /*max_depth=*/4);
  if (!root.ok()) return root.status();
  // Duplicate map keys keep the last value (nlohmann's DOM behaviour), which is harmless since
  // every key is validated.
  return DecodeParsed(*root, limits);
}

std::string EncodeBundle(const Bundle& bundle) {
  json files = json::object();
  for (const auto& [path, contents] : bundle.files) {
    files[path] = json::binary(json::binary_t::container_type(contents.begin(), contents.end()));
  }
  json root = json::object();
  root["files"] = std::move(files);
  std::string out;
  json::to_cbor(root, out);
  return out;
}

Result<Bundle> ReadBundleFromDirectory(const std::string& dir, const BundleLimits& limits) {
  std::error_code ec;
  fs::path root(dir);
  if (!fs::is_directory(root, ec)) {
    return NotFound(fmt::format("{} is not a directory", dir));
  }
  Bundle bundle;
  std::uint64_t total = 0;
  fs::recursive_directory_iterator it(root, fs::directory_options::none, ec);
  if (ec) return IoError(fmt::format("cannot list {}: {}", dir, ec.message()));
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) return IoError(fmt::format("cannot list {}: {}", dir, ec.message()));
    const fs::directory_entry& entry = *it;
    std::string name = entry.path().filename().string();
    // Hidden entries (.git, .env, editor swap files) are never part of a function.
    if (!name.empty() && name.front() == '.') {
      if (entry.is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    // Symlinks are skipped, not followed: one could point outside the directory, and the node
    // writes plain files anyway.
    if (entry.is_symlink(ec)) continue;
    if (!entry.is_regular_file(ec)) continue;  // directories recurse; sockets etc. are skipped

    std::string rel = entry.path().lexically_relative(root).generic_string();
    if (!IsValidBundlePath(rel)) return BadPath(rel);
    if (bundle.files.size() >= limits.max_files) return TooManyFiles(limits.max_files);
    std::uint64_t size = entry.file_size(ec);
    if (ec) return IoError(fmt::format("cannot stat {}: {}", entry.path().string(), ec.message()));
    if (size > limits.max_total_bytes - total) return TooManyBytes(limits.max_total_bytes);
    ASSIGN_OR_RETURN(std::string contents, ReadFile(entry.path(), size));
    total += contents.size();
    bundle.files.emplace(std::move(rel), std::move(contents));
  }
  if (ec) return IoError(fmt::format("cannot list {}: {}", dir, ec.message()));
  if (bundle.files.find(std::string(kManifestName)) == bundle.files.end()) {
    return InvalidArgument(fmt::format("{} has no wisp.yaml", dir));
  }
  return bundle;
}

Status WriteBundleToDirectory(const Bundle& bundle, const std::string& dir) {
  // Checked again here, not trusted from the decoder: this is the call that touches the disk.
  for (const auto& [path, contents] : bundle.files) {
    if (!IsValidBundlePath(path)) return BadPath(path);
  }
  std::error_code ec;
  fs::path root(dir);
  fs::create_directories(root, ec);
  if (ec) return IoError(fmt::format("cannot create {}: {}", dir, ec.message()));
  for (const auto& [path, contents] : bundle.files) {
    fs::path target = root / path;
    fs::create_directories(target.parent_path(), ec);
    if (ec) {
      return IoError(
          fmt::format("cannot create {}: {}", target.parent_path().string(), ec.message()));
    }
    RETURN_IF_ERROR(WriteFile(target, contents));
  }
  return Status::Ok();
}

}  // namespace wisp
