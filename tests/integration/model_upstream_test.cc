// Hierarchical inference with two real wispd nodes: the edge node's model function escalates
// low-confidence answers to the upstream node's "big model" function, and answers locally,
// marked degraded, once the upstream node is stopped.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

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

// An upstream that accepts the connection and never answers: the escalation waits for its
// deadline on the shard's loop, and meanwhile the same (single) shard serves other calls.
TEST_F(ModelUpstreamTest, AnUpstreamThatNeverAnswersDoesNotHoldTheShard) {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const int port = ntohs(address.sin_port);
  std::atomic<int> accepted{-1};
  std::thread acceptor([&] { accepted = ::accept(listener, nullptr, nullptr); });

  Deploy(*edge_, "classify", "[small-a, small-b, small-c]",
         "upstream: {url: 'http://127.0.0.1:" + std::to_string(port) +
             "', function: big, confidence: 0.99, deadline: 5s}\n");
  tmp_.Write("fn-pong/wisp.yaml",
             "version: 1\nfunctions:\n  pong:\n    runtime: lua\n    handler: ./pong.lua:handle\n");
  tmp_.Write("fn-pong/pong.lua",
             "local M = {}\nfunction M.handle(event, ctx) return 'pong' end\nreturn M\n");
  CommandResult deployed =
      RunCli({"deploy", tmp_.path() + "/fn-pong"}, {{"WISP_HOME", edge_->data_dir()}});
  ASSERT_EQ(deployed.exit_code, 0) << deployed.out << deployed.err;

  std::atomic<bool> escalation_answered{false};
  json degraded;
  std::thread caller([&] {
    degraded = Invoke();
    escalation_answered = true;
  });
  acceptor.join();  // the escalation is connected and waiting for a reply that never comes
  ASSERT_GE(accepted.load(), 0);
  auto pong = edge_->Request("POST", "/v1/functions/pong/invoke", "");
  ASSERT_TRUE(pong.ok()) << pong.status().ToString();
  EXPECT_EQ(pong->status, 200);
  EXPECT_EQ(pong->body, "pong");
  EXPECT_FALSE(escalation_answered.load()) << "the escalation ended before its deadline";
  caller.join();
  EXPECT_EQ(degraded["degraded"], true) << degraded;
  EXPECT_EQ(degraded["label"].get<std::string>().rfind("small-", 0), 0u) << degraded;
  ::close(accepted);
  ::close(listener);
}

}  // namespace
}  // namespace wisp::testing
