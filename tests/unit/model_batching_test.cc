// Micro-batching in the "model" runtime: concurrent asynchronous calls share one backend run and
// each gets the answer it would have had alone; models that cannot batch are refused.
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>

#include <gtest/gtest.h>
#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include "extensions/builtin.h"
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

class ModelBatchingTest : public testing::ModelFunctionTest {
 protected:
  Result<InstancePtr> Create(const std::string& name, const std::string& yaml,
                             int concurrency = 64) {
    Write("model.yaml", yaml);
    return MakeModelRuntime(nullptr)->CreateInstance(Spec(name, concurrency), dir_);
  }

  // One asynchronous call whose event and reply live here until the test ends.
  struct Call {
    std::string body;
    Event event;
    std::optional<Result<Reply>> reply;
  };
  // Starts one call per body on `instance`; the replies arrive as `io` runs.
  std::vector<std::unique_ptr<Call>> Start(Instance& instance, const std::vector<json>& bodies) {
    std::vector<std::unique_ptr<Call>> calls;
    for (const json& body : bodies) {
      auto call = std::make_unique<Call>();
      call->body = body.dump();
      call->event.body = call->body;
      Call* raw = call.get();
      instance.InvokeAsync(raw->event, host_, io_,
                           [raw](Result<Reply> reply) { raw->reply.emplace(std::move(reply)); });
      calls.push_back(std::move(call));
    }
    return calls;
  }
  std::string Alone(Instance& instance, const json& body) {
    Event event;
    std::string text = body.dump();
    event.body = text;
    auto reply = instance.Invoke(event, host_);
    EXPECT_TRUE(reply.ok()) << reply.status().ToString();
    return reply.ok() ? reply->body : "";
  }
  static std::vector<json> MlpEvents(int count) {
    std::vector<json> events;
    for (int i = 0; i < count; ++i) {
      events.push_back({{"a", 0.1 * i}, {"b", -0.3 * i}, {"c", 1.0 - i}, {"d", 0.5}});
    }
    return events;
  }

  FakeStateStore store_;
  RecordingHost host_{&store_};
  boost::asio::io_context io_;
};

TEST_F(ModelBatchingTest, WaitingCallsShareOneRunAndGetTheirOwnAnswers) {
  Write("mlp.onnx", ReadFile(ModelPath("mlp.onnx")));
  const std::string plain = "file: ./mlp.onnx\ninput: {fields: [a, b, c, d]}\n";
  auto alone = Create("mlp-alone", plain + "output: {kind: argmax, labels: [x, y, z]}\n");
  auto batched = Create("mlp-batched", plain +
                                           "output: {kind: argmax, labels: [x, y, z]}\n"
                                           "batching: {max_batch: 8, max_delay: 0ms}\n");
  ASSERT_TRUE(alone.ok()) << alone.status().ToString();
  ASSERT_TRUE(batched.ok()) << batched.status().ToString();
  const auto metrics = ModelFunctionMetricsFor("mlp-batched");
  const auto runs_before = metrics->runs.load();
  const auto rows_before = metrics->rows.load();

  const std::vector<json> events = MlpEvents(5);
  auto calls = Start(**batched, events);
  for (const auto& call : calls) EXPECT_FALSE(call->reply) << "answered before the flush";
  io_.run();
  for (std::size_t i = 0; i < calls.size(); ++i) {
    ASSERT_TRUE(calls[i]->reply && calls[i]->reply->ok()) << i;
    EXPECT_EQ(json::parse((*calls[i]->reply)->body), json::parse(Alone(**alone, events[i]))) << i;
  }
  EXPECT_EQ(metrics->runs.load() - runs_before, 1u);  // five calls, one backend run
  EXPECT_EQ(metrics->rows.load() - rows_before, 5u);
}

TEST_F(ModelBatchingTest, AFullBatchRunsAtOnceAndTheRestWaitForTheDelay) {
  Write("mlp.onnx", ReadFile(ModelPath("mlp.onnx")));
  auto batched = Create("mlp-full",
                        "file: ./mlp.onnx\ninput: {fields: [a, b, c, d]}\n"
                        "batching: {max_batch: 4, max_delay: 20ms}\n");
  ASSERT_TRUE(batched.ok()) << batched.status().ToString();
  const auto metrics = ModelFunctionMetricsFor("mlp-full");
  const auto runs_before = metrics->runs.load();
  auto calls = Start(**batched, MlpEvents(6));
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(calls[i]->reply) << "call " << i << " of a full batch";
  EXPECT_FALSE(calls[4]->reply);
  EXPECT_FALSE(calls[5]->reply);
  io_.run();  // the timer flushes the last two
  for (const auto& call : calls) ASSERT_TRUE(call->reply && call->reply->ok());
  EXPECT_EQ(metrics->runs.load() - runs_before, 2u);
}

