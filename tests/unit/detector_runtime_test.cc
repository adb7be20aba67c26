// The `detector:` manifest block and the detector runtime with a fake host: per-key streams,
// the emitted action, state kept in the store (a second instance continues the stream), and the
// errors for bad manifests and bad events.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "extensions/builtin.h"
#include "test_fakes.h"
#include "wisp/function_spec.h"
#include "wisp/runtime.h"

namespace wisp {
namespace {

using nlohmann::json;
using testing::FakeStateStore;
using testing::RecordingHost;

constexpr const char* kManifest = R"(version: 1
functions:
  pump-anomaly:
    runtime: detector
    detector:
      algorithm: gaussian
      params: { window: 50, min_points: 5 }
      key: topic:1
      value: reading.vibration
      emit: anomalies/{key}
)";

Result<FunctionSpec> ParseOne(const std::string& yaml) {
  auto specs = ParseManifest(yaml);
  if (!specs.ok()) return specs.status();
  return specs->front();
}

TEST(DetectorManifestTest, ParsesTheDetectorBlock) {
  auto spec = ParseOne(kManifest);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  ASSERT_TRUE(spec->detector.has_value());
  EXPECT_EQ(spec->detector->algorithm, "gaussian");
  EXPECT_EQ(spec->detector->params.at("window"), "50");
  EXPECT_EQ(spec->detector->key, "topic:1");
  EXPECT_EQ(spec->detector->value, "reading.vibration");
  EXPECT_EQ(spec->detector->emit, "anomalies/{key}");
  EXPECT_FALSE(spec->detector->emit_all);
}

TEST(DetectorManifestTest, RefusesMisplacedOrMalformedBlocks) {
  struct Case {
    const char* yaml;
    const char* expected;
  } cases[] = {
      {"version: 1\nfunctions:\n  f:\n    runtime: detector\n", "detector: is required"},
      {"version: 1\nfunctions:\n  f:\n    runtime: lua\n    handler: h.lua\n    detector: {}\n",
       "is only for runtime: detector"},
      {"version: 1\nfunctions:\n  f:\n    runtime: detector\n    detector: { key: segment }\n",
       "is not a key source"},
      {"version: 1\nfunctions:\n  f:\n    runtime: detector\n    detector: { emit: a/# }\n",
       "no wildcards"},
      {"version: 1\nfunctions:\n  f:\n    runtime: detector\n    detector: { treshold: 1 }\n",
       "treshold"},
      {"version: 1\nfunctions:\n  f:\n    runtime: detector\n    detector: { emit_all: yes }\n",
       "true or false"},
  };
  for (const Case& c : cases) {
    auto spec = ParseOne(c.yaml);
    ASSERT_FALSE(spec.ok()) << c.yaml;
    EXPECT_NE(spec.status().message().find(c.expected), std::string::npos)
        << spec.status().message() << " (want " << c.expected << ")";
  }
}

class DetectorRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RegisterBuiltinExtensions();
    auto spec = ParseOne(kManifest);
    ASSERT_TRUE(spec.ok());
    spec_ = std::make_shared<const FunctionSpec>(*spec);
    runtime_ = (*RuntimeRegistry::Get().Find("detector"))();
  }

  Result<Reply> Send(Instance& instance, const std::string& topic, const json& payload) {
    Event event;
    event.trigger = TriggerKind::kMqtt;
    event.topic = topic;
    std::string body = payload.dump();
    event.body = body;
    event.json = &payload;
    return instance.Invoke(event, host_);
  }

  FunctionSpecPtr spec_;
  RuntimePtr runtime_;
  FakeStateStore store_;
  RecordingHost host_{&store_};
};

TEST_F(DetectorRuntimeTest, ScoresPerKeyEmitsFlagsAndKeepsStateInTheStore) {
  auto instance = runtime_->CreateInstance(spec_, "");
  ASSERT_TRUE(instance.ok()) << instance.status().ToString();
  for (int i = 0; i < 20; ++i) {
    auto reply =
        Send(**instance, "plant/p1/vibration", {{"reading", {{"vibration", 1.0 + 0.1 * (i % 3)}}}});
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  }
  EXPECT_TRUE(host_.emitted.empty());
  // Another instance (another shard, or after a restart) continues p1's stream from the store.
  auto second = runtime_->CreateInstance(spec_, "");
  ASSERT_TRUE(second.ok());
  auto spike = Send(**second, "plant/p1/vibration", {{"reading", {{"vibration", 30.0}}}});
  ASSERT_TRUE(spike.ok());
  json reply = json::parse(spike->body);
  EXPECT_EQ(reply["key"], "p1");
  EXPECT_TRUE(reply["anomaly"].get<bool>());
  ASSERT_EQ(host_.emitted.size(), 1u);
  EXPECT_EQ(host_.emitted[0].topic, "anomalies/p1");
  EXPECT_EQ(json::parse(host_.emitted[0].payload)["value"].get<double>(), 30.0);
  // p2 is its own stream: its first reading is never flagged.
  auto fresh = Send(**second, "plant/p2/vibration", {{"reading", {{"vibration", 30.0}}}});
  ASSERT_TRUE(fresh.ok());
  EXPECT_FALSE(json::parse(fresh->body)["anomaly"].get<bool>());
  EXPECT_EQ(host_.emitted.size(), 1u);
}

TEST_F(DetectorRuntimeTest, BadEventsAndBadParametersAreErrors) {
  auto instance = runtime_->CreateInstance(spec_, "");
  ASSERT_TRUE(instance.ok());
  auto no_value = Send(**instance, "plant/p1/vibration", {{"reading", {{"temp", 1}}}});
  EXPECT_EQ(no_value.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(no_value.status().message().find("reading.vibration"), std::string::npos);
  auto no_segment = Send(**instance, "plant", {{"reading", {{"vibration", 1}}}});
  EXPECT_EQ(no_segment.status().code(), StatusCode::kInvalidArgument);

  FunctionSpec bad = *spec_;
  bad.detector->params["window"] = "1";
  auto refused = runtime_->CreateInstance(std::make_shared<const FunctionSpec>(bad), "");
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("window"), std::string::npos);
}

}  // namespace
}  // namespace wisp
