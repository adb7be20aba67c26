// Fuzzes DecodeBundle, which reads the CBOR body of every deploy request. Beyond "no crash",
// it checks that errors have the documented codes, that every accepted path is safe to write,
// and that an accepted bundle survives an encode/decode round trip unchanged.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "wisp/bundle.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  wisp::BundleLimits limits;
  limits.max_files = 64;  // small limits so the fuzzer also reaches the limit checks
  limits.max_total_bytes = 64 << 10;
  wisp::Result<wisp::Bundle> bundle = wisp::DecodeBundle(bytes, limits);
  if (!bundle.ok()) {
    Check(bundle.status().code() == wisp::StatusCode::kInvalidArgument ||
          bundle.status().code() == wisp::StatusCode::kResourceExhausted);
    return 0;
  }
  Check(bundle->files.count("wisp.yaml") == 1);
  Check(bundle->files.size() <= limits.max_files);
  for (const auto& [path, contents] : bundle->files) Check(wisp::IsValidBundlePath(path));
  wisp::Result<wisp::Bundle> again = wisp::DecodeBundle(wisp::EncodeBundle(*bundle), limits);
  Check(again.ok() && again->files == bundle->files);
  return 0;
}