TEST_F(ModelBatchingTest, ReconstructionErrorIsPerRow) {
  Write("ae.onnx", ReadFile(ModelPath("pump_autoencoder.onnx")));
  const std::string plain =
      "file: ./ae.onnx\ninput: {field: bands}\n"
      "output: {kind: reconstruction_error, threshold: 0.001, alert_topic: plant/alerts}\n";
  auto alone = Create("ae-alone", plain);
  auto batched = Create("ae-batched", plain + "batching: {max_batch: 16}\n");
  ASSERT_TRUE(alone.ok() && batched.ok()) << batched.status().ToString();
  json expected = json::parse(ReadFile(ModelPath("pump_autoencoder.expected.json")));
  std::vector<json> events;
  for (const json& c : expected["cases"]) events.push_back({{"bands", c["inputs"]["x"]["data"]}});
  auto calls = Start(**batched, events);
  io_.run();
  std::size_t anomalies = 0;
  for (std::size_t i = 0; i < calls.size(); ++i) {
    ASSERT_TRUE(calls[i]->reply && calls[i]->reply->ok()) << i;
    json body = json::parse((*calls[i]->reply)->body);
    const double mse = expected["mse"][i].get<double>();
    EXPECT_NEAR(body["error"].get<double>(), mse, 1e-5 + mse * 1e-3) << body;
    anomalies += body["anomaly"].get<bool>();
  }
  EXPECT_EQ(host_.emitted.size(), anomalies);  // each anomaly was emitted once
  EXPECT_GT(anomalies, 0u);
}

TEST_F(ModelBatchingTest, BadEventsFailAloneAndTheBatchStillAnswers) {
  Write("mlp.onnx", ReadFile(ModelPath("mlp.onnx")));
  auto batched = Create("mlp-mixed",
                        "file: ./mlp.onnx\ninput: {fields: [a, b, c, d]}\n"
                        "batching: {max_batch: 8}\n");
  ASSERT_TRUE(batched.ok());
  std::vector<json> events = MlpEvents(3);
  events.insert(events.begin() + 1, json{{"a", 1}});  // no b, c, d
  auto calls = Start(**batched, events);
  ASSERT_TRUE(calls[1]->reply);  // refused before it joins a batch
  EXPECT_EQ(calls[1]->reply->status().code(), StatusCode::kFunctionError);
  io_.run();
  for (std::size_t i : {0u, 2u, 3u}) ASSERT_TRUE(calls[i]->reply && calls[i]->reply->ok()) << i;
}

TEST_F(ModelBatchingTest, ModelsAndSettingsThatCannotBatchAreRefusedWithTheReason) {
  Write("lstm.onnx", ReadFile(ModelPath("lstm.onnx")));
  auto lstm = Create("lstm", "file: ./lstm.onnx\ninput: {field: x}\nbatching: {max_batch: 4}\n");
  ASSERT_FALSE(lstm.ok());
  EXPECT_NE(lstm.status().message().find("batch dimension"), std::string::npos)
      << lstm.status().message();

  Write("mlp.onnx", ReadFile(ModelPath("mlp.onnx")));
  auto one_at_a_time = Create(
      "mlp-c1", "file: ./mlp.onnx\ninput: {fields: [a, b, c, d]}\nbatching: {max_batch: 4}\n",
      /*concurrency=*/1);
  ASSERT_FALSE(one_at_a_time.ok());
  EXPECT_NE(one_at_a_time.status().message().find("concurrency.max"), std::string::npos)
      << one_at_a_time.status().message();

  auto huge = Create("mlp-huge",
                     "file: ./mlp.onnx\ninput: {fields: [a, b, c, d]}\nbatching: {max_batch: 0}\n");
  ASSERT_FALSE(huge.ok());
  EXPECT_NE(huge.status().message().find("max_batch"), std::string::npos);
}

}  // namespace
}  // namespace wisp
