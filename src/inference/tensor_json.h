// Tensors as JSON: nested arrays of numbers in, nested arrays out.
//
// `wisp model run NAME --input JSON`, the control API and the model runtime's tests take inputs
// as JSON: either an object {"input name": nested array, ...} or, for a model with one input,
// just the nested array. [[1, 2], [3, 4]] is a float32 tensor of shape [2, 2]; a bare number is
// a scalar. When the model declares a fixed shape with the same element count, the tensor takes
// the declared shape (so [1, 2, 3, 4] feeds an input of shape [1, 4]).
//
// These parse untrusted bytes (fuzz/tensor_json_fuzz.cc). Failures: InvalidArgument saying
// where ("x[1]: rows have different lengths (3 and 2)", "x[0][2]: not a number",
// "input y is not in the model (inputs: x)", "x: 6 elements, the model expects shape [1, 4]").
// Limits: 8 dimensions, kMaxTensorElements elements per tensor. Thread-safe (pure functions).
#pragma once

#include <nlohmann/json.hpp>

#include "wisp/inference.h"

namespace wisp {

inline constexpr std::size_t kMaxTensorElements = std::size_t{1} << 24;
inline constexpr std::size_t kMaxTensorRank = 8;

// A tensor from nested arrays (or one number). `label` names it in error messages.
Result<Tensor> TensorFromJson(const nlohmann::json& value, std::string_view label);

// Nested arrays in the tensor's shape; non-finite elements become null.
nlohmann::json TensorToJson(const Tensor& tensor);

// The inputs a caller gave for `model` (see the header comment), fitted to its declared shapes.
Result<NamedTensors> InputsFromJson(const nlohmann::json& value, const ModelInfo& model);

// {"name": nested arrays, ...}
nlohmann::json TensorsToJson(const NamedTensors& tensors);

// "[1, 4]" (-1 shown as "?").
std::string ShapeToString(const std::vector<std::int64_t>& shape);

// The declared info as JSON: {"inputs": [{"name", "type", "shape"}], "outputs": [...]}.
nlohmann::json ModelInfoToJson(const ModelInfo& info);
// The inverse, for stored metadata. InvalidArgument when a field is missing or of the wrong type.
Result<ModelInfo> ModelInfoFromJson(const nlohmann::json& value);

}  // namespace wisp
