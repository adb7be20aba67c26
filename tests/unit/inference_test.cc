// The OpenCV DNN backend against outputs computed independently in numpy
// (tools/models/make_models.py), the ONNX reader, and tensors as JSON.
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "extensions/builtin.h"
#include "inference/onnx_info.h"
#include "inference/onnx_rewrite.h"
#include "inference/opencv/opencv_backend.h"
#include "inference/tensor_json.h"
#include "models/model_store.h"
#include "test_models.h"

namespace wisp {
namespace {

using nlohmann::json;
using testing::ModelPath;
using testing::ReadFile;

Tensor TensorFromCase(const json& item) {
  Tensor tensor;
  tensor.shape = item["shape"].get<std::vector<std::int64_t>>();
  tensor.data = item["data"].get<std::vector<float>>();
  return tensor;
}

// Runs every case of NAME.expected.json through the backend and compares with numpy's answer.
void ExpectMatchesNumpy(const std::string& name) {
  SCOPED_TRACE(name);
  std::string bytes = ReadFile(ModelPath(name + ".onnx"));
  ASSERT_FALSE(bytes.empty());
  json expected = json::parse(ReadFile(ModelPath(name + ".expected.json")));
  double tolerance = expected["tolerance"].get<double>();
  auto backend = MakeOpenCvInferenceBackend();
  auto session = backend->Load(bytes);
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  ASSERT_FALSE(expected["cases"].empty());
  for (const json& test_case : expected["cases"]) {
    NamedTensors inputs;
    for (const auto& [input_name, item] : test_case["inputs"].items()) {
      inputs.emplace_back(input_name, TensorFromCase(item));
    }
    auto outputs = (*session)->Run(inputs);
    ASSERT_TRUE(outputs.ok()) << outputs.status().ToString();
    ASSERT_EQ(outputs->size(), test_case["outputs"].size());
    for (const auto& [output_name, tensor] : *outputs) {
      Tensor want = TensorFromCase(test_case["outputs"][output_name]);
      EXPECT_EQ(tensor.shape, want.shape) << output_name;
      ASSERT_EQ(tensor.data.size(), want.data.size()) << output_name;
      for (std::size_t i = 0; i < want.data.size(); ++i) {
        EXPECT_NEAR(tensor.data[i], want.data[i], tolerance) << output_name << "[" << i << "]";
      }
    }
  }
}

TEST(OpenCvBackendTest, MlpWithGemmTransBAndMatMulAddMatchesNumpy) { ExpectMatchesNumpy("mlp"); }
TEST(OpenCvBackendTest, Conv1dMatchesNumpy) { ExpectMatchesNumpy("conv1d"); }
TEST(OpenCvBackendTest, MediumCnn1dMatchesNumpy) { ExpectMatchesNumpy("cnn1d_medium"); }
TEST(OpenCvBackendTest, LstmMatchesNumpy) { ExpectMatchesNumpy("lstm"); }
TEST(OpenCvBackendTest, GruMatchesNumpy) { ExpectMatchesNumpy("gru"); }
TEST(OpenCvBackendTest, PumpAutoencoderMatchesNumpy) { ExpectMatchesNumpy("pump_autoencoder"); }
TEST(OpenCvBackendTest, FeederClassifierMatchesNumpy) { ExpectMatchesNumpy("feeder_classifier"); }

// OpenCV 4.6 refuses a Gemm with untransposed constant weights and a bias; the backend loads
// the equivalent transposed form (inference/onnx_rewrite.h), which must compute the same thing.
TEST(OpenCvBackendTest, GemmWithoutTransposedWeightsMatchesNumpy) {
  auto session = MakeOpenCvInferenceBackend()->Load(ReadFile(ModelPath("gemm_plain.onnx")));
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  ExpectMatchesNumpy("gemm_plain");
}

TEST(OnnxRewriteTest, TransposesOnlyUntransposedGemmWeights) {
  const std::string plain = ReadFile(ModelPath("gemm_plain.onnx"));
  auto rewritten = TransposeGemmWeights(plain);
  ASSERT_TRUE(rewritten.ok()) << rewritten.status().ToString();
  ASSERT_TRUE(*rewritten);
  // Same interface after the rewrite.
  auto before = ReadOnnxModelSummary(plain);
  auto after = ReadOnnxModelSummary(**rewritten);
  ASSERT_TRUE(before.ok() && after.ok()) << after.status().ToString();
  EXPECT_EQ(after->info.inputs[0].shape, before->info.inputs[0].shape);
  EXPECT_EQ(after->info.outputs[0].shape, before->info.outputs[0].shape);
  EXPECT_EQ(after->op_types, before->op_types);
  // Already transposed (PyTorch's export): nothing to do; models without Gemm likewise.
  for (const char* file : {"mlp.onnx", "conv1d.onnx", "lstm.onnx"}) {
    auto unchanged = TransposeGemmWeights(ReadFile(ModelPath(file)));
    ASSERT_TRUE(unchanged.ok()) << file;
    EXPECT_FALSE(*unchanged) << file;
  }
  EXPECT_FALSE(TransposeGemmWeights(plain.substr(0, plain.size() / 2)).ok());
}

TEST(OpenCvBackendTest, ReportsDeclaredInputsAndOutputs) {
  auto session = MakeOpenCvInferenceBackend()->Load(ReadFile(ModelPath("mlp.onnx")));
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  const ModelInfo& info = (*session)->Info();
  ASSERT_EQ(info.inputs.size(), 1u);  // the weights (initializers) are not inputs
  EXPECT_EQ(info.inputs[0].name, "x");
  EXPECT_EQ(info.inputs[0].shape, (std::vector<std::int64_t>{1, 4}));
  ASSERT_EQ(info.outputs.size(), 1u);
  EXPECT_EQ(info.outputs[0].name, "y");
  EXPECT_EQ(info.outputs[0].shape, (std::vector<std::int64_t>{1, 3}));
}

TEST(OpenCvBackendTest, RefusesBytesThatAreNotAModel) {
  auto backend = MakeOpenCvInferenceBackend();
  auto empty = backend->Load("");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
  auto text = backend->Load("this is not a model, just some text\n");
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(text.status().message().find("not an ONNX model"), std::string::npos)
      << text.status().message();
}

TEST(OpenCvBackendTest, RefusesATruncatedModel) {
  std::string bytes = ReadFile(ModelPath("mlp.onnx"));
  auto backend = MakeOpenCvInferenceBackend();
  for (std::size_t keep : {bytes.size() / 4, bytes.size() / 2, bytes.size() - 3}) {
    auto session = backend->Load(std::string_view(bytes).substr(0, keep));
    ASSERT_FALSE(session.ok()) << "kept " << keep << " of " << bytes.size();
    EXPECT_EQ(session.status().code(), StatusCode::kInvalidArgument);
  }
}

TEST(OpenCvBackendTest, RefusesACorruptedModel) {
  std::string bytes = ReadFile(ModelPath("mlp.onnx"));
  // Flip every bit of the first bytes (the graph's field keys): no longer a ModelProto.
  for (std::size_t i = 0; i < 8 && i < bytes.size(); ++i) bytes[i] = static_cast<char>(~bytes[i]);
  auto session = MakeOpenCvInferenceBackend()->Load(bytes);
  ASSERT_FALSE(session.ok());
  EXPECT_EQ(session.status().code(), StatusCode::kInvalidArgument);
}

TEST(OpenCvBackendTest, RefusesAnUnsupportedOperatorWithOpenCvsReason) {
  auto session = MakeOpenCvInferenceBackend()->Load(ReadFile(ModelPath("unsupported_einsum.onnx")));
  ASSERT_FALSE(session.ok());
  EXPECT_EQ(session.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(session.status().message().find("OpenCV DNN cannot"), std::string::npos)
      << session.status().message();
  EXPECT_NE(session.status().message().find("Einsum"), std::string::npos)
      << session.status().message();
}

TEST(OpenCvBackendTest, RunRefusesMissingAndMisshapenInputs) {
  auto session = MakeOpenCvInferenceBackend()->Load(ReadFile(ModelPath("mlp.onnx")));
  ASSERT_TRUE(session.ok());
  auto none = (*session)->Run({});
  EXPECT_EQ(none.status().code(), StatusCode::kInvalidArgument);
  Tensor wrong_name;
  wrong_name.shape = {1, 4};
  wrong_name.data.assign(4, 1.0f);
  auto misnamed = (*session)->Run({{"z", wrong_name}});
  EXPECT_EQ(misnamed.status().code(), StatusCode::kInvalidArgument);
  Tensor short_data;
  short_data.shape = {1, 4};
  short_data.data.assign(3, 1.0f);
  auto misshapen = (*session)->Run({{"x", short_data}});
  EXPECT_EQ(misshapen.status().code(), StatusCode::kInvalidArgument);
}

TEST(OpenCvBackendTest, IsRegisteredAsOpencv) {
  RegisterBuiltinExtensions();
  const auto* factory = InferenceBackendRegistry::Get().Find("opencv");
  ASSERT_NE(factory, nullptr);
  EXPECT_EQ((*factory)()->Name(), "opencv");
}

TEST(OnnxInfoTest, ReadsOpsAndOpset) {
  auto summary = ReadOnnxModelSummary(ReadFile(ModelPath("lstm.onnx")));
  ASSERT_TRUE(summary.ok()) << summary.status().ToString();
  EXPECT_EQ(summary->opset, 11);
  EXPECT_EQ(summary->op_types, std::vector<std::string>{"LSTM"});
  EXPECT_EQ(summary->info.inputs.size(), 1u);
  EXPECT_EQ(summary->info.outputs[0].shape, (std::vector<std::int64_t>{5, 1, 1, 4}));
}

TEST(TensorJsonTest, NestedArraysBecomeShapedTensors) {
  auto tensor = TensorFromJson(json::parse("[[1, 2, 3], [4, 5, 6]]"), "x");
  ASSERT_TRUE(tensor.ok()) << tensor.status().ToString();
  EXPECT_EQ(tensor->shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(tensor->data, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(TensorToJson(*tensor), json::parse("[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]"));
  auto scalar = TensorFromJson(json(2.5), "s");
  ASSERT_TRUE(scalar.ok());
  EXPECT_TRUE(scalar->shape.empty());
  EXPECT_EQ(scalar->data, std::vector<float>{2.5f});
}

TEST(TensorJsonTest, RefusesRaggedAndNonNumericArraysSayingWhere) {
  auto ragged = TensorFromJson(json::parse("[[1, 2], [3]]"), "x");
  ASSERT_FALSE(ragged.ok());
  EXPECT_NE(ragged.status().message().find("x[1]"), std::string::npos) << ragged.status().message();
  auto text = TensorFromJson(json::parse("[[1, \"a\"]]"), "x");
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.status().message().find("x[0][1]: not a number"), std::string::npos)
      << text.status().message();
  EXPECT_FALSE(TensorFromJson(json::parse("[]"), "x").ok());
  EXPECT_FALSE(TensorFromJson(json::parse("[[[[[[[[[1]]]]]]]]]"), "x").ok());  // 9 levels
}

TEST(TensorJsonTest, InputsTakeTheModelsDeclaredShape) {
  ModelInfo model;
  model.inputs.push_back({"x", TensorType::kFloat32, {1, 4}});
  auto flat = InputsFromJson(json::parse("[1, 2, 3, 4]"), model);
  ASSERT_TRUE(flat.ok()) << flat.status().ToString();
  EXPECT_EQ((*flat)[0].second.shape, (std::vector<std::int64_t>{1, 4}));
  auto named = InputsFromJson(json::parse(R"({"x": [[1, 2, 3, 4]]})"), model);
  ASSERT_TRUE(named.ok());
  EXPECT_EQ((*named)[0].first, "x");
  auto wrong_count = InputsFromJson(json::parse("[1, 2, 3]"), model);
  ASSERT_FALSE(wrong_count.ok());
  EXPECT_NE(wrong_count.status().message().find("expects shape [1, 4]"), std::string::npos)
      << wrong_count.status().message();
  auto unknown = InputsFromJson(json::parse(R"({"y": [1, 2, 3, 4]})"), model);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("inputs: x"), std::string::npos);
}

TEST(TensorJsonTest, ModelInfoRoundTrips) {
  ModelInfo info;
  info.inputs.push_back({"x", TensorType::kFloat32, {-1, 4}});
  info.outputs.push_back({"y", TensorType::kFloat32, {-1, 3}});
  auto back = ModelInfoFromJson(ModelInfoToJson(info));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->inputs[0].name, "x");
  EXPECT_EQ(back->inputs[0].shape, info.inputs[0].shape);
  EXPECT_EQ(back->outputs[0].shape, info.outputs[0].shape);
  EXPECT_FALSE(ModelInfoFromJson(json::parse(R"({"inputs": 3})")).ok());
}

class ModelStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RegisterBuiltinExtensions();
    char pattern[] = "/tmp/wisp-model-store-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(ModelStoreTest, PushDescribeLoadAndRemove) {
  ModelStore store(dir_);
  const std::string bytes = ReadFile(ModelPath("mlp.onnx"));
  auto first = store.Push("mlp", "", bytes);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->version, "1");
  EXPECT_EQ(first->sha256, Sha256Hex(bytes));
  EXPECT_EQ(first->size_bytes, bytes.size());
  EXPECT_EQ(first->op_types, (std::vector<std::string>{"Gemm", "Relu", "MatMul", "Add"}));
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/models/mlp/1/model.onnx"));
  auto second = store.Push("mlp", "", bytes);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->version, "2");
  EXPECT_EQ(store.Push("mlp", "2", bytes).status().code(), StatusCode::kAlreadyExists);

  auto latest = store.Describe("mlp");
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(latest->version, "2");
  auto loaded = store.Load("mlp@1");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->session->Info().inputs[0].name, "x");

  auto list = store.List();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 2u);
  auto removed = store.Remove("mlp@1");
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(*removed, std::vector<std::string>{"mlp@1"});
  EXPECT_EQ(store.Describe("mlp@1").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(store.Remove("mlp").ok());
  EXPECT_EQ(store.Describe("mlp").status().code(), StatusCode::kNotFound);
}

