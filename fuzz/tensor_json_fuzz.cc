// JSON -> tensors, as `wisp model run` and model functions take inputs (src/inference/
// tensor_json.h): never crashes, and an accepted tensor's data matches its shape.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <nlohmann/json.hpp>

#include "inference/tensor_json.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return 0;
  wisp::ModelInfo model;
  model.inputs.push_back({"x", wisp::TensorType::kFloat32, {1, 4}});
  model.inputs.push_back({"h", wisp::TensorType::kFloat32, {-1, 2}});
  auto inputs = wisp::InputsFromJson(doc, model);
  if (inputs.ok()) {
    for (const auto& [name, tensor] : *inputs) {
      if (tensor.data.size() != tensor.ElementCount()) std::abort();
    }
    (void)wisp::TensorsToJson(*inputs).dump();
  }
  auto tensor = wisp::TensorFromJson(doc, "t");
  if (tensor.ok() && tensor->data.size() != tensor->ElementCount()) std::abort();
  (void)wisp::ModelInfoFromJson(doc);
  return 0;
}
