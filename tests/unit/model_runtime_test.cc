// The "model" runtime: pre-processing (fields, scaling, windows per key), post-processing
// (argmax with labels, reconstruction error) and the answers of numpy's reference models.
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "extensions/builtin.h"
#include "models/model_store.h"
#include "runtime/model/model_runtime.h"
#include "test_fakes.h"
#include "test_models.h"

namespace wisp {
namespace {

using nlohmann::json;
using testing::FakeStateStore;
using testing::ModelPath;
using testing::ReadFile;
using testing::RecordingHost;

class ModelRuntimeTest : public testing::ModelFunctionTest {
 protected:
  Result<Reply> Call(Instance& instance, const json& body) {
    Event event;
    std::string text = body.dump();
    event.body = text;
    event.json = &body;
    return instance.Invoke(event, host_);
  }

  FakeStateStore store_;
  RecordingHost host_{&store_};
};

TEST_F(ModelRuntimeTest, FeederClassifierWindowsScalesAndLabelsLikeNumpy) {
  Write("feeder.onnx", ReadFile(ModelPath("feeder_classifier.onnx")));
  Write("model.yaml",
        "file: ./feeder.onnx\n"
        "input: {fields: [voltage], offset: -1.0, scale: 10.0, window: 8, key: feeder}\n"
        "output: {kind: argmax, labels: [normal, sag, swell]}\n");
  auto instance = MakeModelRuntime(nullptr)->CreateInstance(Spec("feeder"), dir_);
  ASSERT_TRUE(instance.ok()) << instance.status().ToString();
  json expected = json::parse(ReadFile(ModelPath("feeder_classifier.expected.json")));
  const std::vector<std::string> labels = {"normal", "sag", "swell"};
  int feeder = 0;
  for (const json& test_case : expected["cases"]) {
    const std::string key = "f" + std::to_string(feeder++);
    std::vector<float> features = test_case["inputs"]["x"]["data"].get<std::vector<float>>();
    std::vector<float> probabilities =
        test_case["outputs"]["probabilities"]["data"].get<std::vector<float>>();
    Result<Reply> reply = Status(StatusCode::kInternal, "not run");
    for (std::size_t i = 0; i < features.size(); ++i) {
      // The raw reading the function's scaling turns back into the model's feature.
      json event = {{"feeder", key}, {"voltage", features[i] / 10.0 + 1.0}};
      reply = Call(**instance, event);
      ASSERT_TRUE(reply.ok()) << reply.status().ToString();
      if (i + 1 < features.size()) {
        EXPECT_EQ(reply->status, 202);  // the window is filling
        EXPECT_EQ(json::parse(reply->body)["have"], i + 1);
      }
    }
    ASSERT_EQ(reply->status, 200) << reply->body;
    json body = json::parse(reply->body);
    auto best =
        std::max_element(probabilities.begin(), probabilities.end()) - probabilities.begin();
    EXPECT_EQ(body["label"], labels[best]) << body;
    EXPECT_NEAR(body["confidence"].get<double>(), probabilities[best], 1e-4);
    for (std::size_t c = 0; c < probabilities.size(); ++c) {
      EXPECT_NEAR(body["scores"][c].get<double>(), probabilities[c], 1e-4);
    }
  }
}

TEST_F(ModelRuntimeTest, PumpAutoencoderFromTheRegistryReportsReconstructionError) {
  ModelStore store(dir_ + "/data");
  ASSERT_TRUE(store.Push("pump-ae", "1", ReadFile(ModelPath("pump_autoencoder.onnx"))).ok());
  Write("model.yaml",
        "model: pump-ae@1\n"
        "input: {field: bands}\n"
        "output: {kind: reconstruction_error, threshold: 0.001, alert_topic: plant/alerts}\n");
  auto instance = MakeModelRuntime(&store)->CreateInstance(Spec("pump"), dir_);
  ASSERT_TRUE(instance.ok()) << instance.status().ToString();
  json expected = json::parse(ReadFile(ModelPath("pump_autoencoder.expected.json")));
  for (std::size_t i = 0; i < expected["cases"].size(); ++i) {
    json event = {{"bands", expected["cases"][i]["inputs"]["x"]["data"]}};
    auto reply = Call(**instance, event);
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    json body = json::parse(reply->body);
    const double mse = expected["mse"][i].get<double>();
    EXPECT_NEAR(body["error"].get<double>(), mse, 1e-5 + mse * 1e-3) << body;
    EXPECT_EQ(body["anomaly"].get<bool>(), mse > 0.001) << body;
  }
  // Case 0 is healthy, case 1 worn: one alert.
  ASSERT_EQ(host_.emitted.size(), 1u);
  EXPECT_EQ(host_.emitted[0].topic, "plant/alerts");
}

TEST_F(ModelRuntimeTest, InstancesOnOneThreadShareASession) {
  Write("mlp.onnx", ReadFile(ModelPath("mlp.onnx")));
  Write("model.yaml", "file: ./mlp.onnx\ninput: {fields: [a, b, c, d]}\n");
  auto runtime = MakeModelRuntime(nullptr);
  auto first = runtime->CreateInstance(Spec("mlp"), dir_);
  auto second = runtime->CreateInstance(Spec("mlp"), dir_);
  ASSERT_TRUE(first.ok() && second.ok());
  json event = {{"a", 1}, {"b", 2}, {"c", 3}, {"d", 4}};
  auto r1 = Call(**first, event);
  auto r2 = Call(**second, event);
  ASSERT_TRUE(r1.ok() && r2.ok());
  EXPECT_EQ(r1->body, r2->body);
  EXPECT_TRUE(json::parse(r1->body)["outputs"]["y"].is_array());
}

// A model whose first dimension is not a batch (an LSTM over [T=5, N=1, 3]): one call's 15
// numbers are fitted to the declared shape as they are, and the outputs match numpy.
TEST_F(ModelRuntimeTest, SequenceModelTakesTheWholeEventAsItsInput) {
  Write("lstm.onnx", ReadFile(ModelPath("lstm.onnx")));
  Write("model.yaml", "file: ./lstm.onnx\ninput: {field: x}\noutput: {kind: raw}\n");
  auto instance = MakeModelRuntime(nullptr)->CreateInstance(Spec("lstm"), dir_);
  ASSERT_TRUE(instance.ok()) << instance.status().ToString();
  const json expected = json::parse(ReadFile(ModelPath("lstm.expected.json")));
  for (const json& c : expected["cases"]) {
    auto reply = Call(**instance, json{{"x", c["inputs"]["x"]["data"]}});
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    const auto got = json::parse(reply->body)["outputs"]["y"].flatten();
    const auto want = c["outputs"]["y"]["data"].get<std::vector<double>>();
    ASSERT_EQ(got.size(), want.size()) << reply->body;
    std::size_t i = 0;
    for (const auto& [path, value] : got.items()) {
      (void)path;
      EXPECT_NEAR(value.get<double>(), want[i++], 1e-4);
    }
  }
}

TEST_F(ModelRuntimeTest, RefusesBadConfigsAndEvents) {
  Write("model.yaml", "file: ./missing.onnx\ninput: {fields: [a]}\n");
  EXPECT_EQ(MakeModelRuntime(nullptr)->CreateInstance(Spec("m"), dir_).status().code(),
            StatusCode::kInvalidArgument);
  Write("model.yaml", "file: ./x.onnx\nmodel: y\ninput: {fields: [a]}\n");
  EXPECT_EQ(MakeModelRuntime(nullptr)->CreateInstance(Spec("m"), dir_).status().code(),
            StatusCode::kInvalidArgument);
  Write("model.yaml", "file: ./x.onnx\nimput: {fields: [a]}\n");
  auto typo = MakeModelRuntime(nullptr)->CreateInstance(Spec("m"), dir_);
  EXPECT_NE(typo.status().message().find("unknown key 'imput'"), std::string::npos)
      << typo.status().message();

  Write("mlp.onnx", ReadFile(ModelPath("mlp.onnx")));
  Write("model.yaml", "file: ./mlp.onnx\ninput: {fields: [a, b, c, d]}\n");
  auto instance = MakeModelRuntime(nullptr)->CreateInstance(Spec("m"), dir_);
  ASSERT_TRUE(instance.ok());
  auto missing = Call(**instance, json{{"a", 1}});
  EXPECT_EQ(missing.status().code(), StatusCode::kFunctionError);
  EXPECT_NE(missing.status().message().find("field b"), std::string::npos);
}

}  // namespace
}  // namespace wisp
