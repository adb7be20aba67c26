// Hierarchical inference: a model function escalates low-confidence answers to an upstream node
// (a fake caller here; tests/integration/model_upstream_test.cc uses two real nodes).
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <gtest/gtest.h>
#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include "extensions/builtin.h"
#include "runtime/model/model_runtime.h"
#include "test_fakes.h"

namespace wisp {
namespace {

using nlohmann::json;
using testing::FakeStateStore;
using testing::RecordingHost;

class ModelUpstreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RegisterBuiltinExtensions();
    char pattern[] = "/tmp/wisp-model-upstream-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    std::filesystem::copy_file(std::string(WISP_SOURCE_DIR) + "/tests/data/models/mlp.onnx",
                               dir_ + "/mlp.onnx");
  }
  void TearDown() override {
    SetModelUpstreamCaller(nullptr);
    SetModelAsyncUpstreamCaller(nullptr);
    std::filesystem::remove_all(dir_);
  }

  Result<InstancePtr> Function(double confidence, const std::string& extra = "") {
    std::ofstream(dir_ + "/model.yaml")
        << "file: ./mlp.onnx\n"
           "input: {fields: [a, b, c, d]}\n"
           "output: {kind: argmax, labels: [small-a, small-b, small-c]}\n"
           "upstream: {url: 'http://upstream.test:8080', function: big, confidence: "
        << confidence << ", deadline: 150ms" << extra << "}\n";
    auto spec = std::make_shared<FunctionSpec>();
    spec->name = "classify";
    spec->runtime = "model";
    spec->handler_file = "model.yaml";
    return MakeModelRuntime(nullptr)->CreateInstance(spec, dir_);
  }
  json Call(Instance& instance) {
    Event event;
    event.body = event_text_;
    auto reply = instance.Invoke(event, host_);
    EXPECT_TRUE(reply.ok()) << reply.status().ToString();
    return reply.ok() ? json::parse(reply->body) : json();
  }

  std::string dir_;
  const std::string event_text_ = json{{"a", 0.5}, {"b", -1}, {"c", 0.25}, {"d", 1}}.dump();
  FakeStateStore state_;
  RecordingHost host_{&state_};
};

TEST_F(ModelUpstreamTest, LowConfidenceIsAnsweredUpstream) {
  std::string seen_url, seen_target, seen_body;
  std::chrono::milliseconds seen_timeout{0};
  SetModelUpstreamCaller([&](const std::string& url, const std::string& target,
                             const std::string& body, std::chrono::milliseconds timeout) {
    seen_url = url;
    seen_target = target;
    seen_body = body;
    seen_timeout = timeout;
    return Result<UpstreamReply>(UpstreamReply{200, R"({"label":"big-b","confidence":0.97})"});
  });
  auto instance = Function(0.99);  // the mlp's top score is far below 0.99
  ASSERT_TRUE(instance.ok()) << instance.status().ToString();
  const auto escalations = ModelUpstreamMetrics().escalations.load();
  json body = Call(**instance);
  EXPECT_EQ(body["label"], "big-b") << body;
  EXPECT_EQ(body["escalated"], true);
  EXPECT_EQ(body["local"]["label"].get<std::string>().rfind("small-", 0), 0u) << body;
  EXPECT_EQ(seen_url, "http://upstream.test:8080");
  EXPECT_EQ(seen_target, "/v1/functions/big/invoke");
  EXPECT_EQ(seen_body, event_text_);
  EXPECT_EQ(seen_timeout, std::chrono::milliseconds(150));
  EXPECT_EQ(ModelUpstreamMetrics().escalations.load(), escalations + 1);
}

TEST_F(ModelUpstreamTest, ConfidentAnswersStayLocal) {
  int calls = 0;
  SetModelUpstreamCaller([&](auto&&...) {
    ++calls;
    return Result<UpstreamReply>(UpstreamReply{200, "{}"});
  });
  auto instance = Function(-1);  // every answer is confident enough
  ASSERT_TRUE(instance.ok()) << instance.status().ToString();
  json body = Call(**instance);
  EXPECT_EQ(calls, 0);
  EXPECT_FALSE(body.contains("escalated")) << body;
  EXPECT_FALSE(body.contains("degraded")) << body;
}

