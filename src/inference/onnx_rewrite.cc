#include "inference/onnx_rewrite.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <vector>

#include "inference/protobuf_wire.h"

namespace wisp {
namespace {

using protobuf::AppendBytesField;
using protobuf::AppendVarintField;
using protobuf::Field;
using protobuf::ForEachField;
using protobuf::kFixed32;
using protobuf::kLengthDelimited;
using protobuf::kVarint;

// ONNX field numbers (onnx.proto).
constexpr std::uint32_t kModelGraph = 7;
constexpr std::uint32_t kGraphNode = 1, kGraphInitializer = 5;
constexpr std::uint32_t kNodeInput = 1, kNodeOpType = 4, kNodeAttribute = 5, kNodeDomain = 7;
constexpr std::uint32_t kAttributeName = 1, kAttributeInt = 3, kAttributeType = 20;
constexpr std::uint64_t kAttributeTypeInt = 2;
constexpr std::uint32_t kTensorDims = 1, kTensorDataType = 2, kTensorFloatData = 4, kTensorName = 8,
                        kTensorRawData = 9, kTensorDataLocation = 14;
constexpr std::uint64_t kTensorFloat = 1;

struct GemmNode {
  std::string weights;  // input 1
  bool transposed = false;
};

Result<GemmNode> ReadGemm(std::string_view node, bool& is_gemm) {
  GemmNode gemm;
  int input_index = 0;
  std::string op_type, domain;
  RETURN_IF_ERROR(ForEachField(node, [&](const Field& f) -> Status {
    if (f.number == kNodeInput && f.wire_type == kLengthDelimited) {
      if (input_index++ == 1) gemm.weights = std::string(f.bytes);
    } else if (f.number == kNodeOpType && f.wire_type == kLengthDelimited) {
      op_type = std::string(f.bytes);
    } else if (f.number == kNodeDomain && f.wire_type == kLengthDelimited) {
      domain = std::string(f.bytes);
    } else if (f.number == kNodeAttribute && f.wire_type == kLengthDelimited) {
      std::string_view name;
      std::uint64_t value = 0;
      RETURN_IF_ERROR(ForEachField(f.bytes, [&](const Field& a) -> Status {
        if (a.number == kAttributeName && a.wire_type == kLengthDelimited) name = a.bytes;
        if (a.number == kAttributeInt && a.wire_type == kVarint) value = a.varint;
        return Status::Ok();
      }));
      if (name == "transB") gemm.transposed = value != 0;
    }
    return Status::Ok();
  }));
  is_gemm = op_type == "Gemm" && (domain.empty() || domain == "ai.onnx");
  return gemm;
}

// The node with its transB attribute (if any) replaced by transB=1.
Result<std::string> WithTransB(std::string_view node) {
  std::string out;
  RETURN_IF_ERROR(ForEachField(node, [&](const Field& f) -> Status {
    if (f.number == kNodeAttribute && f.wire_type == kLengthDelimited) {
      bool trans_b = false;
      RETURN_IF_ERROR(ForEachField(f.bytes, [&](const Field& a) -> Status {
        if (a.number == kAttributeName && a.bytes == "transB") trans_b = true;
        return Status::Ok();
      }));
      if (trans_b) return Status::Ok();
    }
    out.append(f.raw);
    return Status::Ok();
  }));
  std::string attribute;
  AppendBytesField(attribute, kAttributeName, "transB");
  AppendVarintField(attribute, kAttributeInt, 1);
  AppendVarintField(attribute, kAttributeType, kAttributeTypeInt);
  AppendBytesField(out, kNodeAttribute, attribute);
  return out;
}

// A 2-D float32 initializer's name, dims and values, or nullopt for any other tensor.
struct Matrix {
  std::string name;
  std::int64_t rows = 0, cols = 0;
  std::vector<float> values;
};

Result<std::optional<Matrix>> ReadMatrix(std::string_view tensor) {
  Matrix m;
  std::vector<std::int64_t> dims;
  std::uint64_t data_type = 0;
  bool external = false;
  std::string_view raw;
  std::vector<float> floats;
  RETURN_IF_ERROR(ForEachField(tensor, [&](const Field& f) -> Status {
    if (f.number == kTensorDims && f.wire_type == kVarint) {
      dims.push_back(static_cast<std::int64_t>(f.varint));
    } else if (f.number == kTensorDims && f.wire_type == kLengthDelimited) {  // packed
      std::string_view rest = f.bytes;
      while (!rest.empty()) {
        std::uint64_t value = 0;
        int shift = 0;
        for (;;) {
          if (rest.empty() || shift >= 64) {
            return InvalidArgument("not an ONNX model: truncated tensor dims");
          }
          const auto byte = static_cast<std::uint8_t>(rest.front());
          rest.remove_prefix(1);
          value |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
          shift += 7;
          if ((byte & 0x80) == 0) break;
        }
        dims.push_back(static_cast<std::int64_t>(value));
      }
    } else if (f.number == kTensorDataType && f.wire_type == kVarint) {
      data_type = f.varint;
    } else if (f.number == kTensorName && f.wire_type == kLengthDelimited) {
      m.name = std::string(f.bytes);
    } else if (f.number == kTensorRawData && f.wire_type == kLengthDelimited) {
      raw = f.bytes;
    } else if (f.number == kTensorFloatData && f.wire_type == kLengthDelimited) {
      const std::size_t count = f.bytes.size() / sizeof(float);
      if (count == 0) return Status::Ok();  // memcpy may not be given null, even for 0 bytes
      const std::size_t at = floats.size();
      floats.resize(at + count);
      std::memcpy(floats.data() + at, f.bytes.data(), count * sizeof(float));
    } else if (f.number == kTensorFloatData && f.wire_type == kFixed32) {
      float value;
      std::memcpy(&value, f.raw.data() + (f.raw.size() - sizeof(float)), sizeof(float));
      floats.push_back(value);
    } else if (f.number == kTensorDataLocation && f.wire_type == kVarint) {
      external = f.varint != 0;
    }
    return Status::Ok();
  }));
  if (external || data_type != kTensorFloat || dims.size() != 2 || dims[0] <= 0 || dims[1] <= 0 ||
      m.name.empty()) {
    return std::optional<Matrix>();
  }
  // The data must hold rows x cols values, so the dimensions are bounded by the bytes given;
  // checked before multiplying, so that huge dimensions cannot wrap around to a small product.
  const std::uint64_t available =
      std::max<std::uint64_t>(raw.size() / sizeof(float), floats.size());
  if (static_cast<std::uint64_t>(dims[0]) > available ||
      static_cast<std::uint64_t>(dims[1]) > available / static_cast<std::uint64_t>(dims[0])) {
    return std::optional<Matrix>();
  }
  m.rows = dims[0];
  m.cols = dims[1];
  const auto count = static_cast<std::uint64_t>(m.rows) * static_cast<std::uint64_t>(m.cols);
  if (!raw.empty()) {
    if (raw.size() != count * sizeof(float)) return std::optional<Matrix>();
    m.values.resize(count);
    std::memcpy(m.values.data(), raw.data(), raw.size());  // ONNX raw data is little-endian
  } else if (floats.size() == count) {
    m.values = std::move(floats);
  } else {
    return std::optional<Matrix>();
  }
  return std::optional<Matrix>(std::move(m));
}

std::string TransposedTensor(const Matrix& m) {
  std::vector<float> t(m.values.size());
  for (std::int64_t r = 0; r < m.rows; ++r) {
    for (std::int64_t c = 0; c < m.cols; ++c) t[c * m.rows + r] = m.values[r * m.cols + c];
  }
  std::string out;
  AppendVarintField(out, kTensorDims, static_cast<std::uint64_t>(m.cols));
  AppendVarintField(out, kTensorDims, static_cast<std::uint64_t>(m.rows));
  AppendVarintField(out, kTensorDataType, kTensorFloat);
  AppendBytesField(out, kTensorName, m.name);
  AppendBytesField(
      out, kTensorRawData,
      std::string_view(reinterpret_cast<const char*>(t.data()), t.size() * sizeof(float)));
  return out;
}

Result<std::optional<std::string>> RewriteGraph(std::string_view graph) {
  // Pass 1: Gemm nodes to change, and how often each name is used as a node input.
  std::map<std::string, int> uses;
  std::set<std::size_t> gemm_nodes;  // by node index
  std::map<std::size_t, std::string> weights_of;
  std::size_t node_index = 0;
  RETURN_IF_ERROR(ForEachField(graph, [&](const Field& f) -> Status {
    if (f.number != kGraphNode || f.wire_type != kLengthDelimited) return Status::Ok();
    RETURN_IF_ERROR(ForEachField(f.bytes, [&](const Field& n) -> Status {
      if (n.number == kNodeInput && n.wire_type == kLengthDelimited) ++uses[std::string(n.bytes)];
      return Status::Ok();
    }));
    bool is_gemm = false;
    ASSIGN_OR_RETURN(GemmNode gemm, ReadGemm(f.bytes, is_gemm));
    if (is_gemm && !gemm.transposed && !gemm.weights.empty()) {
      gemm_nodes.insert(node_index);
      weights_of[node_index] = gemm.weights;
    }
    ++node_index;
    return Status::Ok();
  }));
  if (gemm_nodes.empty()) return std::optional<std::string>();

  // Pass 2: which of those weights are 2-D float initializers used once.
  std::map<std::string, std::string> transposed;  // name -> new TensorProto
  std::set<std::string> wanted;
  for (const auto& [index, name] : weights_of) {
    if (uses[name] == 1) wanted.insert(name);
  }
  RETURN_IF_ERROR(ForEachField(graph, [&](const Field& f) -> Status {
    if (f.number != kGraphInitializer || f.wire_type != kLengthDelimited) return Status::Ok();
    ASSIGN_OR_RETURN(std::optional<Matrix> m, ReadMatrix(f.bytes));
    if (m && wanted.count(m->name) > 0 && transposed.count(m->name) == 0) {
      transposed[m->name] = TransposedTensor(*m);
    }
    return Status::Ok();
  }));
  if (transposed.empty()) return std::optional<std::string>();

  // Pass 3: the graph again, with those nodes and initializers replaced.
  std::string out;
  out.reserve(graph.size() + 64);
  node_index = 0;
  std::set<std::string> written;
  RETURN_IF_ERROR(ForEachField(graph, [&](const Field& f) -> Status {
    if (f.number == kGraphNode && f.wire_type == kLengthDelimited) {
      const std::size_t index = node_index++;
      auto it = weights_of.find(index);
      if (it != weights_of.end() && transposed.count(it->second) > 0) {
        ASSIGN_OR_RETURN(std::string node, WithTransB(f.bytes));
        AppendBytesField(out, kGraphNode, node);
        return Status::Ok();
      }
    } else if (f.number == kGraphInitializer && f.wire_type == kLengthDelimited) {
      ASSIGN_OR_RETURN(std::optional<Matrix> m, ReadMatrix(f.bytes));
      if (m) {
        auto it = transposed.find(m->name);
        if (it != transposed.end() && written.insert(m->name).second) {
          AppendBytesField(out, kGraphInitializer, it->second);
          return Status::Ok();
        }
      }
    }
    out.append(f.raw);
    return Status::Ok();
  }));
  return std::optional<std::string>(std::move(out));
}

}  // namespace

Result<std::optional<std::string>> TransposeGemmWeights(std::string_view model_bytes) {
  std::optional<std::string> graph;
  std::string out;
  bool found_graph = false;
  RETURN_IF_ERROR(ForEachField(model_bytes, [&](const Field& f) -> Status {
    if (f.number == kModelGraph && f.wire_type == kLengthDelimited && !found_graph) {
      found_graph = true;
      ASSIGN_OR_RETURN(graph, RewriteGraph(f.bytes));
      if (graph) {
        AppendBytesField(out, kModelGraph, *graph);
        return Status::Ok();
      }
    }
    out.append(f.raw);
    return Status::Ok();
  }));
  if (!graph) return std::optional<std::string>();
  return std::optional<std::string>(std::move(out));
}

}  // namespace wisp
