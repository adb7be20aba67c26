// Bundle: a function directory in transit, as `wisp deploy` sends it to the node.
//
// Wire form: a CBOR map {"files": {"<relative path>": <byte string>, ...}} sent with
// Content-Type application/cbor. Paths use '/', are relative, have no "." or ".." segments,
// and hold only [A-Za-z0-9._-] per segment. One of them is "wisp.yaml".
//
// Thread safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "wisp/status.h"

namespace wisp {

struct BundleLimits {
  std::size_t max_files = 256;
  std::uint64_t max_total_bytes = 16ull << 20;
};

struct Bundle {
  std::map<std::string, std::string> files;  // relative path -> contents
};

// Decodes untrusted bytes (fuzzed). InvalidArgument says which path or field is wrong;
// ResourceExhausted when a limit is passed.
Result<Bundle> DecodeBundle(std::string_view cbor_bytes, const BundleLimits& limits = {});
std::string EncodeBundle(const Bundle& bundle);

// Reads a local function directory (what `wisp deploy DIR` sends): every regular file below it,
// skipping hidden entries. Fails if it holds no wisp.yaml or passes the limits.
Result<Bundle> ReadBundleFromDirectory(const std::string& dir, const BundleLimits& limits = {});

// Writes the files under `dir` (created), for the node's function store.
Status WriteBundleToDirectory(const Bundle& bundle, const std::string& dir);

bool IsValidBundlePath(std::string_view path);

}  // namespace wisp
