// Reads a model's declared inputs and outputs from ONNX bytes, without any ML library.
//
// OpenCV DNN does not expose a network's input names or any declared shapes, and every backend
// needs the same answer, so wisp reads them itself from the ModelProto: graph.input minus the
// graph's initializers (older exporters list weights as inputs too), graph.output, each with
// its element type and shape (a symbolic or missing dimension is -1), plus the operator types
// the graph uses (for error messages).
//
// The reader walks the protobuf wire format directly and touches only the fields it needs; it
// is a parser of untrusted bytes (fuzz/onnx_info_fuzz.cc). Failures: InvalidArgument naming
// what is wrong ("not an ONNX model: truncated field", "graph has no outputs", "input x has
// element type 7 (int64); only float32 is supported"). Thread-safe (a pure function).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "wisp/inference.h"

namespace wisp {

struct OnnxModelSummary {
  ModelInfo info;
  std::vector<std::string> op_types;  // distinct, in first-use order
  std::int64_t ir_version = 0;
  std::int64_t opset = 0;  // of the default ("" or "ai.onnx") domain; 0 when not given
  std::string producer;
};

Result<OnnxModelSummary> ReadOnnxModelSummary(std::string_view model_bytes);

}  // namespace wisp
