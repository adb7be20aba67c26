// Model rollout through a real wispd and the wisp CLI: a refused stable switch, and versions
// switched (canary, stable, rollback) while a client invokes in a loop without a single failure.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "harness.h"

namespace wisp::testing {
namespace {

using nlohmann::json;

class ModelRolloutTest : public ::testing::Test {
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

// Invokes `function` in a loop on its own thread, counting answers by version and failures.
class LoadClient {
 public:
  LoadClient(const NodeProcess& node, std::string function)
      : node_(node), function_(std::move(function)), thread_([this] { Loop(); }) {}
  ~LoadClient() { Stop(); }

  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::uint64_t calls() const { return calls_.load(); }
  // Waits until `n` more calls have been answered (bounded, so a stuck node fails the test
  // instead of hanging it).
  bool WaitForCalls(std::uint64_t n) {
    const std::uint64_t target = calls_.load() + n;
    for (int i = 0; i < 30000 && calls_.load() < target; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return calls_.load() >= target;
  }
  std::map<std::string, int> by_version() {
    std::lock_guard lock(mu_);
    return by_version_;
  }
  std::string last_version() {
    std::lock_guard lock(mu_);
    return last_version_;
  }
  std::vector<std::string> failures() {
    std::lock_guard lock(mu_);
    return failures_;
  }

 private:
  void Loop() {
    const std::string event = json{{"a", 0.5}, {"b", -1}, {"c", 0.25}, {"d", 1}}.dump();
    const std::string target = "/v1/functions/" + function_ + "/invoke";
    while (!stop_) {
      auto reply = node_.Request("POST", target, event, {{"Content-Type", "application/json"}});
      std::lock_guard lock(mu_);
      if (!reply.ok() || reply->status != 200) {
        failures_.push_back(reply.ok() ? std::to_string(reply->status) + " " + reply->body
                                       : reply.status().ToString());
      } else {
        json body = json::parse(reply->body, nullptr, false);
        last_version_ = body.is_object() ? body.value("version", "none") : "not json";
        ++by_version_[last_version_];
      }
      calls_.fetch_add(1);
    }
  }

  const NodeProcess& node_;
  std::string function_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> calls_{0};
  std::mutex mu_;
  std::map<std::string, int> by_version_;
  std::string last_version_;
  std::vector<std::string> failures_;
  std::thread thread_;  // last: starts after the members it uses
};

TEST_F(ModelRolloutTest, VersionsSwitchUnderLoadWithoutAFailedRequest) {
  for (const char* version : {"1", "2"}) {
    CommandResult pushed = Cli({"model", "push", "mlp", Model("mlp.onnx"), "--version", version});
    ASSERT_EQ(pushed.exit_code, 0) << pushed.err;
  }
  const std::string reference = Model("mlp.expected.json");
  CommandResult stable =
      Cli({"model", "promote", "mlp@1", "--channel", "stable", "--reference", reference});
  ASSERT_EQ(stable.exit_code, 0) << stable.out << stable.err;
  EXPECT_NE(stable.out.find("stable:    1"), std::string::npos) << stable.out;

  // A reference case the new version misses: refused, naming the case and the error.
  json wrong = json::parse(ReadTextFile(reference));
  wrong["cases"][0]["outputs"]["y"]["data"][1] =
      wrong["cases"][0]["outputs"]["y"]["data"][1].get<double>() + 0.25;
  tmp_.Write("wrong.json", wrong.dump());
  CommandResult refused = Cli({"model", "promote", "mlp@2", "--channel", "stable", "--reference",
                               tmp_.path() + "/wrong.json"});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("reference case 0: output y[1]"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("off by 0.25"), std::string::npos) << refused.err;

  tmp_.Write("classify/wisp.yaml",
             "version: 1\n"
             "functions:\n"
             "  classify:\n"
             "    runtime: model\n"
             "    handler: ./model.yaml\n");
  tmp_.Write("classify/model.yaml", "model: mlp@stable\ninput: {fields: [a, b, c, d]}\n");
  CommandResult deployed = Cli({"deploy", tmp_.path() + "/classify"});
  ASSERT_EQ(deployed.exit_code, 0) << deployed.out << deployed.err;

  LoadClient client(*node_, "classify");
  ASSERT_TRUE(client.WaitForCalls(50));
  EXPECT_EQ(client.last_version(), "1");

  CommandResult canary =
      Cli({"model", "promote", "mlp@2", "--channel", "canary", "--percent", "50"});
  ASSERT_EQ(canary.exit_code, 0) << canary.err;
  ASSERT_TRUE(client.WaitForCalls(200));
  EXPECT_GT(client.by_version()["2"], 0);

  CommandResult graduated =
      Cli({"model", "promote", "mlp@2", "--channel", "stable", "--reference", reference});
  ASSERT_EQ(graduated.exit_code, 0) << graduated.err;
  ASSERT_TRUE(client.WaitForCalls(100));
  auto before = client.by_version();
  ASSERT_TRUE(client.WaitForCalls(100));
  auto after = client.by_version();
  EXPECT_EQ(after["1"], before["1"]);  // every call on the new stable
  EXPECT_GE(after["2"], before["2"] + 100);
  EXPECT_EQ(client.last_version(), "2");

  CommandResult rolled = Cli({"model", "rollback", "mlp"});
  ASSERT_EQ(rolled.exit_code, 0) << rolled.err;
  EXPECT_NE(rolled.out.find("stable:    1"), std::string::npos) << rolled.out;
  ASSERT_TRUE(client.WaitForCalls(100));
  before = client.by_version();
  ASSERT_TRUE(client.WaitForCalls(100));
  after = client.by_version();
  EXPECT_EQ(after["2"], before["2"]);  // every call back on version 1
  EXPECT_GE(after["1"], before["1"] + 100);
  client.Stop();

  EXPECT_TRUE(client.failures().empty())
      << client.failures().size() << " failed, first: " << client.failures().front();
  CommandResult channels = Cli({"model", "channels", "mlp", "-o", "json"});
  ASSERT_EQ(channels.exit_code, 0) << channels.err;
  json doc = json::parse(channels.out);
  EXPECT_EQ(doc["stable"], "1");
  EXPECT_EQ(doc["previous_stable"], "2");
}

}  // namespace
}  // namespace wisp::testing
