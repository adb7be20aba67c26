// Model functions follow the instance lifecycle of the other runtimes (issue 5, item 4): a model
// function with scale.min 0 on a node whose keep-alive is short starts no instance at deploy,
// loads its model on the first call (a cold start), goes back to zero instances after the
// keep-alive, and the next call is a cold start again, answering as numpy does both times.
#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "harness.h"

namespace wisp::testing {
namespace {

using nlohmann::json;

constexpr const char* kManifest = R"yaml(
version: 1
functions:
  mlp-fn:
    runtime: model
    handler: ./model.yaml
    scale: { min: 0, max: 2 }
)yaml";

// Raw output: the reply carries the model's output tensor, to compare with numpy's.
constexpr const char* kModelSettings = R"yaml(
file: ./model.onnx
input: { field: x }
)yaml";

class ModelLifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_dir_ = tmp_.path() + "/data";
    node_ = std::make_unique<NodeProcess>(data_dir_, tmp_.path() + "/wispd.log");
    Status started = node_->Start({"--shards", "1"}, kScaleToZeroQuicklyConfig);
    ASSERT_TRUE(started.ok()) << started.ToString();
    const std::string models = SourceDir() + "/tests/data/models/";
    tmp_.Write("fn/wisp.yaml", kManifest);
    tmp_.Write("fn/model.yaml", kModelSettings);
    tmp_.Write("fn/model.onnx", ReadTextFile(models + "mlp.onnx"));
    expected_ = json::parse(ReadTextFile(models + "mlp.expected.json"));
    CommandResult r = RunCli({"deploy", tmp_.path() + "/fn"}, {{"WISP_HOME", data_dir_}});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "---- wispd log ----\n" << node_->Log() << "\n";
  }

  // Invokes mlp-fn with numpy case `index` of mlp.expected.json and checks the output against
  // numpy's within the file's tolerance. Returns the reply for header checks.
  HttpResponse InvokeAndCheck(std::size_t index) {
    const json& test_case = expected_["cases"].at(index);
    json event = {{"x", test_case["inputs"]["x"]["data"]}};
    auto reply = node_->Request("POST", "/v1/functions/mlp-fn/invoke", event.dump(),
                                {{"Content-Type", "application/json"}});
    EXPECT_TRUE(reply.ok()) << reply.status().ToString();
    if (!reply.ok()) return {};
    EXPECT_EQ(reply->status, 200) << reply->body;
    json body = json::parse(reply->body, nullptr, false);
    EXPECT_TRUE(body.is_object() && body.contains("outputs")) << reply->body;
    if (!body.is_object() || !body.contains("outputs")) return *reply;
    const json& got = body["outputs"]["y"];
    const json& want = test_case["outputs"]["y"]["data"];
    const double tolerance = expected_["tolerance"].get<double>();
    EXPECT_EQ(got.size(), 1u) << reply->body;  // shape [1, 3]
    if (got.size() != 1u) return *reply;
    EXPECT_EQ(got[0].size(), want.size()) << reply->body;
    for (std::size_t i = 0; i < want.size() && i < got[0].size(); ++i) {
      EXPECT_NEAR(got[0][i].get<double>(), want[i].get<double>(), tolerance) << "output " << i;
    }
    return *reply;
  }

  double Metric(const std::string& name, const std::string& extra_label = "") {
    auto r = node_->Request("GET", "/metrics");
    EXPECT_TRUE(r.ok() && r->status == 200);
    if (!r.ok()) return -1;
    return testing::FindMetric(r->body, name, "mlp-fn", extra_label).value_or(-1);
  }

  // Polls until no instance of mlp-fn is live (warm or starting); bounded at ~30 s.
  bool WaitForZeroInstances() {
    for (int i = 0; i < 300; ++i) {
      if (Metric("wisp_function_instances") == 0 &&
          Metric("wisp_function_instances_by_state", "state=\"starting\"") == 0) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  TempDir tmp_;
  std::string data_dir_;
  std::unique_ptr<NodeProcess> node_;
  json expected_;
};

TEST_F(ModelLifecycleTest, ScalesToZeroAndColdStartsAgain) {
  ASSERT_EQ(Metric("wisp_function_instances"), 0);  // scale.min 0: no session loaded at deploy
  const double cold_before = Metric("wisp_function_cold_starts_total");

  HttpResponse first = InvokeAndCheck(0);
  ASSERT_EQ(first.status, 200);
  EXPECT_EQ(first.Header("X-Wisp-Cold-Start"), "1");
  const double cold_after_first = Metric("wisp_function_cold_starts_total");
  EXPECT_GT(cold_after_first, cold_before);

  ASSERT_TRUE(WaitForZeroInstances()) << "the model function never scaled to zero";
  EXPECT_GE(Metric("wisp_autoscaler_decisions_total", "reason=\"scale_to_zero\""), 1);

  HttpResponse second = InvokeAndCheck(1);
  ASSERT_EQ(second.status, 200);
  EXPECT_EQ(second.Header("X-Wisp-Cold-Start"), "1");
  EXPECT_GT(Metric("wisp_function_cold_starts_total"), cold_after_first);
  EXPECT_NE(node_->Log().find("function mlp-fn shard 0: instances 1 -> 0 (scale_to_zero"),
            std::string::npos);
}

}  // namespace
}  // namespace wisp::testing
