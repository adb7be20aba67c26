// The node's side of autoscaling (node/function_scaler.h): calls become arrivals / idles and
// concurrency samples, the node config becomes the autoscaler's configuration.
#include <gtest/gtest.h>

#include "node/function_scaler.h"
#include "node/node.h"
#include "scheduling/keepalive_policies.h"

namespace wisp {
namespace {

FunctionScaler MakeScaler(KeepAlivePolicy* policy, int min_instances = 0) {
  AutoscalerConfig config;
  config.target_concurrency = 1;
  config.stable_window_ms = 2'000;
  config.panic_window_ms = 1'000;
  config.min_instances = min_instances;
  config.max_instances = 4;
  auto autoscaler = CreateAutoscaler(config, policy, 0);
  EXPECT_TRUE(autoscaler.ok()) << autoscaler.status().ToString();
  return FunctionScaler(std::move(*autoscaler));
}

TEST(FunctionScalerTest, KeepsOneInstanceForTheKeepAliveThenScalesToZero) {
  FixedKeepAlivePolicy policy(3'000);
  FunctionScaler scaler = MakeScaler(&policy);
  EXPECT_EQ(scaler.Tick(0, 0).reason, ScaleReason::kNoTraffic);

  scaler.CallBegins(1'000);  // arrival
  scaler.CallBegins(1'100);  // overlaps: not a second arrival
  EXPECT_EQ(scaler.active_calls(), 2);
  const ScaleRecommendation busy = scaler.Tick(1'200, 1);
  EXPECT_EQ(busy.instances, 2);  // 2 active calls / target 1
  scaler.CallEnds(1'300);
  scaler.CallEnds(1'400);  // the last one: idle from 1.4 s, keep-alive to 4.4 s
  scaler.CallEnds(1'500);  // unmatched: ignored
  EXPECT_EQ(scaler.active_calls(), 0);

  // The busy sample leaves the 2 s stable window after 3.2 s; the keep-alive holds one.
  const ScaleRecommendation kept = scaler.Tick(3'300, 1);
  EXPECT_EQ(kept.instances, 1);
  EXPECT_EQ(kept.reason, ScaleReason::kKeepAlive);
  const ScaleRecommendation gone = scaler.Tick(4'500, 1);
  EXPECT_EQ(gone.instances, 0);
  EXPECT_EQ(gone.reason, ScaleReason::kScaleToZero);
}

TEST(FunctionScalerTest, ScaleMinHoldsAndReplaceKeepsActiveCalls) {
  FixedKeepAlivePolicy policy(0);
  FunctionScaler scaler = MakeScaler(&policy, 1);
  scaler.CallBegins(0);
  scaler.CallEnds(10);
  const ScaleRecommendation idle = scaler.Tick(5'000, 1);
  EXPECT_EQ(idle.instances, 1);
  EXPECT_EQ(idle.reason, ScaleReason::kMinimum);

  scaler.CallBegins(6'000);
  AutoscalerConfig config;
  config.stable_window_ms = 2'000;
  config.panic_window_ms = 1'000;
  auto autoscaler = CreateAutoscaler(config, &policy, 0);
  ASSERT_TRUE(autoscaler.ok());
  scaler.Replace(std::move(*autoscaler));  // a redeploy while a call runs
  EXPECT_EQ(scaler.active_calls(), 1);
  EXPECT_GE(scaler.Tick(6'100, 1).instances, 1);  // the running call is still load
  scaler.CallEnds(6'200);
  EXPECT_EQ(scaler.active_calls(), 0);
}

TEST(FunctionScalerTest, NodeConfigAndManifestMakeTheAutoscalerConfig) {
  SchedulingConfig scheduling;
  scheduling.stable_window = std::chrono::seconds(30);
  scheduling.panic_window = std::chrono::seconds(3);
  scheduling.panic_threshold = 3;
  scheduling.max_scale_down_rate = 4;
  FunctionSpec spec;
  spec.scale_min = 0;
  spec.scale_max = 5;
  spec.concurrency_max = 10;
  const AutoscalerConfig config = AutoscalerConfigOf(scheduling, spec);
  EXPECT_EQ(config.stable_window_ms, 30'000);
  EXPECT_EQ(config.panic_window_ms, 3'000);
  EXPECT_EQ(config.panic_threshold, 3);
  EXPECT_EQ(config.max_scale_down_rate, 4);
  EXPECT_EQ(config.min_instances, 0);
  EXPECT_EQ(config.max_instances, 5);
  EXPECT_DOUBLE_EQ(config.target_concurrency, 7);  // 70% of concurrency.max
}

TEST(FunctionScalerTest, SchedulingConfigIsParsedAndChecked) {
  auto defaults = ParseNodeConfig("", "node.yaml");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->scheduling.keepalive, "fixed");
  EXPECT_TRUE(defaults->scheduling.options.empty());
  EXPECT_EQ(defaults->scheduling.stable_window, std::chrono::seconds(60));
  EXPECT_EQ(defaults->scheduling.tick, std::chrono::seconds(1));

  auto config = ParseNodeConfig(R"(
scheduling:
  keepalive: hybrid
  options: { range_minutes: 120, margin: 0.2 }
  stable_window: 30s
  panic_window: 3s
  panic_threshold: 2.5
  max_scale_up_rate: 10
  max_scale_down_rate: 3
  tick: 500ms
)",
                                "node.yaml");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  const SchedulingConfig& s = config->scheduling;
  EXPECT_EQ(s.keepalive, "hybrid");
  EXPECT_EQ(s.options.at("range_minutes"), 120);
  EXPECT_EQ(s.options.at("margin"), 0.2);
  EXPECT_EQ(s.stable_window, std::chrono::seconds(30));
  EXPECT_EQ(s.panic_window, std::chrono::seconds(3));
  EXPECT_EQ(s.panic_threshold, 2.5);
  EXPECT_EQ(s.max_scale_up_rate, 10);
  EXPECT_EQ(s.max_scale_down_rate, 3);
  EXPECT_EQ(s.tick, std::chrono::milliseconds(500));

  for (const char* bad :
       {"scheduling: { keepalive: lru }", "scheduling: { options: { keep_alive_hours: 1 } }",
        "scheduling: { options: { keep_alive_minutes: soon } }",
        "scheduling: { stable_window: 1s, panic_window: 2s }",
        "scheduling: { max_scale_down_rate: 1 }", "scheduling: { tick: 0s }",
        "scheduling: { window: 1s }"}) {
    auto refused = ParseNodeConfig(bad, "node.yaml");
    EXPECT_FALSE(refused.ok()) << bad;
    if (!refused.ok()) {
      EXPECT_NE(refused.status().message().find("scheduling."), std::string::npos)
          << refused.status().message();
    }
  }
}

}  // namespace
}  // namespace wisp
