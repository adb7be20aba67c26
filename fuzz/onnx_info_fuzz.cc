// wisp's ONNX reader (src/inference/onnx_info.h), which sees pushed model bytes before the
// backend does: never crashes on any bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "inference/onnx_info.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto summary =
      wisp::ReadOnnxModelSummary(std::string_view(reinterpret_cast<const char*>(data), size));
  if (summary.ok() && (summary->info.inputs.empty() || summary->info.outputs.empty())) {
    std::abort();  // the reader promises at least one of each
  }
  return 0;
}
