// The `detector:` manifest block and the detector runtime with a fake host: per-key streams,
// the emitted action, state kept in the store (a second instance continues the stream), and the
// errors for bad manifests and bad events.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>

#include "extensions/builtin.h"
#include "models/model_store.h"
#include "runtime/model/model_runtime.h"
#include "test_fakes.h"
#include "wisp/function_spec.h"
#include "wisp/runtime.h"

namespace wisp {
namespace {

using nlohmann::json;
using testing::FakeStateStore;
using testing::RecordingHost;

std::string ReadTestFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

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

constexpr const char* kRulManifest = R"(version: 1
functions:
  bearing-rul:
    runtime: detector
    detector:
      algorithm: rul
      params: { threshold: 20, half_life: 50, horizon: 40, time_field: t }
      key: field:bearing
      value: health
      emit: maintenance/{key}
)";

TEST_F(DetectorRuntimeTest, RemainingLifePerKeyAlertsWithinTheHorizonAndKeepsState) {
  auto spec = ParseOne(kRulManifest);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  auto rul_spec = std::make_shared<const FunctionSpec>(*spec);
  auto instance = runtime_->CreateInstance(rul_spec, "");
  ASSERT_TRUE(instance.ok()) << instance.status().ToString();
  // Bearing b1: health 100 falling 0.5/s, crossing 20 at t = 160; b2 stays flat.
  auto send = [&](Instance& to, const char* bearing, double t, double health) {
    auto reply = Send(to, "plant/rul", {{"bearing", bearing}, {"t", t}, {"health", health}});
    EXPECT_TRUE(reply.ok()) << reply.status().ToString();
    return reply.ok() ? json::parse(reply->body) : json();
  };
  json last;
  for (int t = 0; t < 100; ++t) {
    last = send(**instance, "b1", t, 100 - 0.5 * t + 0.2 * ((t * 7) % 3 - 1));
    send(**instance, "b2", t, 80 + 0.2 * ((t * 5) % 3 - 1));
  }
  EXPECT_EQ(last["key"], "b1");
  ASSERT_TRUE(last["rul_seconds"].is_number()) << last.dump();
  double truth = 160 - 99;
  EXPECT_NEAR(last["rul_seconds"].get<double>(), truth, 5);
  EXPECT_LE(last["low"].get<double>(), truth);
  EXPECT_GE(last["high"].get<double>(), truth);
  EXPECT_NEAR(last["trend"].get<double>(), -0.5, 0.02);
  EXPECT_FALSE(last["alert"].get<bool>());
  EXPECT_TRUE(host_.emitted.empty());

  // Another instance continues b1 from the store; inside the 40 s horizon it alerts.
  auto second = runtime_->CreateInstance(rul_spec, "");
  ASSERT_TRUE(second.ok());
  for (int t = 100; t < 140; ++t) last = send(**second, "b1", t, 100 - 0.5 * t);
  EXPECT_TRUE(last["alert"].get<bool>()) << last.dump();
  ASSERT_FALSE(host_.emitted.empty());
  EXPECT_EQ(host_.emitted[0].topic, "maintenance/b1");
  json flat = send(**second, "b2", 100, 80);
  // Flat: no crossing within reach; at most a remote estimate whose high end is open.
  EXPECT_TRUE(flat["high"].is_null()) << flat.dump();
  EXPECT_FALSE(flat["alert"].get<bool>());

  // Errors: no time field, no threshold.
  auto no_time = Send(**second, "plant/rul", {{"bearing", "b1"}, {"health", 3}});
  EXPECT_NE(no_time.status().message().find("time field 't'"), std::string::npos);
  FunctionSpec bad = *spec;
  bad.detector->params.erase("threshold");
  auto refused = runtime_->CreateInstance(std::make_shared<const FunctionSpec>(bad), "");
  EXPECT_NE(refused.status().message().find("threshold"), std::string::npos);
}

// A host whose Infer runs registry models for real (the node's path: InferWithThreadSessions).
class ModelHost : public RecordingHost {
 public:
  ModelHost(StateStore* store, ModelStore* models) : RecordingHost(store), models_(models) {}
  Result<std::string> Infer(std::string_view model, std::string_view inputs_json) override {
    return InferWithThreadSessions(models_, model, inputs_json);
  }

