#include "metrics/metrics.h"

#include <gtest/gtest.h>

#include <string>

namespace wisp {
namespace {

using std::chrono::microseconds;

TEST(MetricsTest, SumsShardsAndRendersPrometheusText) {
  MetricsRegistry registry(2);
  auto fm = registry.ForFunction("hello", "lua");
  fm->shard(0).trigger(TriggerKind::kHttp).ok.Add(3);
  fm->shard(1).trigger(TriggerKind::kHttp).ok.Add(2);
  fm->shard(1).trigger(TriggerKind::kHttp).error.Add();
  fm->shard(1).trigger(TriggerKind::kMqtt).ok.Add(4);
  fm->shard(1).errors_by_kind[static_cast<std::size_t>(StatusCode::kDeadlineExceeded)].Add();
  fm->shard(0).trigger(TriggerKind::kHttp).duration.Record(microseconds(30));    // <= 50us
  fm->shard(1).trigger(TriggerKind::kHttp).duration.Record(microseconds(2000));  // <= 2.5ms
  fm->shard(0).cold_starts.Add();
  fm->shard(0).instances = 1;
  fm->shard(1).instances = 2;
  registry.http(0).responses_by_class[2].Add(5);

  const std::string text = registry.RenderPrometheus("0.1.0", "abc");
  auto has = [&](const std::string& line) { return text.find(line + "\n") != std::string::npos; };
  EXPECT_TRUE(has("wisp_build_info{version=\"0.1.0\",commit=\"abc\"} 1"));
  EXPECT_TRUE(
      has("wisp_function_invocations_total{function=\"hello\",runtime=\"lua\","
          "trigger=\"http\",status=\"success\"} 5"));
  EXPECT_TRUE(
      has("wisp_function_invocations_total{function=\"hello\",runtime=\"lua\","
          "trigger=\"http\",status=\"error\"} 1"));
  EXPECT_TRUE(
      has("wisp_function_invocations_total{function=\"hello\",runtime=\"lua\","
          "trigger=\"mqtt\",status=\"success\"} 4"));
  // Timers never fired: no series for them.
  EXPECT_EQ(text.find("trigger=\"timer\""), std::string::npos);
  EXPECT_TRUE(has("wisp_function_errors_total{function=\"hello\",kind=\"timeout\"} 1"));
  EXPECT_TRUE(has("wisp_function_timeouts_total{function=\"hello\"} 1"));
  EXPECT_TRUE(has("wisp_function_cold_starts_total{function=\"hello\",runtime=\"lua\"} 1"));
  EXPECT_TRUE(has("wisp_function_instances{function=\"hello\",runtime=\"lua\"} 3"));
  EXPECT_TRUE(has("wisp_http_responses_total{code=\"2xx\"} 5"));
  // Buckets are cumulative: 1 at 50us, still 1 at 1ms, 2 from 2.5ms on, and +Inf = count.
  const std::string labels = "function=\"hello\",runtime=\"lua\",trigger=\"http\"";
  EXPECT_TRUE(has("wisp_function_duration_seconds_bucket{" + labels + ",le=\"5e-05\"} 1"));
  EXPECT_TRUE(has("wisp_function_duration_seconds_bucket{" + labels + ",le=\"0.001\"} 1"));
  EXPECT_TRUE(has("wisp_function_duration_seconds_bucket{" + labels + ",le=\"0.0025\"} 2"));
  EXPECT_TRUE(has("wisp_function_duration_seconds_bucket{" + labels + ",le=\"+Inf\"} 2"));
  EXPECT_TRUE(has("wisp_function_duration_seconds_count{" + labels + "} 2"));
  EXPECT_TRUE(has("wisp_function_duration_seconds_sum{" + labels + "} 0.002030000"));
  EXPECT_TRUE(has("# TYPE wisp_function_duration_seconds histogram"));
}

TEST(MetricsTest, RendersLifecycleSeriesSummedOverShards) {
  MetricsRegistry registry(2);
  auto fm = registry.ForFunction("py", "process");
  fm->shard(0).warm_starts.Add(5);
  fm->shard(1).warm_starts.Add(2);
  fm->shard(1).rejected.Add(3);
  fm->shard(0).queue_depth = 4;
  fm->shard(1).queue_depth = 1;
  fm->shard(0).instances_by_state[1] = 2;  // idle
  fm->shard(1).instances_by_state[1] = 1;
  fm->shard(1).instances_by_state[3] = 1;  // draining
  fm->shard(0).queue_wait.Record(microseconds(30));
  const std::string text = registry.RenderPrometheus("v", "c");
  auto has = [&](const std::string& line) { return text.find(line + "\n") != std::string::npos; };
  EXPECT_TRUE(has("wisp_function_warm_starts_total{function=\"py\",runtime=\"process\"} 7"));
  EXPECT_TRUE(has("wisp_function_rejected_total{function=\"py\"} 3"));
  EXPECT_TRUE(has("wisp_function_queue_depth{function=\"py\"} 5"));
  EXPECT_TRUE(has(
      "wisp_function_instances_by_state{function=\"py\",runtime=\"process\",state=\"idle\"} 3"));
  EXPECT_TRUE(
      has("wisp_function_instances_by_state{function=\"py\",runtime=\"process\","
          "state=\"draining\"} 1"));
  EXPECT_TRUE(
      has("wisp_function_instances_by_state{function=\"py\",runtime=\"process\","
          "state=\"busy\"} 0"));
  EXPECT_TRUE(has("wisp_function_queue_seconds_count{function=\"py\"} 1"));
}

TEST(MetricsTest, RedeployKeepsCountersAndDeleteForgets) {
  MetricsRegistry registry(1);
  registry.ForFunction("f", "lua")->shard(0).trigger(TriggerKind::kHttp).ok.Add(7);
  EXPECT_EQ(registry.ForFunction("f", "lua")->Sum().invocations, 7u);
  registry.RemoveFunction("f");
  EXPECT_EQ(registry.RenderPrometheus("v", "c").find("function=\"f\""), std::string::npos);
  EXPECT_EQ(registry.ForFunction("f", "lua")->Sum().invocations, 0u);
}

}  // namespace
}  // namespace wisp
