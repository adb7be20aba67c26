// End-to-end test of the autoscaler wired into the node (docs/autoscaling.md): a function with
// scale.min 0 on a node whose keep-alive is short goes back to zero instances after a call, and
// the next call is a cold start again; a function with scale.min 1 stays at one.
#include <gtest/gtest.h>

#include <chrono>
#include <sstream>
#include <string>
#include <thread>

#include "harness.h"

namespace wisp::testing {
namespace {

constexpr const char* kManifest = R"yaml(
version: 1
functions:
  sleepy:
    runtime: lua
    handler: ./pong.lua:handle
    scale: { min: 0, max: 2 }
  steady:
    runtime: lua
    handler: ./pong.lua:handle
    scale: { min: 1, max: 2 }
)yaml";

constexpr const char* kPong = R"lua(
local M = {}
function M.handle(event, ctx)
  return "pong"
end
return M
)lua";

class AutoscaleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_dir_ = tmp_.path() + "/data";
    node_ = std::make_unique<NodeProcess>(data_dir_, tmp_.path() + "/wispd.log");
    Status started = node_->Start({"--shards", "1"}, kScaleToZeroQuicklyConfig);
    ASSERT_TRUE(started.ok()) << started.ToString();
    tmp_.Write("fns/wisp.yaml", kManifest);
    tmp_.Write("fns/pong.lua", kPong);
    CommandResult r = RunCli({"deploy", tmp_.path() + "/fns"}, {{"WISP_HOME", data_dir_}});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "---- wispd log ----\n" << node_->Log() << "\n";
  }

  Result<HttpResponse> Invoke(const std::string& name) const {
    return node_->Request("POST", "/v1/functions/" + name + "/invoke", "{}",
                          {{"Content-Type", "application/json"}});
  }

  // The value of the series `name{...}` for `function` whose labels include `extra_label`;
  // -1 when there is no such series.
  double Metric(const std::string& name, const std::string& function,
                const std::string& extra_label = "") {
    auto r = node_->Request("GET", "/metrics");
    EXPECT_TRUE(r.ok() && r->status == 200);
    if (!r.ok()) return -1;
    return testing::FindMetric(r->body, name, function, extra_label).value_or(-1);
  }

  // Polls until no instance of `function` is live (warm or starting); bounded at ~30 s.
  bool WaitForZeroInstances(const std::string& function) {
    for (int i = 0; i < 300; ++i) {
      if (Metric("wisp_function_instances", function) == 0 &&
          Metric("wisp_function_instances_by_state", function, "state=\"starting\"") == 0) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  TempDir tmp_;
  std::string data_dir_;
  std::unique_ptr<NodeProcess> node_;
};

TEST_F(AutoscaleTest, ScalesToZeroAfterKeepAliveAndColdStartsAgain) {
  ASSERT_EQ(Metric("wisp_function_instances", "sleepy"), 0);  // scale.min 0: nothing warm

  auto first = Invoke("sleepy");
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_EQ(first->status, 200) << first->body;
  EXPECT_EQ(first->body, "pong");
  EXPECT_EQ(first->Header("X-Wisp-Cold-Start"), "1");
  const double cold_after_first = Metric("wisp_function_cold_starts_total", "sleepy");
  EXPECT_GE(cold_after_first, 1);

  ASSERT_TRUE(WaitForZeroInstances("sleepy")) << "sleepy never scaled to zero";
  EXPECT_EQ(Metric("wisp_function_desired_instances", "sleepy"), 0);
  EXPECT_GE(Metric("wisp_autoscaler_decisions_total", "sleepy", "reason=\"scale_to_zero\""), 1);
  // scale.min 1 holds whatever the keep-alive says.
  EXPECT_EQ(Metric("wisp_function_instances", "steady"), 1);
  EXPECT_EQ(Metric("wisp_function_desired_instances", "steady"), 1);

  auto second = Invoke("sleepy");
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  ASSERT_EQ(second->status, 200) << second->body;
  EXPECT_EQ(second->Header("X-Wisp-Cold-Start"), "1");
  EXPECT_GT(Metric("wisp_function_cold_starts_total", "sleepy"), cold_after_first);
  // The change was logged with its reason.
  EXPECT_NE(node_->Log().find("function sleepy shard 0: instances 1 -> 0 (scale_to_zero"),
            std::string::npos);
}

}  // namespace
}  // namespace wisp::testing