TEST_F(ModelStoreTest, RefusesABadModelAtPushWithTheBackendsReason) {
  ModelStore store(dir_);
  auto pushed = store.Push("bad", "1", ReadFile(ModelPath("unsupported_einsum.onnx")));
  ASSERT_FALSE(pushed.ok());
  EXPECT_EQ(pushed.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(pushed.status().message().find("Einsum"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/models/bad/1"));
  EXPECT_EQ(store.Push("../x", "1", "x").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store.Push("ok", "../1", "x").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(ModelStoreTest, LoadRefusesAFileThatNoLongerMatchesItsSha256) {
  ModelStore store(dir_);
  ASSERT_TRUE(store.Push("mlp", "1", ReadFile(ModelPath("mlp.onnx"))).ok());
  const std::string path = dir_ + "/models/mlp/1/model.onnx";
  std::string bytes = ReadFile(path);
  bytes[bytes.size() - 1] ^= 0x01;  // one bit of a weight
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  auto loaded = store.Load("mlp@1");
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), StatusCode::kIoError);
  EXPECT_NE(loaded.status().message().find("corrupt"), std::string::npos);
}

TEST(ModelRefTest, ParsesNamesAndVersions) {
  auto ref = ParseModelRef("pump-ae@1.2.0");
  ASSERT_TRUE(ref.ok());
  EXPECT_EQ(ref->name, "pump-ae");
  EXPECT_EQ(ref->version, "1.2.0");
  EXPECT_TRUE(ParseModelRef("pump")->version.empty());
  EXPECT_FALSE(ParseModelRef("").ok());
  EXPECT_FALSE(ParseModelRef("a/b").ok());
  EXPECT_FALSE(ParseModelRef("a@").ok());
  EXPECT_FALSE(ParseModelRef("..@1").ok());
}

TEST(ModelMetadataTest, RoundTripsAndRefusesMissingFields) {
  ModelMetadata m;
  m.name = "mlp";
  m.version = "3";
  m.sha256 = std::string(64, 'a');
  m.size_bytes = 502;
  m.backend = "opencv";
  m.pushed_at_ms = 1234;
  m.info.inputs.push_back({"x", TensorType::kFloat32, {1, 4}});
  m.info.outputs.push_back({"y", TensorType::kFloat32, {1, 3}});
  m.op_types = {"Gemm"};
  m.opset = 11;
  auto back = ModelMetadataFromText(ModelMetadataToJson(m).dump());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->version, "3");
  EXPECT_EQ(back->size_bytes, 502u);
  EXPECT_EQ(back->info.outputs[0].shape, (std::vector<std::int64_t>{1, 3}));
  json doc = ModelMetadataToJson(m);
  doc.erase("sha256");
  EXPECT_FALSE(ModelMetadataFromText(doc.dump()).ok());
  EXPECT_FALSE(ModelMetadataFromText("[1]").ok());

  // Found by model_metadata_fuzz: numbers that do not fit the field's integer type are refused
  // (converting them was undefined behaviour).
  for (const json& bad : {json(2.5e50), json(-1), json(1.5), json(18446744073709551615ull)}) {
    json wrong = ModelMetadataToJson(m);
    wrong["size_bytes"] = bad;
    if (bad.is_number_unsigned()) wrong["size_bytes"] = 502, wrong["pushed_at_ms"] = bad;
    auto refused = ModelMetadataFromText(wrong.dump());
    ASSERT_FALSE(refused.ok()) << wrong.dump();
    EXPECT_NE(refused.status().message().find("whole number in range"), std::string::npos)
        << refused.status().message();
  }
}

}  // namespace
}  // namespace wisp
