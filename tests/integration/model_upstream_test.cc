// Hierarchical inference with two real wispd nodes: the edge node's model function escalates
// low-confidence answers to the upstream node's "big model" function, and answers locally,
// marked degraded, once the upstream node is stopped.
#include <gtest/gtest.h>

#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "harness.h"

namespace wisp::testing {
namespace {

using nlohmann::json;

class ModelUpstreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (auto* node : {&edge_, &upstream_}) {
      const std::string name = node == &edge_ ? "edge" : "upstream";
      *node = std::make_unique<NodeProcess>(tmp_.path() + "/" + name,
                                            tmp_.path() + "/" + name + ".log");
      Status started = (*node)->Start({"--shards", "1"});
      ASSERT_TRUE(started.ok()) << started.ToString();
    }
  }
  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "---- edge log ----\n"
                << edge_->Log() << "---- upstream log ----\n"
                << upstream_->Log() << "----\n";
    }
  }
  // Deploys a model function NAME answering with `labels`, plus `extra` lines of model.yaml.
  void Deploy(NodeProcess& node, const std::string& name, const std::string& labels,
              const std::string& extra) {
    const std::string dir = tmp_.path() + "/fn-" + name;
    tmp_.Write(
        "fn-" + name + "/wisp.yaml",
        "version: 1\nfunctions:\n  " + name + ":\n    runtime: model\n    handler: ./model.yaml\n");
    tmp_.Write("fn-" + name + "/mlp.onnx",
               ReadTextFile(SourceDir() + "/tests/data/models/mlp.onnx"));
    tmp_.Write("fn-" + name + "/model.yaml",
               "file: ./mlp.onnx\ninput: {fields: [a, b, c, d]}\n"
               "output: {kind: argmax, labels: " +
                   labels + "}\n" + extra);
    CommandResult deployed = RunCli({"deploy", dir}, {{"WISP_HOME", node.data_dir()}});
    ASSERT_EQ(deployed.exit_code, 0) << deployed.out << deployed.err;
  }
  json Invoke() {
    const std::string event = json{{"a", 0.5}, {"b", -1}, {"c", 0.25}, {"d", 1}}.dump();
    auto reply = edge_->Request("POST", "/v1/functions/classify/invoke", event,
                                {{"Content-Type", "application/json"}});
    EXPECT_TRUE(reply.ok()) << reply.status().ToString();
    if (!reply.ok()) return json();
    EXPECT_EQ(reply->status, 200) << reply->body;
    return json::parse(reply->body, nullptr, false);
  }

  TempDir tmp_;
  std::unique_ptr<NodeProcess> edge_, upstream_;
};

TEST_F(ModelUpstreamTest, EscalatesToTheUpstreamNodeAndDegradesWhenItIsGone) {
  Deploy(*upstream_, "big", "[big-a, big-b, big-c]", "");
  Deploy(*edge_, "classify", "[small-a, small-b, small-c]",
         "upstream: {url: '" + upstream_->url() +
             "', function: big, confidence: 0.99, deadline: 2s}\n");

  json escalated = Invoke();
  EXPECT_EQ(escalated["escalated"], true) << escalated;
  EXPECT_EQ(escalated["label"].get<std::string>().rfind("big-", 0), 0u) << escalated;
  EXPECT_EQ(escalated["local"]["label"].get<std::string>().rfind("small-", 0), 0u) << escalated;

  upstream_->Stop();
  json degraded = Invoke();
  EXPECT_EQ(degraded["degraded"], true) << degraded;
  EXPECT_EQ(degraded["label"].get<std::string>().rfind("small-", 0), 0u) << degraded;

  auto metrics = edge_->Request("GET", "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->body.find("wisp_model_escalations_total 2"), std::string::npos);
  EXPECT_NE(metrics->body.find("wisp_model_degraded_total 1"), std::string::npos);
}

}  // namespace
}  // namespace wisp::testing
