// wisp's ONNX reader (src/inference/onnx_info.h), which sees pushed model bytes before the
// backend does, and the rewrite the OpenCV backend applies to them (onnx_rewrite.h): never
// crash on any bytes, and a rewrite keeps the model readable with the same interface.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "inference/onnx_info.h"
#include "inference/onnx_rewrite.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto summary = wisp::ReadOnnxModelSummary(bytes);
  if (summary.ok() && (summary->info.inputs.empty() || summary->info.outputs.empty())) {
    std::abort();  // the reader promises at least one of each
  }
  auto rewritten = wisp::TransposeGemmWeights(bytes);
  if (summary.ok() && rewritten.ok() && *rewritten) {
    auto again = wisp::ReadOnnxModelSummary(**rewritten);
    if (!again.ok() || again->info.inputs.size() != summary->info.inputs.size() ||
        again->info.outputs.size() != summary->info.outputs.size()) {
      std::abort();  // the rewrite changed what the model declares
    }
  }
  return 0;
}
