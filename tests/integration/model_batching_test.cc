// Micro-batching through a real wispd: concurrent HTTP invokes of a model function with
// `batching:` share backend runs and each caller gets its own row's answer, equal to numpy's.
#include <gtest/gtest.h>

#include <iostream>
#include <memory>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness.h"

namespace wisp::testing {
namespace {

using nlohmann::json;

TEST(ModelBatchingTest, ConcurrentCallsShareRunsAndAnswerLikeNumpy) {
  TempDir tmp;
  const std::string data_dir = tmp.path() + "/data";
  NodeProcess node(data_dir, tmp.path() + "/wispd.log");
  // One shard, so every call meets the same instance.
  ASSERT_TRUE(node.Start({"--shards", "1"}).ok());
  tmp.Write("fn/wisp.yaml", R"yaml(
version: 1
functions:
  mlp-batched:
    runtime: model
    handler: ./model.yaml
    concurrency: { max: 64 }
    scale: { min: 1, max: 1 }
)yaml");
  // A long max_delay so that calls sent together meet in a batch even on a loaded machine.
  tmp.Write("fn/model.yaml",
            "file: ./mlp.onnx\n"
            "input: {field: x}\n"
            "output: {kind: raw}\n"
            "batching: {max_batch: 64, max_delay: 200ms}\n");
  tmp.Write("fn/mlp.onnx", ReadTextFile(SourceDir() + "/tests/data/models/mlp.onnx"));
  CommandResult deployed = RunCli({"deploy", tmp.path() + "/fn"}, {{"WISP_HOME", data_dir}});
  ASSERT_EQ(deployed.exit_code, 0) << deployed.out << deployed.err;

  const json expected =
      json::parse(ReadTextFile(SourceDir() + "/tests/data/models/mlp.expected.json"));
  const std::size_t cases = expected["cases"].size();
  constexpr int kClients = 24;
  std::vector<Result<HttpResponse>> replies(kClients, Status(Internal("not sent")));
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      json event = {{"x", expected["cases"][i % cases]["inputs"]["x"]["data"]}};
      replies[i] = node.Request("POST", "/v1/functions/mlp-batched/invoke", event.dump(),
                                {{"Content-Type", "application/json"}});
    });
  }
  for (auto& client : clients) client.join();
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(replies[i].ok()) << replies[i].status().ToString();
    ASSERT_EQ(replies[i]->status, 200) << replies[i]->body;
    const json got = json::parse(replies[i]->body)["outputs"]["y"];
    const auto want =
        expected["cases"][i % cases]["outputs"]["y"]["data"].get<std::vector<double>>();
    ASSERT_EQ(got.size(), 1u) << got;  // one row: the caller's own
    ASSERT_EQ(got[0].size(), want.size()) << got;
    for (std::size_t k = 0; k < want.size(); ++k) {
      EXPECT_NEAR(got[0][k].get<double>(), want[k], 1e-4) << "client " << i << ": " << got;
    }
  }
  // The same event as CBOR (issue 5: fields of a JSON or CBOR event) gets the same answer.
  std::string cbor;
  json::to_cbor(json{{"x", expected["cases"][0]["inputs"]["x"]["data"]}}, cbor);
  auto cbor_reply = node.Request("POST", "/v1/functions/mlp-batched/invoke", cbor,
                                 {{"Content-Type", "application/cbor"}});
  ASSERT_TRUE(cbor_reply.ok());
  ASSERT_EQ(cbor_reply->status, 200) << cbor_reply->body;
  const auto want = expected["cases"][0]["outputs"]["y"]["data"].get<std::vector<double>>();
  const json got = json::parse(cbor_reply->body)["outputs"]["y"][0];
  ASSERT_EQ(got.size(), want.size()) << got;
  for (std::size_t k = 0; k < want.size(); ++k) EXPECT_NEAR(got[k].get<double>(), want[k], 1e-4);

  auto metrics = node.Request("GET", "/metrics");
  ASSERT_TRUE(metrics.ok());
  const auto runs = FindMetric(metrics->body, "wisp_model_runs_total", "mlp-batched");
  const auto rows = FindMetric(metrics->body, "wisp_model_inferences_total", "mlp-batched");
  ASSERT_TRUE(runs && rows) << metrics->body;
  EXPECT_GE(*rows, kClients + 1);
  EXPECT_LT(*runs, *rows) << "no two calls shared a run";
  if (HasFailure()) std::cerr << "---- wispd log ----\n" << node.Log() << "\n";
}

}  // namespace
}  // namespace wisp::testing
