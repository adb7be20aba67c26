// Model rollout: channels in the registry, validation of a stable switch against a reference
// set, the canary split, the automatic canary rollback and a function following a switch.
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "extensions/builtin.h"
#include "models/model_store.h"
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

class ModelRolloutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RegisterBuiltinExtensions();
    char pattern[] = "/tmp/wisp-model-rollout-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    store_ = std::make_unique<ModelStore>(dir_ + "/data");
    // Two versions of the same network, and one whose input does not fit the function.
    ASSERT_TRUE(store_->Push("mlp", "1", ReadFile(ModelPath("mlp.onnx"))).ok());
    ASSERT_TRUE(store_->Push("mlp", "2", ReadFile(ModelPath("mlp.onnx"))).ok());
    ASSERT_TRUE(store_->Push("mlp", "misfit", ReadFile(ModelPath("pump_autoencoder.onnx"))).ok());
    reference_ = json::parse(ReadFile(ModelPath("mlp.expected.json")));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  Result<ModelChannels> Promote(const std::string& ref, const std::string& channel,
                                json reference = nullptr, int percent = 10, int window = 20,
                                double max_error_rate = 0.2) {
    PromoteRequest request;
    request.ref = ref;
    request.channel = channel;
    request.reference = std::move(reference);
    request.percent = percent;
    request.window = window;
    request.max_error_rate = max_error_rate;
    return store_->Promote(request);
  }

  InstancePtr Function(const std::string& model) {
    std::ofstream(dir_ + "/model.yaml")
        << "model: " << model << "\ninput: {fields: [a, b, c, d]}\n";
    auto spec = std::make_shared<FunctionSpec>();
    spec->name = "classify";
    spec->runtime = "model";
    spec->handler_file = "model.yaml";
    auto instance = MakeModelRuntime(store_.get())->CreateInstance(spec, dir_);
    EXPECT_TRUE(instance.ok()) << instance.status().ToString();
    return instance.ok() ? std::move(*instance) : nullptr;
  }

  // Calls `instance` `n` times; returns how many answers each version gave ("failed" counts
  // errors).
  std::map<std::string, int> CallMany(Instance& instance, int n) {
    std::map<std::string, int> by_version;
    const json body = {{"a", 0.5}, {"b", -1}, {"c", 0.25}, {"d", 1}};
    const std::string text = body.dump();
    for (int i = 0; i < n; ++i) {
      Event event;
      event.body = text;
      event.json = &body;
      auto reply = instance.Invoke(event, host_);
      if (!reply.ok()) {
        ++by_version["failed"];
        continue;
      }
      ++by_version[json::parse(reply->body).value("version", "none")];
    }
    return by_version;
  }

  std::string dir_;
  std::unique_ptr<ModelStore> store_;
  json reference_;
  FakeStateStore state_;
  RecordingHost host_{&state_};
};

TEST_F(ModelRolloutTest, StableSwitchIsRefusedWhenAReferenceCaseIsOffAndNamesIt) {
  EXPECT_FALSE(Promote("mlp@1", "stable").ok());  // a stable switch needs a reference set
  ASSERT_TRUE(Promote("mlp@1", "stable", reference_).ok());

  json wrong = reference_;
  wrong["cases"][1]["outputs"]["y"]["data"][2] =
      wrong["cases"][1]["outputs"]["y"]["data"][2].get<double>() + 0.5;
  auto refused = Promote("mlp@2", "stable", wrong);
  ASSERT_FALSE(refused.ok());
  const std::string message(refused.status().message());
  EXPECT_NE(message.find("reference case 1"), std::string::npos) << message;
  EXPECT_NE(message.find("y[2]"), std::string::npos) << message;
  EXPECT_NE(message.find("off by 0.5"), std::string::npos) << message;

  // A shape that does not hold exactly its data is not unfolded (a [1e6, 1e6] shape must not
  // build a trillion elements): the case is refused like any other mismatch.
  json huge = reference_;
  huge["cases"][0]["outputs"]["y"]["shape"] = json::array({1000000, 1000000});
  EXPECT_FALSE(Promote("mlp@2", "stable", huge).ok());

  // A model whose inputs do not even fit is refused too, and stable never moved.
  EXPECT_FALSE(Promote("mlp@misfit", "stable", reference_).ok());
  auto channels = store_->Channels("mlp");
  ASSERT_TRUE(channels.ok());
  EXPECT_EQ(channels->stable, "1");
  auto resolved = store_->Describe("mlp@stable");
  ASSERT_TRUE(resolved.ok());
  EXPECT_EQ(resolved->version, "1");
}

