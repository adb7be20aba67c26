// Inference: tensors, models and the backends that run them.
//
// An InferenceBackend (registered by name: "opencv" now; "onnxruntime", "tensorrt" later, see
// docs/inference.md) turns the bytes of an ONNX model into a ModelSession. A session holds the
// loaded network and runs it on named input tensors, returning named output tensors. Callers
// (the model registry, the "model" runtime, Lua's infer()) only ever see these interfaces.
//
// Failures: Load returns InvalidArgument with the backend's own reason when the bytes are not a
// model it can run (corrupt or truncated protobuf, an operator the backend lacks: "OpenCV DNN
// cannot load this model: Can't create layer ... of type Einsum"). Run returns InvalidArgument
// for inputs that do not match the model (unknown or missing name, wrong element count) and
// Internal when the backend fails while computing.
//
// Ownership and threads: a backend is shared and thread-safe (Load may be called from any
// thread). A ModelSession is NOT thread-safe: it belongs to one shard thread, which loads its
// own session and calls Run one call at a time (backends keep per-run scratch buffers inside
// the session). Tensors are plain values that own their data.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "wisp/registry.h"
#include "wisp/status.h"

namespace wisp {

enum class TensorType { kFloat32 };

// "float32"
std::string_view TensorTypeName(TensorType type);

// A dense row-major tensor that owns its elements. Element count = product of shape (a scalar
// has an empty shape and one element).
struct Tensor {
  TensorType type = TensorType::kFloat32;
  std::vector<std::int64_t> shape;
  std::vector<float> data;

  std::size_t ElementCount() const;
};

using NamedTensor = std::pair<std::string, Tensor>;
using NamedTensors = std::vector<NamedTensor>;

// A model's declared input or output. Dimensions the model leaves open (a batch dimension
// named "N", or no shape at all) are -1.
struct TensorInfo {
  std::string name;
  TensorType type = TensorType::kFloat32;
  std::vector<std::int64_t> shape;
};

struct ModelInfo {
  std::vector<TensorInfo> inputs;
  std::vector<TensorInfo> outputs;
};

class ModelSession {
 public:
  virtual ~ModelSession() = default;
  // The model's inputs and outputs, in graph order.
  virtual const ModelInfo& Info() const = 0;
  // Runs the model on `inputs` (every declared input once, by name) and returns every declared
  // output, in Info().outputs order, shaped as the model declares when it declares a fixed
  // shape.
  virtual Result<NamedTensors> Run(const NamedTensors& inputs) = 0;
};
using ModelSessionPtr = std::unique_ptr<ModelSession>;

class InferenceBackend {
 public:
  virtual ~InferenceBackend() = default;
  // The name it is registered under ("opencv").
  virtual std::string_view Name() const = 0;
  // Parses and prepares `model_bytes` (an ONNX ModelProto); the bytes are not kept.
  virtual Result<ModelSessionPtr> Load(std::string_view model_bytes) = 0;
};
using InferenceBackendPtr = std::shared_ptr<InferenceBackend>;

using InferenceBackendFactory = std::function<InferenceBackendPtr()>;
using InferenceBackendRegistry = Registry<InferenceBackendFactory>;

}  // namespace wisp
