// Rewrites of ONNX models into equivalent forms a backend can load.
//
// OpenCV 4.6's importer mishandles Gemm with untransposed constant weights and a bias
// (transB=0, the form Keras-style and hand-built exporters write): it refuses the model. The
// same layer with the weight matrix stored transposed and transB=1 (PyTorch's form) loads and
// computes Y = A * B + C exactly as before, so the backend loads that instead.
//
// Failures: InvalidArgument for bytes that are not a readable ONNX model (as onnx_info.h).
// A model with nothing to rewrite gives nullopt; the caller then uses its own bytes.
// Thread-safe (a pure function); a parser of untrusted bytes (fuzz/onnx_info_fuzz.cc).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "wisp/status.h"

namespace wisp {

// Every Gemm whose B input is a 2-D float32 initializer used by that node alone and whose
// transB is 0 or absent gets B transposed and transB=1. Initializers with external data and
// weights shared with other nodes are left alone.
Result<std::optional<std::string>> TransposeGemmWeights(std::string_view model_bytes);

}  // namespace wisp
