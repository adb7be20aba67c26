#include "inference/tensor_json.h"

#include <cmath>

#include <fmt/format.h>

namespace wisp {
namespace {

using nlohmann::json;

// Finds the shape by following the first element at each level, then checks every element
// against it while copying, so ragged arrays are caught wherever they are.
Status Flatten(const json& value, const std::vector<std::int64_t>& shape, std::size_t depth,
               std::string& path, std::vector<float>& out) {
  if (depth == shape.size()) {
    if (!value.is_number()) return InvalidArgument(fmt::format("{}: not a number", path));
    double number = value.get<double>();
    if (!std::isfinite(number)) return InvalidArgument(fmt::format("{}: not finite", path));
    out.push_back(static_cast<float>(number));
    return Status::Ok();
  }
  if (!value.is_array()) {
    return InvalidArgument(fmt::format("{}: expected an array of {} elements", path, shape[depth]));
  }
  if (static_cast<std::int64_t>(value.size()) != shape[depth]) {
    return InvalidArgument(fmt::format("{}: rows have different lengths ({} and {})", path,
                                       shape[depth], value.size()));
  }
  std::size_t path_length = path.size();
  for (std::size_t i = 0; i < value.size(); ++i) {
    path += fmt::format("[{}]", i);
    RETURN_IF_ERROR(Flatten(value[i], shape, depth + 1, path, out));
    path.resize(path_length);
  }
  return Status::Ok();
}

json Nest(const Tensor& tensor, std::size_t depth, std::size_t& offset) {
  if (depth == tensor.shape.size()) {
    float v = offset < tensor.data.size() ? tensor.data[offset] : 0.0f;
    ++offset;
    return std::isfinite(v) ? json(v) : json(nullptr);
  }
  json array = json::array();
  for (std::int64_t i = 0; i < tensor.shape[depth]; ++i) {
    array.push_back(Nest(tensor, depth + 1, offset));
  }
  return array;
}

bool FullyKnown(const std::vector<std::int64_t>& shape) {
  for (std::int64_t d : shape) {
    if (d < 0) return false;
  }
  return true;
}

Result<Tensor> FitToDeclared(Tensor tensor, const TensorInfo& declared) {
  if (declared.shape.empty() && tensor.shape.empty()) return tensor;
  if (FullyKnown(declared.shape) && !declared.shape.empty()) {
    Tensor wanted;
    wanted.shape = declared.shape;
    if (wanted.ElementCount() != tensor.ElementCount()) {
      return InvalidArgument(fmt::format("{}: {} elements, the model expects shape {}",
                                         declared.name, tensor.ElementCount(),
                                         ShapeToString(declared.shape)));
    }
    tensor.shape = declared.shape;
    return tensor;
  }
  if (!declared.shape.empty()) {
    // Open dimensions (a batch size): the rank and the fixed dimensions must match.
    if (tensor.shape.size() != declared.shape.size()) {
      return InvalidArgument(fmt::format("{}: shape {}, the model expects shape {}", declared.name,
                                         ShapeToString(tensor.shape),
                                         ShapeToString(declared.shape)));
    }
    for (std::size_t i = 0; i < tensor.shape.size(); ++i) {
      if (declared.shape[i] >= 0 && declared.shape[i] != tensor.shape[i]) {
        return InvalidArgument(fmt::format("{}: shape {}, the model expects shape {}",
                                           declared.name, ShapeToString(tensor.shape),
                                           ShapeToString(declared.shape)));
      }
    }
  }
  return tensor;
}

std::string InputNames(const ModelInfo& model) {
  std::string names;
  for (const TensorInfo& input : model.inputs) {
    if (!names.empty()) names += ", ";
    names += input.name;
  }
  return names;
}

Result<std::vector<std::int64_t>> ShapeFromJson(const json& value, std::string_view what) {
  if (!value.is_array() || value.size() > 16) {
    return InvalidArgument(fmt::format("{}: shape must be an array of at most 16 integers", what));
  }
  std::vector<std::int64_t> shape;
  for (const json& dim : value) {
    if (!dim.is_number_integer()) {
      return InvalidArgument(fmt::format("{}: shape must hold integers", what));
    }
    shape.push_back(dim.get<std::int64_t>() < 0 ? -1 : dim.get<std::int64_t>());
  }
  return shape;
}

}  // namespace

Result<Tensor> TensorFromJson(const json& value, std::string_view label) {
  Tensor tensor;
  const json* level = &value;
  std::size_t elements = 1;
  while (level->is_array()) {
    if (tensor.shape.size() == kMaxTensorRank) {
      return InvalidArgument(fmt::format("{}: more than {} nested arrays", label, kMaxTensorRank));
    }
    if (level->empty()) return InvalidArgument(fmt::format("{}: empty array", label));
    elements *= level->size();
    if (elements > kMaxTensorElements) {
      return InvalidArgument(fmt::format("{}: more than {} elements", label, kMaxTensorElements));
    }
    tensor.shape.push_back(static_cast<std::int64_t>(level->size()));
    level = &level->front();
  }
  tensor.data.reserve(elements);
  std::string path(label);
  RETURN_IF_ERROR(Flatten(value, tensor.shape, 0, path, tensor.data));
  return tensor;
}

json TensorToJson(const Tensor& tensor) {
  std::size_t offset = 0;
  return Nest(tensor, 0, offset);
}

Result<NamedTensors> InputsFromJson(const json& value, const ModelInfo& model) {
  NamedTensors inputs;
  if (value.is_object()) {
    for (const auto& entry : value.items()) {
      const std::string& name = entry.key();
      const json& item = entry.value();
      auto declared = std::find_if(model.inputs.begin(), model.inputs.end(),
                                   [&](const TensorInfo& info) { return info.name == name; });
      if (declared == model.inputs.end()) {
        return InvalidArgument(
            fmt::format("input {} is not in the model (inputs: {})", name, InputNames(model)));
      }
      ASSIGN_OR_RETURN(Tensor tensor, TensorFromJson(item, name));
      ASSIGN_OR_RETURN(tensor, FitToDeclared(std::move(tensor), *declared));
      inputs.emplace_back(name, std::move(tensor));
    }
    for (const TensorInfo& declared : model.inputs) {
      auto given = std::find_if(inputs.begin(), inputs.end(),
                                [&](const NamedTensor& t) { return t.first == declared.name; });
      if (given == inputs.end()) {
        return InvalidArgument(fmt::format("input {} is missing", declared.name));
      }
    }
    return inputs;
  }
  if (model.inputs.size() != 1) {
    return InvalidArgument(
        fmt::format("the model has {} inputs ({}); give an object {{\"name\": array, ...}}",
                    model.inputs.size(), InputNames(model)));
  }
  const TensorInfo& declared = model.inputs.front();
  ASSIGN_OR_RETURN(Tensor tensor, TensorFromJson(value, declared.name));
  ASSIGN_OR_RETURN(tensor, FitToDeclared(std::move(tensor), declared));
  inputs.emplace_back(declared.name, std::move(tensor));
  return inputs;
}

json TensorsToJson(const NamedTensors& tensors) {
  json out = json::object();
  for (const auto& [name, tensor] : tensors) out[name] = TensorToJson(tensor);
  return out;
}

std::string ShapeToString(const std::vector<std::int64_t>& shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) text += ", ";
    text += shape[i] < 0 ? std::string("?") : std::to_string(shape[i]);
  }
  return text + "]";
}

