#include "inference/onnx_info.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "inference/protobuf_wire.h"

namespace wisp {
namespace {

using protobuf::Field;
using protobuf::ForEachField;
using protobuf::kLengthDelimited;
using protobuf::kVarint;

std::string_view OnnxTypeName(std::int64_t type) {
  static constexpr std::string_view kNames[] = {
      "undefined", "float32", "uint8",     "int8",       "uint16",  "int16",
      "int32",     "int64",   "string",    "bool",       "float16", "float64",
      "uint32",    "uint64",  "complex64", "complex128", "bfloat16"};
  if (type >= 0 && type < static_cast<std::int64_t>(std::size(kNames))) return kNames[type];
  return "unknown";
}

constexpr std::int64_t kOnnxFloat = 1;
constexpr std::size_t kMaxRank = 16;

struct ValueInfo {
  std::string name;
  std::int64_t elem_type = 0;  // 0: not given
  std::vector<std::int64_t> shape;
  bool has_shape = false;
};

Status ReadDimension(std::string_view bytes, std::int64_t& dim) {
  dim = -1;
  return ForEachField(bytes, [&](const Field& f) -> Status {
    if (f.number == 1 && f.wire_type == kVarint) {
      auto value = static_cast<std::int64_t>(f.varint);
      dim = value >= 0 ? value : -1;
    }
    return Status::Ok();
  });
}

Status ReadValueInfo(std::string_view bytes, ValueInfo& info) {
  return ForEachField(bytes, [&](const Field& f) -> Status {
    if (f.number == 1 && f.wire_type == kLengthDelimited) {
      info.name = std::string(f.bytes);
    } else if (f.number == 2 && f.wire_type == kLengthDelimited) {  // TypeProto
      return ForEachField(f.bytes, [&](const Field& type_field) -> Status {
        if (type_field.number != 1 || type_field.wire_type != kLengthDelimited) {
          return Status::Ok();  // a sequence, map or optional type: elem_type stays 0
        }
        return ForEachField(type_field.bytes, [&](const Field& tensor_field) -> Status {
          if (tensor_field.number == 1 && tensor_field.wire_type == kVarint) {
            info.elem_type = static_cast<std::int64_t>(tensor_field.varint);
          } else if (tensor_field.number == 2 && tensor_field.wire_type == kLengthDelimited) {
            info.has_shape = true;
            return ForEachField(tensor_field.bytes, [&](const Field& dim_field) -> Status {
              if (dim_field.number != 1 || dim_field.wire_type != kLengthDelimited) {
                return Status::Ok();
              }
              if (info.shape.size() >= kMaxRank) {
                return InvalidArgument(
                    fmt::format("tensor {} has more than {} dimensions", info.name, kMaxRank));
              }
              std::int64_t dim = -1;
              RETURN_IF_ERROR(ReadDimension(dim_field.bytes, dim));
              info.shape.push_back(dim);
              return Status::Ok();
            });
          }
          return Status::Ok();
        });
      });
    }
    return Status::Ok();
  });
}

Result<TensorInfo> ToTensorInfo(const ValueInfo& value, std::string_view role) {
  if (value.name.empty()) return InvalidArgument(fmt::format("graph has an unnamed {}", role));
  if (value.elem_type != kOnnxFloat) {
    return InvalidArgument(fmt::format("{} {} has element type {} ({}); only float32 is supported",
                                       role, value.name, value.elem_type,
                                       OnnxTypeName(value.elem_type)));
  }
  TensorInfo info;
  info.name = value.name;
  info.shape = value.shape;
  return info;
}

}  // namespace

Result<OnnxModelSummary> ReadOnnxModelSummary(std::string_view model_bytes) {
  if (model_bytes.empty()) return InvalidArgument("not an ONNX model: empty");
  OnnxModelSummary summary;
  std::string_view graph;
  bool has_graph = false;
  RETURN_IF_ERROR(ForEachField(model_bytes, [&](const Field& f) -> Status {
    if (f.number == 1 && f.wire_type == kVarint) {
      summary.ir_version = static_cast<std::int64_t>(f.varint);
    } else if (f.number == 2 && f.wire_type == kLengthDelimited) {
      summary.producer = std::string(f.bytes);
    } else if (f.number == 7 && f.wire_type == kLengthDelimited) {
      graph = f.bytes;
      has_graph = true;
    } else if (f.number == 8 && f.wire_type == kLengthDelimited) {  // OperatorSetIdProto
      std::string domain;
      std::int64_t version = 0;
      RETURN_IF_ERROR(ForEachField(f.bytes, [&](const Field& op) -> Status {
        if (op.number == 1 && op.wire_type == kLengthDelimited) domain = std::string(op.bytes);
        if (op.number == 2 && op.wire_type == kVarint) {
          version = static_cast<std::int64_t>(op.varint);
        }
        return Status::Ok();
      }));
      if (domain.empty() || domain == "ai.onnx") summary.opset = version;
    }
    return Status::Ok();
  }));
  if (!has_graph) return InvalidArgument("not an ONNX model: no graph");

  std::vector<ValueInfo> inputs, outputs;
  std::set<std::string, std::less<>> initializers;
  RETURN_IF_ERROR(ForEachField(graph, [&](const Field& f) -> Status {
    if (f.wire_type != kLengthDelimited) return Status::Ok();
    if (f.number == 1) {  // NodeProto: op_type is field 4
      return ForEachField(f.bytes, [&](const Field& node_field) -> Status {
        if (node_field.number == 4 && node_field.wire_type == kLengthDelimited) {
          std::string op(node_field.bytes);
          if (std::find(summary.op_types.begin(), summary.op_types.end(), op) ==
              summary.op_types.end()) {
            summary.op_types.push_back(std::move(op));
          }
        }
        return Status::Ok();
      });
    }
    if (f.number == 5) {  // TensorProto: name is field 8
      return ForEachField(f.bytes, [&](const Field& tensor_field) -> Status {
        if (tensor_field.number == 8 && tensor_field.wire_type == kLengthDelimited) {
          initializers.emplace(tensor_field.bytes);
        }
        return Status::Ok();
      });
    }
    if (f.number == 11 || f.number == 12) {
      ValueInfo value;
      RETURN_IF_ERROR(ReadValueInfo(f.bytes, value));
      (f.number == 11 ? inputs : outputs).push_back(std::move(value));
    }
    return Status::Ok();
  }));

  for (const ValueInfo& value : inputs) {
    if (initializers.count(value.name)) continue;
    ASSIGN_OR_RETURN(TensorInfo info, ToTensorInfo(value, "input"));
    summary.info.inputs.push_back(std::move(info));
  }
  for (const ValueInfo& value : outputs) {
    ASSIGN_OR_RETURN(TensorInfo info, ToTensorInfo(value, "output"));
    summary.info.outputs.push_back(std::move(info));
  }
  if (summary.info.inputs.empty()) return InvalidArgument("graph has no inputs");
  if (summary.info.outputs.empty()) return InvalidArgument("graph has no outputs");
  return summary;
}

}  // namespace wisp
