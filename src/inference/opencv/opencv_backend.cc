#include "inference/opencv/opencv_backend.h"

#include <algorithm>
#include <cstring>
#include <mutex>

#include <fmt/format.h>
#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/dnn.hpp>

#include "inference/onnx_info.h"
#include "inference/onnx_rewrite.h"
#include "inference/tensor_json.h"

namespace wisp {
namespace {

// OpenCV messages carry the source location and function ("... in function 'x'"); keep its
// reason, which is what a user can act on.
std::string OpenCvReason(const cv::Exception& e) {
  std::string reason = e.err.empty() ? std::string(e.what()) : e.err;
  if (!e.func.empty()) reason += fmt::format(" (in {})", e.func);
  return reason;
}

bool FullyKnown(const std::vector<std::int64_t>& shape) {
  return !shape.empty() &&
         std::all_of(shape.begin(), shape.end(), [](std::int64_t d) { return d >= 0; });
}

class OpenCvSession final : public ModelSession {
 public:
  OpenCvSession(cv::dnn::Net net, OnnxModelSummary summary)
      : net_(std::move(net)), summary_(std::move(summary)) {
    for (const TensorInfo& output : summary_.info.outputs) output_names_.push_back(output.name);
  }

  const ModelInfo& Info() const override { return summary_.info; }

  Result<NamedTensors> Run(const NamedTensors& inputs) override {
    const ModelInfo& info = summary_.info;
    if (inputs.size() != info.inputs.size()) {
      return InvalidArgument(
          fmt::format("the model takes {} inputs, {} given", info.inputs.size(), inputs.size()));
    }
    try {
      for (const TensorInfo& declared : info.inputs) {
        auto given = std::find_if(inputs.begin(), inputs.end(),
                                  [&](const NamedTensor& t) { return t.first == declared.name; });
        if (given == inputs.end()) {
          return InvalidArgument(fmt::format("input {} is missing", declared.name));
        }
        const Tensor& tensor = given->second;
        if (tensor.data.size() != tensor.ElementCount() || tensor.shape.empty()) {
          return InvalidArgument(fmt::format("input {}: shape {} does not match its {} elements",
                                             declared.name, ShapeToString(tensor.shape),
                                             tensor.data.size()));
        }
        std::vector<int> sizes(tensor.shape.begin(), tensor.shape.end());
        // OpenCV wants at least two dimensions; a vector is one row.
        if (sizes.size() == 1) sizes.insert(sizes.begin(), 1);
        // setInput keeps a reference to the Mat's buffer until the forward pass: wrap the
        // caller's data without copying (the caller keeps `inputs` alive for this call).
        cv::Mat blob(static_cast<int>(sizes.size()), sizes.data(), CV_32F,
                     const_cast<float*>(tensor.data.data()));
        net_.setInput(blob, declared.name);
      }
      net_.forward(output_blobs_, output_names_);
    } catch (const cv::Exception& e) {
      return Internal("OpenCV DNN failed to run the model: " + OpenCvReason(e));
    } catch (const std::exception& e) {
      return Internal(std::string("OpenCV DNN failed to run the model: ") + e.what());
    }
    NamedTensors outputs;
    outputs.reserve(info.outputs.size());
    for (std::size_t i = 0; i < info.outputs.size() && i < output_blobs_.size(); ++i) {
      const cv::Mat& blob = output_blobs_[i];
      Tensor tensor;
      for (int d = 0; d < blob.dims; ++d) tensor.shape.push_back(blob.size[d]);
      std::size_t count = blob.total();
      // OpenCV drops or merges unit dimensions for some layers (LSTM's num_directions): report
      // the shape the model declares when it fixes one with the same element count.
      Tensor declared;
      declared.shape = info.outputs[i].shape;
      if (FullyKnown(declared.shape) && declared.ElementCount() == count) {
        tensor.shape = declared.shape;
      }
      if (blob.type() != CV_32F || !blob.isContinuous()) {
        return Internal(fmt::format("OpenCV DNN returned output {} of an unexpected type",
                                    info.outputs[i].name));
      }
      const auto* begin = blob.ptr<float>();
      tensor.data.assign(begin, begin + count);
      outputs.emplace_back(info.outputs[i].name, std::move(tensor));
    }
    return outputs;
  }

 private:
  cv::dnn::Net net_;
  OnnxModelSummary summary_;
  std::vector<std::string> output_names_;
  std::vector<cv::Mat> output_blobs_;  // reused across runs
};

class OpenCvBackend final : public InferenceBackend {
 public:
  OpenCvBackend() {
    static std::once_flag once;
    std::call_once(once, [] {
      cv::setNumThreads(1);
      // The importer logs what it also throws; the Status carries the reason.
      cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
    });
  }

  std::string_view Name() const override { return "opencv"; }

  Result<ModelSessionPtr> Load(std::string_view model_bytes) override {
    ASSIGN_OR_RETURN(OnnxModelSummary summary, ReadOnnxModelSummary(model_bytes));
    // OpenCV 4.6 refuses Gemm with untransposed constant weights and a bias; load the
    // equivalent transposed form instead (inference/onnx_rewrite.h).
    ASSIGN_OR_RETURN(std::optional<std::string> rewritten, TransposeGemmWeights(model_bytes));
    const std::string_view bytes = rewritten ? std::string_view(*rewritten) : model_bytes;
    cv::dnn::Net net;
    try {
      net = cv::dnn::readNetFromONNX(bytes.data(), bytes.size());
      if (net.empty()) return InvalidArgument("OpenCV DNN cannot load this model: empty network");
      net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
      net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
    } catch (const cv::Exception& e) {
      return InvalidArgument("OpenCV DNN cannot load this model: " + OpenCvReason(e));
    } catch (const std::exception& e) {
      return InvalidArgument(std::string("OpenCV DNN cannot load this model: ") + e.what());
    }
    auto session = std::make_unique<OpenCvSession>(std::move(net), std::move(summary));
    // OpenCV builds layers lazily on the first forward; an operator it can parse but not run
    // fails only then. Run once on zeros where every input shape is known, so such models are
    // refused at load and the first real call is not the slow one.
    NamedTensors zeros;
    for (const TensorInfo& input : session->Info().inputs) {
      if (!FullyKnown(input.shape)) return ModelSessionPtr(std::move(session));
      Tensor tensor;
      tensor.shape = input.shape;
      tensor.data.assign(tensor.ElementCount(), 0.0f);
      zeros.emplace_back(input.name, std::move(tensor));
    }
    auto warm = session->Run(zeros);
    if (!warm.ok()) {
      return InvalidArgument("OpenCV DNN cannot run this model: " + warm.status().message());
    }
    return ModelSessionPtr(std::move(session));
  }
};

}  // namespace

InferenceBackendPtr MakeOpenCvInferenceBackend() { return std::make_shared<OpenCvBackend>(); }

void RegisterOpenCvInferenceBackend() {
  InferenceBackendRegistry::Get().Register("opencv", [] { return MakeOpenCvInferenceBackend(); });
}

}  // namespace wisp
