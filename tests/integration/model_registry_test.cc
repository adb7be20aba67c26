// The model registry through a real wispd and the wisp CLI: push, ls, describe, run, rm, and a
// bad model refused at push with the backend's reason.
#include <gtest/gtest.h>

#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "harness.h"
#include "models/model_store.h"

namespace wisp::testing {
namespace {

using nlohmann::json;

class ModelRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_dir_ = tmp_.path() + "/data";
    node_ = std::make_unique<NodeProcess>(data_dir_, tmp_.path() + "/wispd.log");
    Status started = node_->Start({"--shards", "2"});
    ASSERT_TRUE(started.ok()) << started.ToString();
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "---- wispd log ----\n" << node_->Log() << "----\n";
  }
  CommandResult Cli(std::vector<std::string> args) {
    return RunCli(args, {{"WISP_HOME", data_dir_}});
  }
  static std::string Model(const std::string& file) {
    return SourceDir() + "/tests/data/models/" + file;
  }

  TempDir tmp_;
  std::string data_dir_;
  std::unique_ptr<NodeProcess> node_;
};

TEST_F(ModelRegistryTest, PushListDescribeRunAndRemoveThroughTheCli) {
  CommandResult pushed = Cli({"model", "push", "mlp", Model("mlp.onnx")});
  ASSERT_EQ(pushed.exit_code, 0) << pushed.out << pushed.err;
  EXPECT_NE(pushed.out.find("pushed mlp@1"), std::string::npos) << pushed.out;
  CommandResult second = Cli({"model", "push", "mlp", Model("mlp.onnx"), "--version", "v2"});
  ASSERT_EQ(second.exit_code, 0) << second.err;
  CommandResult again = Cli({"model", "push", "mlp", Model("mlp.onnx"), "--version", "v2"});
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.err.find("immutable"), std::string::npos) << again.err;

  CommandResult listed = Cli({"model", "ls"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find("x[1x4]"), std::string::npos) << listed.out;
  EXPECT_NE(listed.out.find("v2"), std::string::npos) << listed.out;

  CommandResult described = Cli({"model", "describe", "mlp@1", "-o", "json"});
  ASSERT_EQ(described.exit_code, 0) << described.err;
  json metadata = json::parse(described.out);
  EXPECT_EQ(metadata["sha256"], Sha256Hex(ReadTextFile(Model("mlp.onnx"))));
  EXPECT_EQ(metadata["inputs"][0]["name"], "x");
  EXPECT_EQ(metadata["outputs"][0]["shape"], json::parse("[1, 3]"));

  // Run the first numpy case through the node and compare.
  json expected = json::parse(ReadTextFile(Model("mlp.expected.json")));
  const json& test_case = expected["cases"][0];
  json input = test_case["inputs"]["x"]["data"];  // flat: the node fits it to [1, 4]
  CommandResult ran = Cli({"model", "run", "mlp", "--input", input.dump(), "-o", "json"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  json reply = json::parse(ran.out);
  EXPECT_EQ(reply["model"], "mlp@v2");  // NAME alone is the version pushed last
  const json& got = reply["outputs"]["y"];
  ASSERT_EQ(got.size(), 1u);
  const json& want = test_case["outputs"]["y"]["data"];
  ASSERT_EQ(got[0].size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(got[0][i].get<double>(), want[i].get<double>(), 1e-4);
  }

  CommandResult bad_input = Cli({"model", "run", "mlp", "--input", "[1, 2]"});
  EXPECT_NE(bad_input.exit_code, 0);
  EXPECT_NE(bad_input.err.find("expects shape [1, 4]"), std::string::npos) << bad_input.err;

  CommandResult removed = Cli({"model", "rm", "mlp@1"});
  ASSERT_EQ(removed.exit_code, 0) << removed.err;
  EXPECT_NE(removed.out.find("removed mlp@1"), std::string::npos);
  CommandResult gone = Cli({"model", "describe", "mlp@1"});
  EXPECT_NE(gone.exit_code, 0);
  EXPECT_NE(gone.err.find("no version"), std::string::npos) << gone.err;
}

TEST_F(ModelRegistryTest, RefusesABadModelAtPushWithTheBackendsReason) {
  CommandResult unsupported = Cli({"model", "push", "bad", Model("unsupported_einsum.onnx")});
  EXPECT_NE(unsupported.exit_code, 0);
  EXPECT_NE(unsupported.err.find("Einsum"), std::string::npos) << unsupported.err;
  tmp_.Write("garbage.onnx", "definitely not a protobuf");
  CommandResult garbage = Cli({"model", "push", "bad", tmp_.path() + "/garbage.onnx"});
  EXPECT_NE(garbage.exit_code, 0);
  EXPECT_NE(garbage.err.find("not an ONNX model"), std::string::npos) << garbage.err;
  CommandResult listed = Cli({"model", "ls", "-o", "json"});
  ASSERT_EQ(listed.exit_code, 0);
  EXPECT_TRUE(json::parse(listed.out)["models"].empty()) << listed.out;
}

TEST_F(ModelRegistryTest, ControlRoutesNeedTheToken) {
  auto push = node_->Request("POST", "/v1/models/mlp", ReadTextFile(Model("mlp.onnx")), {},
                             /*auth=*/false);
  ASSERT_TRUE(push.ok()) << push.status().ToString();
  EXPECT_EQ(push->status, 401);
  auto list = node_->Request("GET", "/v1/models", "", {}, /*auth=*/false);
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->status, 401);
}

// Model functions deployed as users would: the pump example names a pushed model, the feeder
// example ships its model; both answer as numpy does.
TEST_F(ModelRegistryTest, DeployedModelFunctionsAnswerLikeNumpy) {
  CommandResult pushed =
      Cli({"model", "push", "pump-ae", Model("pump_autoencoder.onnx"), "--version", "1"});
  ASSERT_EQ(pushed.exit_code, 0) << pushed.err;
  for (const char* example : {"pump-autoencoder", "feeder-classifier"}) {
    CommandResult deployed = Cli({"deploy", SourceDir() + "/examples/" + example});
    ASSERT_EQ(deployed.exit_code, 0) << deployed.out << deployed.err;
  }
  const HttpHeaders json_type = {{"Content-Type", "application/json"}};

  json pump = json::parse(ReadTextFile(Model("pump_autoencoder.expected.json")));
  for (std::size_t i = 0; i < pump["cases"].size(); ++i) {
    json event = {{"pump", "p1"}, {"bands", pump["cases"][i]["inputs"]["x"]["data"]}};
    auto reply =
        node_->Request("POST", "/v1/functions/pump-autoencoder/invoke", event.dump(), json_type);
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    ASSERT_EQ(reply->status, 200) << reply->body;
    json body = json::parse(reply->body);
    const double mse = pump["mse"][i].get<double>();
    EXPECT_NEAR(body["error"].get<double>(), mse, 1e-5 + mse * 1e-3) << body;
    EXPECT_EQ(body["anomaly"].get<bool>(), mse > 0.001) << body;
  }

  json feeder = json::parse(ReadTextFile(Model("feeder_classifier.expected.json")));
  const std::vector<std::string> labels = {"normal", "sag", "swell"};
  for (std::size_t c = 0; c < feeder["cases"].size(); ++c) {
    auto features = feeder["cases"][c]["inputs"]["x"]["data"].get<std::vector<double>>();
    auto probabilities =
        feeder["cases"][c]["outputs"]["probabilities"]["data"].get<std::vector<double>>();
    HttpResponse last;
    for (double feature : features) {
      json event = {{"feeder", "f" + std::to_string(c)}, {"voltage", feature / 10.0 + 1.0}};
      auto reply =
          node_->Request("POST", "/v1/functions/feeder-classifier/invoke", event.dump(), json_type);
      ASSERT_TRUE(reply.ok()) << reply.status().ToString();
      last = *reply;
    }
    ASSERT_EQ(last.status, 200) << last.body;
    json body = json::parse(last.body);
    auto best =
        std::max_element(probabilities.begin(), probabilities.end()) - probabilities.begin();
    EXPECT_EQ(body["label"], labels[best]) << body;
    EXPECT_NEAR(body["confidence"].get<double>(), probabilities[best], 1e-4);
  }
}

// Lua's ctx.infer runs a pushed model with the shard's session.
TEST_F(ModelRegistryTest, LuaCtxInferRunsAPushedModel) {
  CommandResult pushed = Cli({"model", "push", "mlp", Model("mlp.onnx")});
  ASSERT_EQ(pushed.exit_code, 0) << pushed.err;
  tmp_.Write("lua-infer/wisp.yaml",
             "version: 1\n"
             "functions:\n"
             "  lua-infer:\n"
             "    runtime: lua\n"
             "    handler: ./handler.lua:handle\n");
  tmp_.Write("lua-infer/handler.lua",
             "local M = {}\n"
             "function M.handle(event, ctx)\n"
             "  local out = ctx.infer(event.json.model, event.json.x)\n"
             "  return { status = 200, body = { y = out.y } }\n"
             "end\n"
             "return M\n");
  CommandResult deployed = Cli({"deploy", tmp_.path() + "/lua-infer"});
  ASSERT_EQ(deployed.exit_code, 0) << deployed.out << deployed.err;
  const HttpHeaders json_type = {{"Content-Type", "application/json"}};

  json expected = json::parse(ReadTextFile(Model("mlp.expected.json")));
  for (const json& test_case : expected["cases"]) {
    json event = {{"model", "mlp@1"}, {"x", json::array({test_case["inputs"]["x"]["data"]})}};
    auto reply = node_->Request("POST", "/v1/functions/lua-infer/invoke", event.dump(), json_type);
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    ASSERT_EQ(reply->status, 200) << reply->body;
    json got = json::parse(reply->body)["y"];
    const json& want = test_case["outputs"]["y"]["data"];
    ASSERT_EQ(got.size(), 1u) << reply->body;
    ASSERT_EQ(got[0].size(), want.size()) << reply->body;
    for (std::size_t i = 0; i < want.size(); ++i) {
      EXPECT_NEAR(got[0][i].get<double>(), want[i].get<double>(), 1e-4);
    }
  }
  json unknown = {{"model", "nope"}, {"x", json::array({json::array({1, 2, 3, 4})})}};
  auto reply = node_->Request("POST", "/v1/functions/lua-infer/invoke", unknown.dump(), json_type);
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(reply->status, 500) << reply->body;
  EXPECT_NE(reply->body.find("no model named 'nope'"), std::string::npos) << reply->body;
}

}  // namespace
}  // namespace wisp::testing