json ModelInfoToJson(const ModelInfo& info) {
  auto list = [](const std::vector<TensorInfo>& tensors) {
    json array = json::array();
    for (const TensorInfo& t : tensors) {
      array.push_back({{"name", t.name}, {"type", TensorTypeName(t.type)}, {"shape", t.shape}});
    }
    return array;
  };
  return {{"inputs", list(info.inputs)}, {"outputs", list(info.outputs)}};
}

Result<ModelInfo> ModelInfoFromJson(const json& value) {
  ModelInfo info;
  if (!value.is_object()) return InvalidArgument("model info must be an object");
  for (const char* role : {"inputs", "outputs"}) {
    auto it = value.find(role);
    if (it == value.end() || !it->is_array()) {
      return InvalidArgument(fmt::format("model info: {} must be an array", role));
    }
    for (const json& item : *it) {
      if (!item.is_object() || !item.contains("name") || !item["name"].is_string()) {
        return InvalidArgument(fmt::format("model info: every {} needs a name", role));
      }
      if (item.value("type", json("float32")) != json("float32")) {
        return InvalidArgument(fmt::format("model info: {} type must be float32", role));
      }
      TensorInfo tensor;
      tensor.name = item["name"].get<std::string>();
      ASSIGN_OR_RETURN(tensor.shape, ShapeFromJson(item.value("shape", json::array()),
                                                   "model info " + tensor.name));
      (std::string_view(role) == "inputs" ? info.inputs : info.outputs)
          .push_back(std::move(tensor));
    }
  }
  return info;
}

}  // namespace wisp