TEST_F(ModelRolloutTest, PromoteAndRollbackMoveTheChannels) {
  EXPECT_EQ(store_->Describe("mlp@stable").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(Promote("mlp@1", "stable", reference_).ok());
  auto promoted = Promote("mlp@2", "stable", reference_, 0, 1, 0);
  ASSERT_TRUE(promoted.ok()) << promoted.status().ToString();
  EXPECT_EQ(promoted->stable, "2");
  EXPECT_EQ(promoted->previous_stable, "1");
  EXPECT_EQ(store_->Describe("mlp@stable")->version, "2");

  ASSERT_TRUE(Promote("mlp@misfit", "canary", nullptr, 25).ok());
  EXPECT_EQ(store_->Describe("mlp@canary")->version, "misfit");
  auto rolled = store_->Rollback("mlp");  // drops the canary first
  ASSERT_TRUE(rolled.ok());
  EXPECT_EQ(rolled->canary, "");
  EXPECT_EQ(rolled->stable, "2");
  rolled = store_->Rollback("mlp");  // then returns stable to what it was
  ASSERT_TRUE(rolled.ok());
  EXPECT_EQ(rolled->stable, "1");
  EXPECT_EQ(store_->Describe("mlp@stable")->version, "1");

  // A version a channel points at cannot be removed; others can.
  auto removed = store_->Remove("mlp@1");
  ASSERT_FALSE(removed.ok());
  EXPECT_NE(removed.status().message().find("stable channel"), std::string::npos);
  EXPECT_TRUE(store_->Remove("mlp@misfit").ok());

  // Channel names are not versions, and the channels survive a restart of the store.
  EXPECT_FALSE(store_->Push("mlp", "stable", ReadFile(ModelPath("mlp.onnx"))).ok());
  ModelStore reopened(dir_ + "/data");
  EXPECT_EQ(reopened.Describe("mlp@stable")->version, "1");
}

TEST_F(ModelRolloutTest, CanaryTakesRoughlyItsShareOfTheCalls) {
  ASSERT_TRUE(Promote("mlp@1", "stable", reference_).ok());
  ASSERT_TRUE(Promote("mlp@2", "canary", nullptr, 30).ok());
  InstancePtr instance = Function("mlp@stable");
  ASSERT_NE(instance, nullptr);
  auto counts = CallMany(*instance, 1000);
  EXPECT_EQ(counts["failed"], 0);
  EXPECT_EQ(counts["1"] + counts["2"], 1000) << ::testing::PrintToString(counts);
  EXPECT_GT(counts["2"], 200);
  EXPECT_LT(counts["2"], 400);
}

TEST_F(ModelRolloutTest, FailingCanaryIsRolledBackAutomaticallyWithoutFailingCalls) {
  ASSERT_TRUE(Promote("mlp@1", "stable", reference_).ok());
  // Its input does not fit the function's four fields: every canary call fails.
  ASSERT_TRUE(Promote("mlp@misfit", "canary", nullptr, 50, /*window=*/10, 0.2).ok());
  InstancePtr instance = Function("mlp@stable");
  ASSERT_NE(instance, nullptr);
  const std::uint64_t rollbacks_before = CanaryRollbackCount().load();
  auto counts = CallMany(*instance, 100);
  EXPECT_EQ(counts["failed"], 0);  // stable answered for the canary
  EXPECT_EQ(counts["1"], 100);
  EXPECT_EQ(CanaryRollbackCount().load(), rollbacks_before + 1);
  auto channels = store_->Channels("mlp");
  ASSERT_TRUE(channels.ok());
  EXPECT_EQ(channels->canary, "");
  EXPECT_EQ(channels->stable, "1");
  EXPECT_EQ(channels->automatic_rollbacks, 1u);
  EXPECT_NE(channels->last_change.find("rolled back automatically"), std::string::npos)
      << channels->last_change;
}

TEST_F(ModelRolloutTest, HealthyCanaryStaysAndFunctionFollowsAStableSwitch) {
  ASSERT_TRUE(Promote("mlp@1", "stable", reference_).ok());
  ASSERT_TRUE(Promote("mlp@2", "canary", nullptr, 50, 10, 0.2).ok());
  InstancePtr instance = Function("mlp@stable");
  ASSERT_NE(instance, nullptr);
  auto counts = CallMany(*instance, 100);
  EXPECT_EQ(counts["failed"], 0);
  EXPECT_EQ(store_->Channels("mlp")->canary, "2");  // no failures, no rollback

  ASSERT_TRUE(Promote("mlp@2", "stable", reference_).ok());  // the canary graduates
  counts = CallMany(*instance, 20);
  EXPECT_EQ(counts["failed"], 0);
  EXPECT_EQ(counts["2"], 20);
  ASSERT_TRUE(store_->Rollback("mlp").ok());
  counts = CallMany(*instance, 20);
  EXPECT_EQ(counts["1"], 20);
}

}  // namespace
}  // namespace wisp
