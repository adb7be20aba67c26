// The "opencv" inference backend: OpenCV DNN (Debian's libopencv-dnn-dev, 4.6) runs ONNX models.
//
// Load reads the declared inputs and outputs with wisp's own reader (inference/onnx_info.h),
// then cv::dnn::readNetFromONNX on the bytes in memory. Every OpenCV exception becomes
// InvalidArgument (at load: the importer's reason, e.g. an operator OpenCV lacks) or Internal
// (at run), with OpenCV's message, so no exception leaves the backend.
//
// Threads: OpenCV's own thread pool is limited to one thread when the backend is created, once
// per process: wisp runs one shard per core, and a model call parallelised inside a shard would
// only contend with the other shards (docs/inference.md). A session owns its cv::dnn::Net and
// belongs to one thread.
#pragma once

#include "wisp/inference.h"

namespace wisp {

// A new OpenCV DNN backend. Never null.
InferenceBackendPtr MakeOpenCvInferenceBackend();

// Registers MakeOpenCvInferenceBackend as "opencv" in InferenceBackendRegistry::Get(). Call
// before the node starts; calling it again is harmless.
void RegisterOpenCvInferenceBackend();

}  // namespace wisp
