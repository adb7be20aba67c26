// bench/mqtt_pipeline: the readings and arithmetic of mqtt_load (pipeline_payload.h), and the
// benchmark's two wisp functions run on the real Lua runtime. A wrong count or percentile here
// would make every figure of the benchmark wrong without anything failing.
#include "bench/mqtt_pipeline/pipeline_payload.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "runtime/lua/lua_runtime.h"
#include "test_fakes.h"
#include "wisp/function_spec.h"

namespace wisp {
namespace {

using bench::ActionCount;
using bench::FormatReading;
using bench::IsAction;
using bench::kVibrationLimit;
using bench::ParseSeqAndTime;
using bench::Quantile;
using bench::SteadyEventsPerSecond;

std::string Reading(std::int64_t seq, std::int64_t t_ns, std::int64_t action_every = 100) {
  char buf[256];
  const std::size_t n = FormatReading(buf, sizeof(buf), seq, t_ns, action_every);
  EXPECT_GT(n, 0u);
  return std::string(buf, n);
}

TEST(MqttPipelinePayloadTest, ReadingIsOneLineOfJsonOfAboutAHundredBytes) {
  const std::string text = Reading(1234567, 987654321012345);
  EXPECT_EQ(text.find('\n'), std::string::npos);  // the stock relay forwards line by line
  EXPECT_GE(text.size(), 80u);
  EXPECT_LE(text.size(), 120u);
  const nlohmann::json json = nlohmann::json::parse(text);
  EXPECT_EQ(json["seq"], 1234567);
  EXPECT_EQ(json["t"], 987654321012345);
  EXPECT_EQ(json["pump"].get<std::string>().size(), 3u);
  EXPECT_TRUE(json["vibration"].is_number());
}

TEST(MqttPipelinePayloadTest, OneReadingInAHundredIsAboveTheLimit) {
  std::int64_t above = 0;
  for (std::int64_t seq = 0; seq < 10'000; ++seq) {
    const double vibration = nlohmann::json::parse(Reading(seq, 1))["vibration"];
    EXPECT_EQ(vibration > kVibrationLimit, IsAction(seq, 100)) << "seq " << seq;
    if (vibration > kVibrationLimit) ++above;
  }
  EXPECT_EQ(above, 100);
  EXPECT_EQ(ActionCount(10'000, 100), 100);
  EXPECT_EQ(ActionCount(99, 100), 0);  // seq 99 is the first action
  EXPECT_EQ(ActionCount(100, 100), 1);
  EXPECT_EQ(ActionCount(57, 1), 57);  // every reading
}

TEST(MqttPipelinePayloadTest, ProbeIsAboveTheLimitWhateverTheMix) {
  const nlohmann::json probe = nlohmann::json::parse(Reading(-1, 5, 1'000'000));
  EXPECT_GT(probe["vibration"].get<double>(), kVibrationLimit);
  EXPECT_EQ(probe["seq"], -1);
}

TEST(MqttPipelinePayloadTest, TooSmallABufferIsRefused) {
  char buf[160];
  volatile std::size_t too_small = 20;  // not a constant: no compile-time truncation warning
  EXPECT_EQ(FormatReading(buf, too_small, 1, 1, 100), 0u);
}

TEST(MqttPipelinePayloadTest, ParsesSeqAndTimeFromReadingsAndAlerts) {
  std::int64_t seq = 0, t = 0;
  ASSERT_TRUE(ParseSeqAndTime(Reading(42, 123456789), &seq, &t));
  EXPECT_EQ(seq, 42);
  EXPECT_EQ(t, 123456789);

  const std::string alert =
      R"({"alert":"vibration","limit":7.1,"reading":)" + Reading(99, 5550001) + "}";
  ASSERT_TRUE(ParseSeqAndTime(alert, &seq, &t));
  EXPECT_EQ(seq, 99);
  EXPECT_EQ(t, 5550001);

  ASSERT_TRUE(ParseSeqAndTime(R"({"seq":-1,"t":7})", &seq, &t));
  EXPECT_EQ(seq, -1);
}

TEST(MqttPipelinePayloadTest, PayloadsWithoutBothNumbersAreStrays) {
  std::int64_t seq = 0, t = 0;
  EXPECT_FALSE(ParseSeqAndTime(R"({"seq":1})", &seq, &t));
  EXPECT_FALSE(ParseSeqAndTime(R"({"t":1})", &seq, &t));
  EXPECT_FALSE(ParseSeqAndTime(R"({"seq":"1","t":2})", &seq, &t));
  EXPECT_FALSE(ParseSeqAndTime(R"({"seq":1,"t":-})", &seq, &t));
  EXPECT_FALSE(ParseSeqAndTime(R"({"seq":1,"t":99999999999999999999999})", &seq, &t));
  EXPECT_FALSE(ParseSeqAndTime("", &seq, &t));
  // "unit" ends in t": but is not the key "t".
  EXPECT_FALSE(ParseSeqAndTime(R"({"seq":1,"unit":5})", &seq, &t));
}

TEST(MqttPipelinePayloadTest, QuantilesByNearestRank) {
  std::vector<std::int64_t> sorted;
  for (std::int64_t i = 1; i <= 1000; ++i) sorted.push_back(i);
  EXPECT_EQ(Quantile(sorted, 0.5), 500);
  EXPECT_EQ(Quantile(sorted, 0.99), 990);
  EXPECT_EQ(Quantile(sorted, 0.999), 999);
  EXPECT_EQ(Quantile(sorted, 1.0), 1000);
  EXPECT_EQ(Quantile({7}, 0.999), 7);
  EXPECT_EQ(Quantile({}, 0.5), 0);
}

TEST(MqttPipelinePayloadTest, SteadyRateLeavesOutStartAndTail) {
  // 1001 arrivals: a slow first 100 (1 ms apart), then 1 every 10 us, then a slow tail.
  std::vector<std::int64_t> at;
  std::int64_t t = 0;
  for (int i = 0; i <= 1000; ++i) {
    at.push_back(t);
    t += (i < 100 || i >= 900) ? 1'000'000 : 10'000;
  }
  EXPECT_DOUBLE_EQ(SteadyEventsPerSecond(at, 1.0), 100'000.0);
  // One output per 100 inputs: the input rate is 100 times the output rate.
  EXPECT_DOUBLE_EQ(SteadyEventsPerSecond(at, 100.0), 10'000'000.0);
  EXPECT_EQ(SteadyEventsPerSecond({1, 2, 3}, 1.0), 0.0);  // too few to tell
}

// --- The benchmark's functions on the real Lua runtime ------------------------------------------

class MqttPipelineFunctionTest : public ::testing::Test {
 protected:
  // Loads bench/mqtt_pipeline/functions/<name> as wisp would deploy it.
  InstancePtr Load(const std::string& name) {
    namespace fs = std::filesystem;
    const fs::path dir = fs::path(WISP_SOURCE_DIR) / "bench/mqtt_pipeline/functions" / name;
    std::ifstream in(dir / "wisp.yaml", std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    Result<std::vector<FunctionSpec>> specs = ParseManifest(text, (dir / "wisp.yaml").string());
    EXPECT_TRUE(specs.ok()) << specs.status().ToString();
    if (!specs.ok() || specs->size() != 1) return nullptr;
    spec_ = std::make_shared<FunctionSpec>(specs->front());
    EXPECT_EQ(spec_->mqtt_triggers.size(), 1u);
    Result<InstancePtr> instance = runtime_->CreateInstance(spec_, dir.string());
    EXPECT_TRUE(instance.ok()) << instance.status().ToString();
    return instance.ok() ? std::move(instance).value() : nullptr;
  }

  // Delivers `payload` as an MQTT reading, decoded the way the node decodes it.
  void Deliver(Instance& instance, const std::string& payload) {
    Event event;
    event.trigger = TriggerKind::kMqtt;
    event.topic = spec_->mqtt_triggers.front().topic;
    event.body = payload;
    nlohmann::json json = nlohmann::json::parse(payload, nullptr, /*allow_exceptions=*/false);
    if (!json.is_discarded()) event.json = &json;
    Result<Reply> reply = instance.Invoke(event, host_);
    EXPECT_TRUE(reply.ok()) << reply.status().ToString();
  }

  RuntimePtr runtime_ = MakeLuaRuntime();
  std::shared_ptr<FunctionSpec> spec_;
  testing::FakeStateStore store_;
  testing::RecordingHost host_{&store_, "bench"};
};

TEST_F(MqttPipelineFunctionTest, AlertActsOnlyOnReadingsAboveTheLimit) {
  InstancePtr alert = Load("alert");
  ASSERT_NE(alert, nullptr);
  EXPECT_EQ(spec_->mqtt_triggers.front().topic, "bench/alert/in");
  EXPECT_EQ(spec_->mqtt_triggers.front().qos, 1);
  for (std::int64_t seq = 0; seq < 300; ++seq) Deliver(*alert, Reading(seq, 1000 + seq));
  ASSERT_EQ(host_.emitted.size(), 3u);  // seq 99, 199, 299
  for (std::size_t i = 0; i < host_.emitted.size(); ++i) {
    const auto& emitted = host_.emitted[i];
    EXPECT_EQ(emitted.topic, "bench/alert/out");
    EXPECT_EQ(emitted.options.qos, 1);
    const nlohmann::json json = nlohmann::json::parse(emitted.payload);
    EXPECT_EQ(json["alert"], "vibration");
    EXPECT_EQ(json["reading"]["seq"], static_cast<std::int64_t>(i) * 100 + 99);
    std::int64_t seq = 0, t = 0;  // what mqtt_load reads back: exact, not through a double
    ASSERT_TRUE(ParseSeqAndTime(emitted.payload, &seq, &t));
    EXPECT_EQ(t, 1000 + seq);
  }
}

TEST_F(MqttPipelineFunctionTest, AlertIgnoresPayloadsThatAreNotReadings) {
  InstancePtr alert = Load("alert");
  ASSERT_NE(alert, nullptr);
  for (const char* payload :
       {"[1,2]", "42", R"("text")", R"({"vibration":"high"})", R"({"pump":"p1"})", "not json"}) {
    Deliver(*alert, payload);
  }
  EXPECT_TRUE(host_.emitted.empty());
}

TEST_F(MqttPipelineFunctionTest, EchoForwardsEveryReadingAsIs) {
  InstancePtr echo = Load("echo");
  ASSERT_NE(echo, nullptr);
  EXPECT_EQ(spec_->mqtt_triggers.front().topic, "bench/echo/in");
  const std::string below = Reading(3, 77), above = Reading(99, 78);
  Deliver(*echo, below);
  Deliver(*echo, above);
  ASSERT_EQ(host_.emitted.size(), 2u);
  EXPECT_EQ(host_.emitted[0].topic, "bench/echo/out");
  EXPECT_EQ(host_.emitted[0].payload, below);
  EXPECT_EQ(host_.emitted[1].payload, above);
  EXPECT_EQ(host_.emitted[1].options.qos, 1);
}

}  // namespace
}  // namespace wisp