 private:
  ModelStore* models_;
};

// Healthy pump spectra as tools/models/make_models.py draws them (the autoencoder's training
// distribution): 16 band energies, scaled by the load, with noise; wear adds high-band energy.
std::vector<double> PumpBands(std::mt19937_64& rng, bool worn) {
  static constexpr double kBase[16] = {0.2,  1.0,  0.3,  0.5,  0.15, 0.3,  0.1,  0.12,
                                       0.08, 0.06, 0.05, 0.05, 0.04, 0.04, 0.03, 0.03};
  std::uniform_real_distribution<double> load(0.7, 1.3), wear(0.3, 0.6);
  std::normal_distribution<double> noise(0, 0.01);
  double l = load(rng);
  std::vector<double> bands(16);
  for (int i = 0; i < 16; ++i)
    bands[i] = kBase[i] * l + noise(rng) + (worn && i >= 10 ? wear(rng) : 0);
  return bands;
}

TEST_F(DetectorRuntimeTest, AutoencoderScoresReconstructionErrorAgainstAnAdaptiveThreshold) {
  char pattern[] = "/tmp/wisp-detector-ae-XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  std::string dir = pattern;
  ModelStore models(dir + "/models");
  std::ifstream file(std::string(WISP_SOURCE_DIR) + "/tests/data/models/pump_autoencoder.onnx",
                     std::ios::binary);
  std::string onnx((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  ASSERT_TRUE(models.Push("pump-ae", "1", onnx).ok());
  ModelHost host(&store_, &models);

  auto spec = ParseOne(R"(version: 1
functions:
  pump-ae:
    runtime: detector
    detector:
      algorithm: autoencoder
      params: { model: pump-ae@1, k: 5, min_points: 30 }
      key: field:pump
      value: bands
      emit: alerts/{key}
)");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  auto ae_spec = std::make_shared<const FunctionSpec>(*spec);
  auto instance = runtime_->CreateInstance(ae_spec, "");
  ASSERT_TRUE(instance.ok()) << instance.status().ToString();
  auto send = [&](const std::vector<double>& bands) {
    json payload = {{"pump", "p1"}, {"bands", bands}};
    Event event;
    event.topic = "plant/p1/pump";
    std::string body = payload.dump();
    event.body = body;
    event.json = &payload;
    auto reply = (*instance)->Invoke(event, host);
    EXPECT_TRUE(reply.ok()) << reply.status().ToString();
    return reply.ok() ? json::parse(reply->body) : json();
  };

  // The reference case from numpy: the error is the model's mean squared reconstruction error.
  json expected = json::parse(ReadTestFile(std::string(WISP_SOURCE_DIR) +
                                           "/tests/data/models/pump_autoencoder.expected.json"));
  std::vector<double> reference = expected["cases"][0]["inputs"]["x"]["data"];
  json first = send(reference);
  double mse = expected["mse"][0].get<double>();
  EXPECT_NEAR(first["error"].get<double>(), mse, 1e-5 + 1e-3 * mse) << first.dump();
  EXPECT_TRUE(first["threshold"].is_null());  // still learning

  std::mt19937_64 rng(42);
  int healthy_flags = 0;
  for (int i = 0; i < 200; ++i) healthy_flags += send(PumpBands(rng, false))["anomaly"].get<bool>();
  EXPECT_LE(healthy_flags, 2);
  json worn = send(PumpBands(rng, true));
  EXPECT_TRUE(worn["anomaly"].get<bool>()) << worn.dump();
  EXPECT_GT(worn["score"].get<double>(), 0.5);
  EXPECT_GT(worn["error"].get<double>(), worn["threshold"].get<double>());
  ASSERT_FALSE(host.emitted.empty());
  EXPECT_EQ(host.emitted.back().topic, "alerts/p1");
  // The worn reading did not raise the threshold: the next healthy one is still quiet.
  json after = send(PumpBands(rng, false));
  EXPECT_FALSE(after["anomaly"].get<bool>()) << after.dump();
  EXPECT_EQ(after["threshold"].get<double>(), worn["threshold"].get<double>());

  // Errors: a vector the model cannot take, an unknown model, a missing model parameter.
  json wrong = {{"pump", "p1"}, {"bands", {1, 2, 3}}};
  Event event;
  std::string body = wrong.dump();
  event.body = body;
  event.json = &wrong;
  EXPECT_FALSE((*instance)->Invoke(event, host).ok());
  FunctionSpec unknown = *spec;
  unknown.detector->params["model"] = "nosuch";
  auto unknown_instance =
      runtime_->CreateInstance(std::make_shared<const FunctionSpec>(unknown), "");
  ASSERT_TRUE(unknown_instance.ok());
  json payload = {{"pump", "p1"}, {"bands", reference}};
  body = payload.dump();
  event.body = body;
  event.json = &payload;
  EXPECT_EQ((*unknown_instance)->Invoke(event, host).status().code(), StatusCode::kNotFound);
  FunctionSpec no_model = *spec;
  no_model.detector->params.erase("model");
  auto refused = runtime_->CreateInstance(std::make_shared<const FunctionSpec>(no_model), "");
  EXPECT_NE(refused.status().message().find("model"), std::string::npos);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace wisp