TEST_F(ModelUpstreamTest, UnreachableOrFailingUpstreamGivesADegradedLocalAnswer) {
  SetModelUpstreamCaller([](auto&&...) {
    return Result<UpstreamReply>(DeadlineExceeded("http://upstream.test:8080: timed out"));
  });
  auto instance = Function(0.99);
  ASSERT_TRUE(instance.ok());
  const auto degraded = ModelUpstreamMetrics().degraded.load();
  json body = Call(**instance);
  EXPECT_EQ(body["degraded"], true) << body;
  EXPECT_EQ(body["label"].get<std::string>().rfind("small-", 0), 0u) << body;
  EXPECT_NE(body["upstream_error"].get<std::string>().find("timed out"), std::string::npos);

  SetModelUpstreamCaller([](auto&&...) {
    return Result<UpstreamReply>(UpstreamReply{500, R"({"error":"boom"})"});
  });
  body = Call(**instance);
  EXPECT_EQ(body["degraded"], true) << body;
  EXPECT_EQ(ModelUpstreamMetrics().degraded.load(), degraded + 2);
}

TEST_F(ModelUpstreamTest, AsynchronousCallsWaitForTheUpstreamOnTheLoop) {
  SetModelUpstreamCaller([](auto&&...) -> Result<UpstreamReply> {
    ADD_FAILURE() << "the blocking caller was used by an asynchronous call";
    return Unavailable("blocking");
  });
  boost::asio::io_context io;
  std::vector<AsyncUpstreamDone> waiting;  // answered by the test, like a slow upstream
  SetModelAsyncUpstreamCaller([&](boost::asio::io_context& loop, const std::string& url,
                                  const std::string& target, std::string body,
                                  std::chrono::milliseconds timeout, AsyncUpstreamDone done) {
    EXPECT_EQ(&loop, &io);
    EXPECT_EQ(url, "http://upstream.test:8080");
    EXPECT_EQ(target, "/v1/functions/big/invoke");
    EXPECT_EQ(body, event_text_);
    EXPECT_EQ(timeout, std::chrono::milliseconds(150));
    waiting.push_back(std::move(done));
  });
  auto instance = Function(0.99);
  ASSERT_TRUE(instance.ok()) << instance.status().ToString();
  Event event;
  event.body = event_text_;
  std::vector<std::optional<Result<Reply>>> replies(2);
  for (auto& reply : replies) {
    (*instance)->InvokeAsync(event, host_, io,
                             [&reply](Result<Reply> r) { reply.emplace(std::move(r)); });
  }
  ASSERT_EQ(waiting.size(), 2u);  // both calls escalated; neither holds the thread
  EXPECT_FALSE(replies[0] || replies[1]);
  waiting[0](UpstreamReply{200, R"({"label":"big-c","confidence":0.9})"});
  waiting[1](DeadlineExceeded("http://upstream.test:8080: timed out"));
  ASSERT_TRUE(replies[0] && replies[0]->ok() && replies[1] && replies[1]->ok());
  json escalated = json::parse((*replies[0])->body);
  EXPECT_EQ(escalated["label"], "big-c") << escalated;
  EXPECT_EQ(escalated["escalated"], true);
  json degraded = json::parse((*replies[1])->body);
  EXPECT_EQ(degraded["degraded"], true) << degraded;
  EXPECT_EQ(degraded["label"].get<std::string>().rfind("small-", 0), 0u) << degraded;
}

TEST_F(ModelUpstreamTest, RefusesUpstreamWithoutArgmaxOrWithABadDeadline) {
  std::ofstream(dir_ + "/model.yaml") << "file: ./mlp.onnx\n"
                                         "input: {fields: [a, b, c, d]}\n"
                                         "upstream: {url: 'http://x:1', function: big}\n";
  auto spec = std::make_shared<FunctionSpec>();
  spec->name = "classify";
  spec->runtime = "model";
  spec->handler_file = "model.yaml";
  auto raw = MakeModelRuntime(nullptr)->CreateInstance(spec, dir_);
  ASSERT_FALSE(raw.ok());
  EXPECT_NE(raw.status().message().find("argmax"), std::string::npos);
  std::ofstream(dir_ + "/model.yaml") << "file: ./mlp.onnx\n"
                                         "input: {fields: [a, b, c, d]}\n"
                                         "output: {kind: argmax}\n"
                                         "upstream: {url: 'http://x:1', function: big, "
                                         "deadline: soon}\n";
  EXPECT_FALSE(MakeModelRuntime(nullptr)->CreateInstance(spec, dir_).ok());
}

}  // namespace
}  // namespace wisp
