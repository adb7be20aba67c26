// Fuzzes ParseManifest, which reads the wisp.yaml of every deploy request. Beyond "no crash",
// it checks the parser's promises: errors are InvalidArgument naming the source, and every
// accepted spec is within the documented limits (docs/manifest.md).
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "wisp/bundle.h"
#include "wisp/function_spec.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  wisp::Result<std::vector<wisp::FunctionSpec>> specs = wisp::ParseManifest(text, "fuzz.yaml");
  if (!specs.ok()) {
    Check(specs.status().code() == wisp::StatusCode::kInvalidArgument);
    Check(specs.status().message().rfind("fuzz.yaml: ", 0) == 0);
    return 0;
  }
  Check(!specs->empty());
  for (const wisp::FunctionSpec& f : *specs) {
    Check(wisp::IsValidFunctionName(f.name));
    Check(!f.runtime.empty());
    Check(wisp::IsValidBundlePath(f.handler_file));
    Check(!f.handler_entry.empty());
    Check(!f.version.empty());
    Check(f.limits.memory_bytes >= (1u << 20) && f.limits.memory_bytes <= (4ull << 30));
    Check(f.limits.timeout.count() >= 1 && f.limits.timeout.count() <= 15 * 60 * 1000);
    Check(f.concurrency_max >= 1 && f.concurrency_max <= 1024);
    Check(f.scale_min >= 0 && f.scale_min <= f.scale_max && f.scale_max <= 1000);
  }
  return 0;
}
