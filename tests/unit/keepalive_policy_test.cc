// Keep-alive / pre-warm policies and the trace simulator on small traces whose expected
// decisions, cold starts and wasted memory are computed by hand in the comments.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "scheduling/azure_trace.h"
#include "scheduling/keepalive_policies.h"
#include "scheduling/trace_sim.h"
#include "wisp/keepalive_policy.h"

namespace wisp {
namespace {

constexpr PolicyTimeMs kSecond = 1000;
constexpr PolicyTimeMs kMinute = kMsPerMinute;

// Drives `policy` through invocations of 1 s whose idle times (end to next arrival) are `idle`;
// returns the window decided after the last one ends.
WarmWindow FeedIdleTimes(KeepAlivePolicy& policy, const std::vector<PolicyTimeMs>& idle) {
  PolicyTimeMs at = 0;
  policy.OnArrival(0, at);
  WarmWindow window = policy.OnIdle(0, at + kSecond);
  at += kSecond;
  for (PolicyTimeMs gap : idle) {
    at += gap;
    policy.OnArrival(0, at);
    at += kSecond;
    window = policy.OnIdle(0, at);
  }
  return window;
}

TEST(KeepAlivePolicyTest, RegistryBuildsPoliciesByNameAndRefusesBadOptions) {
  RegisterBuiltinKeepAlivePolicies();
  auto fixed = CreateKeepAlivePolicy("fixed", {{"keep_alive_minutes", 3}});
  ASSERT_TRUE(fixed.ok()) << fixed.status().ToString();
  EXPECT_EQ((*fixed)->Name(), "fixed");
  EXPECT_EQ((*fixed)->OnIdle(7, 1000), (WarmWindow{0, 3 * kMinute}));

  auto unknown = CreateKeepAlivePolicy("lru-forever");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound);
  EXPECT_NE(unknown.status().message().find("hybrid"), std::string::npos);

  auto bad_option = CreateKeepAlivePolicy("hybrid", {{"rnage_minutes", 60}});
  ASSERT_FALSE(bad_option.ok());
  EXPECT_EQ(bad_option.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_option.status().message().find("range_minutes"), std::string::npos);

  auto negative = CreateKeepAlivePolicy("wisp", {{"margin", -1}});
  EXPECT_EQ(negative.status().code(), StatusCode::kInvalidArgument);
  for (const char* name : {"hybrid", "wisp"}) {
    auto policy = CreateKeepAlivePolicy(name);
    ASSERT_TRUE(policy.ok()) << name;
    EXPECT_EQ((*policy)->Name(), name);
  }
}

TEST(KeepAlivePolicyTest, FixedKeepsEveryInstanceForTheSameTime) {
  FixedKeepAlivePolicy policy(10 * kMinute);
  EXPECT_EQ(FeedIdleTimes(policy, {kMinute, 3 * kMinute}), (WarmWindow{0, 10 * kMinute}));
}

TEST(KeepAlivePolicyTest, HybridPrewarmsAtTheHeadAndKeepsToTheTailWithMargins) {
  // Nine idle times in bin 5 (5 min 20 s) and one in bin 20 (20 min 30 s): 10 samples.
  // 5th percentile: 0.5 of 10 -> bin 5 -> pre-warm after 5 min * 0.9 = 4.5 min.
  // 99th percentile: 9.9 of 10 -> bin 20 -> tail at its end, 21 min * 1.1 = 23.1 min,
  // so the keep-alive window is 23.1 - 4.5 = 18.6 min.
  HybridHistogramPolicy policy({});
  std::vector<PolicyTimeMs> idle(9, 5 * kMinute + 20 * kSecond);
  idle.push_back(20 * kMinute + 30 * kSecond);
  EXPECT_EQ(FeedIdleTimes(policy, idle), (WarmWindow{270'000, 1'116'000}));
}

TEST(KeepAlivePolicyTest, HybridWithSubMinuteIdleTimesKeepsWarmWithoutUnloading) {
  // All in bin 0: no pre-warm (head 0), keep alive to the end of bin 0 plus 10%: 1.1 min.
  HybridHistogramPolicy policy({});
  EXPECT_EQ(FeedIdleTimes(policy, std::vector<PolicyTimeMs>(12, 30 * kSecond)),
            (WarmWindow{0, 66'000}));
}

TEST(KeepAlivePolicyTest, HybridFallsBackToStandardKeepAliveWhenNotRepresentative) {
  // Nine samples: below the minimum of 10 -> keep alive for the whole 4-hour range.
  HybridHistogramPolicy few({});
  EXPECT_EQ(FeedIdleTimes(few, std::vector<PolicyTimeMs>(9, 5 * kMinute)),
            (WarmWindow{0, 240 * kMinute}));

  // One idle time in each of the 240 bins: every bin count is 1, CV 0 < 2 -> standard.
  HybridHistogramPolicy flat({});
  std::vector<PolicyTimeMs> spread;
  for (int bin = 0; bin < 240; ++bin) spread.push_back(bin * kMinute + 30 * kSecond);
  EXPECT_EQ(FeedIdleTimes(flat, spread), (WarmWindow{0, 240 * kMinute}));

  // Two bins with 5 each: CV = sqrt(240 / 2 - 1) ~ 10.9 >= 2 -> the histogram is used:
  // head bin 3 -> 2.7 min; tail bin 60 -> 61 * 1.1 = 67.1 min; keep 64.4 min.
  HybridHistogramPolicy two_bins({});
  std::vector<PolicyTimeMs> clustered(5, 3 * kMinute);
  clustered.insert(clustered.end(), 5, 60 * kMinute);
  EXPECT_EQ(FeedIdleTimes(two_bins, clustered), (WarmWindow{162'000, 3'864'000}));
}

TEST(KeepAlivePolicyTest, HybridForecastsIdleTimesBeyondTheRange) {
  // Ten idle times of 300 min, all beyond the 240-min range: forecast 300 min (mean of the
  // last 5), pre-warm at 300 * 0.85 = 255 min, keep 300 * 0.3 = 90 min.
  HybridHistogramPolicy policy({});
  EXPECT_EQ(FeedIdleTimes(policy, std::vector<PolicyTimeMs>(10, 300 * kMinute)),
            (WarmWindow{255 * kMinute, 90 * kMinute}));
}

TEST(KeepAlivePolicyTest, WispDetectsAPeriodAndPrewarmsAroundTheNextArrival) {
  WispPredictivePolicy policy({});
  // Arrivals every 10 min (at 0, 10, 20, 30 min), 1 s each: three gaps, one short of the four
  // the period needs.
  for (int k = 0; k < 4; ++k) {
    policy.OnArrival(3, k * 10 * kMinute);
    policy.OnIdle(3, k * 10 * kMinute + kSecond);
  }
  EXPECT_EQ(policy.PeriodOf(3), 0);
  // The fourth gap (arrival at 40 min) makes it periodic: next at 50 min; tolerance
  // max(75 s, 5% of 10 min) = 75 s, guard 15 s: warm from 48.5 to 51.5 min. Idle since
  // 40 min + 1 s: pre-warm after 8.5 min - 1 s, keep 3 min.
  policy.OnArrival(3, 40 * kMinute);
  EXPECT_EQ(policy.PeriodOf(3), 10 * kMinute);
  EXPECT_EQ(policy.OnIdle(3, 40 * kMinute + kSecond),
            (WarmWindow{510 * kSecond - kSecond, 3 * kMinute}));

  // An irregular app has no period.
  WispPredictivePolicy irregular({});
  for (PolicyTimeMs at :
       std::vector<PolicyTimeMs>{0, 7 * kMinute, 30 * kMinute, 31 * kMinute, 45 * kMinute}) {
    irregular.OnArrival(1, at);
    irregular.OnIdle(1, at + kSecond);
  }
  EXPECT_EQ(irregular.PeriodOf(1), 0);
}

TEST(KeepAlivePolicyTest, WispScalesTheFallbackKeepAliveByMemory) {
  // Too few idle times for a histogram: 240 min * 1000 MB / memory, within [0.25, 4] times.
  WispPolicyParams params;
  params.memory_reference_mb = 1000;
  params.max_scale = 4;
  WispPredictivePolicy policy(params);
  policy.OnAppMemory(1, 4000);
  policy.OnAppMemory(2, 500);
  policy.OnAppMemory(3, 100);
  for (PolicyAppId app : {1u, 2u, 3u}) policy.OnArrival(app, 0);
  EXPECT_EQ(policy.OnIdle(1, kSecond), (WarmWindow{0, 60 * kMinute}));
  EXPECT_EQ(policy.OnIdle(2, kSecond), (WarmWindow{0, 480 * kMinute}));
  EXPECT_EQ(policy.OnIdle(3, kSecond), (WarmWindow{0, 960 * kMinute}));
  // Without a reference, every app gets the same 240 min.
  WispPolicyParams unscaled;
  unscaled.memory_reference_mb = 0;
  WispPredictivePolicy flat(unscaled);
  flat.OnAppMemory(1, 4000);
  flat.OnArrival(1, 0);
  EXPECT_EQ(flat.OnIdle(1, kSecond), (WarmWindow{0, 240 * kMinute}));
}

TEST(TraceSimTest, FixedKeepAliveOnAThreeInvocationTrace) {
  // 200 MB app; invocations at 0 (1 min), 5 min (1 min), 30 min (2 min); fixed 10 min.
  //  0: cold; idle 1-5 (warm at 5): 4 min wasted.
  //  5: warm; idle 6-16, unloaded at 16: 10 min wasted.
  // 30: cold; idle 32-42: 10 min wasted.
  // Cold starts 2 of 3; wasted 200 MB * 24 min = 4800 MB*min.
  std::vector<SimApp> apps{
      {200, {{0, kMinute}, {5 * kMinute, kMinute}, {30 * kMinute, 2 * kMinute}}}};
  FixedKeepAlivePolicy policy(10 * kMinute);
  auto result = SimulatePolicy(apps, policy);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->cold_starts, 2);
  EXPECT_EQ(result->invocations, 3);
  EXPECT_DOUBLE_EQ(result->wasted_mb_minutes, 4800);
  EXPECT_NEAR(result->apps[0].ColdStartPercent(), 200.0 / 3, 1e-9);
  EXPECT_DOUBLE_EQ(result->apps[0].ColdStartPercentAfterFirst(), 50);

  // With the horizon at 35 min the last stretch counts 32-35: 200 * 17 = 3400.
  FixedKeepAlivePolicy again(10 * kMinute);
  auto cut = SimulatePolicy(apps, again, {0, 35 * kMinute});
  ASSERT_TRUE(cut.ok());
  EXPECT_DOUBLE_EQ(cut->wasted_mb_minutes, 3400);
}

TEST(TraceSimTest, WispPrewarmsAPeriodicAppWithNoColdStartAfterWarmUp) {
  // 20 invocations every 10 min, 1 s each, 100 MB. With no keep-alive for unknown apps the
  // first five are cold (the period needs four gaps); the other 15 find a pre-warmed instance
  // (loaded 90 s before each: 1.5 min wasted each) and one more pre-warm follows the last
  // (3 min): 16 pre-warms, wasted 100 MB * (15 * 1.5 + 3) min = 2550 MB*min.
  std::vector<SimInvocation> invocations;
  for (int k = 0; k < 20; ++k) invocations.push_back({k * 10 * kMinute, kSecond, 1});
  std::vector<SimApp> apps{{100, invocations}};
  WispPolicyParams params;
  params.unknown_keep_alive_ms = 0;
  WispPredictivePolicy wisp_policy(params);
  auto result = SimulatePolicy(apps, wisp_policy);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->cold_starts, 5);
  EXPECT_EQ(result->prewarms, 16);
  EXPECT_DOUBLE_EQ(result->wasted_mb_minutes, 2550);

  // Fixed 5 min never reaches the next arrival: 20 cold starts, 20 * 5 min * 100 MB wasted.
  FixedKeepAlivePolicy fixed(5 * kMinute);
  auto baseline = SimulatePolicy(apps, fixed);
  ASSERT_TRUE(baseline.ok());
  EXPECT_EQ(baseline->cold_starts, 20);
  EXPECT_DOUBLE_EQ(baseline->wasted_mb_minutes, 10'000);
}

TEST(TraceSimTest, MemoryCapEvictsIdleInstancesAndDropsWhenAllAreBusy) {
  // Two 600 MB apps under a 1000 MB cap, fixed 10 min. A at 0 (1 min); B at 2 min (1 min)
  // evicts idle A (1 min wasted); A at 4 min evicts idle B (1 min wasted) and keeps 10 min
  // after 5 min. Cold starts 3, evictions 2, wasted 600 * 12 = 7200 MB*min.
  std::vector<SimApp> apps{{600, {{0, kMinute}, {4 * kMinute, kMinute}}},
                           {600, {{2 * kMinute, kMinute}}}};
  FixedKeepAlivePolicy policy(10 * kMinute);
  auto result = SimulatePolicy(apps, policy, {1000, 0});
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->cold_starts, 3);
  EXPECT_EQ(result->evictions, 2);
  EXPECT_EQ(result->dropped, 0);
  EXPECT_DOUBLE_EQ(result->wasted_mb_minutes, 7200);

  // A busy from 0 to 10 min: B at 2 min cannot get memory and is dropped.
  std::vector<SimApp> busy{{600, {{0, 10 * kMinute}}}, {600, {{2 * kMinute, kMinute}}}};
  FixedKeepAlivePolicy again(10 * kMinute);
  auto dropped = SimulatePolicy(busy, again, {1000, 0});
  ASSERT_TRUE(dropped.ok());
  EXPECT_EQ(dropped->dropped, 1);
  EXPECT_EQ(dropped->apps[1].cold_starts, 0);
  EXPECT_DOUBLE_EQ(dropped->apps[1].MissPercent(), 100);
}

TEST(TraceSimTest, RefusesUnsortedInvocations) {
  std::vector<SimApp> apps{{100, {{5 * kMinute, kSecond}, {kMinute, kSecond}}}};
  FixedKeepAlivePolicy policy(kMinute);
  auto result = SimulatePolicy(apps, policy);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kInvalidArgument);
}

TEST(TraceSimTest, MergeOverlappingFoldsInvocationsThatArriveWhileBusy) {
  auto merged = MergeOverlapping({{0, 100, 1}, {50, 100, 1}, {120, 10, 1}, {300, 10, 1}});
  ASSERT_EQ(merged.size(), 2u);
  EXPECT_EQ(merged[0].arrival_ms, 0);
  EXPECT_EQ(merged[0].duration_ms, 150);
  EXPECT_EQ(merged[0].count, 3);
  EXPECT_EQ(merged[1].arrival_ms, 300);
  EXPECT_EQ(merged[1].count, 1);
}

TEST(TraceSimTest, PercentileIsNearestRank) {
  EXPECT_EQ(Percentile({4, 1, 3, 2}, 75), 3);
  EXPECT_EQ(Percentile({4, 1, 3, 2}, 0), 1);
  EXPECT_EQ(Percentile({4, 1, 3, 2}, 100), 4);
  EXPECT_EQ(Percentile({}, 75), 0);
}

TEST(AzureTraceTest, ParsesExpandsAndRejectsBadRows) {
  const std::string inv =
      "HashFunction,HashApp,HashOwner,minute_1,minute_2,minute_3\n"
      "f1,a1,o1,2,0,1\r\n"
      "f2,a2,o2,0,3,0\n";
  const std::string run =
      "HashFunction,HashApp,HashOwner,Count,Average\nf1,a1,o1,3,250\n"
      "f2,a2,o2,3,70000.0\n";
  const std::string mem =
      "HashApp,HashOwner,SampleCount,AverageAllocatedMb\na1,o1,1,128\n"
      "a2,o2,1,300\n";
  auto trace = ParseAzureTrace(inv, run, mem);
  ASSERT_TRUE(trace.ok()) << trace.status().ToString();
  ASSERT_EQ(trace->apps.size(), 2u);
  EXPECT_EQ(trace->minutes, 3);
  EXPECT_EQ(trace->apps[0].per_minute, (std::vector<int64_t>{2, 0, 1}));
  EXPECT_EQ(trace->apps[0].memory_mb, 128);
  EXPECT_DOUBLE_EQ(trace->apps[1].duration_ms, 70000);

  const auto apps = ExpandAzureTrace(*trace, 7);
  ASSERT_EQ(apps.size(), 2u);
  int64_t count = 0;
  for (const auto& invocation : apps[0].invocations) {
    count += invocation.count;
    EXPECT_TRUE(invocation.arrival_ms < kMinute ||
                (invocation.arrival_ms >= 2 * kMinute && invocation.arrival_ms < 3 * kMinute));
  }
  EXPECT_EQ(count, 3);
  // 70 s invocations within one minute all overlap: one busy period of 3.
  ASSERT_EQ(apps[1].invocations.size(), 1u);
  EXPECT_EQ(apps[1].invocations[0].count, 3);
  const auto again = ExpandAzureTrace(*trace, 7);
  EXPECT_EQ(again[0].invocations[0].arrival_ms, apps[0].invocations[0].arrival_ms);

  auto bad_number =
      ParseAzureTrace("HashFunction,HashApp,HashOwner,minute_1\nf1,a1,o1,x\n", run, mem);
  ASSERT_FALSE(bad_number.ok());
  EXPECT_NE(bad_number.status().message().find("line 2"), std::string::npos);
  auto missing_run =
      ParseAzureTrace("HashFunction,HashApp,HashOwner,minute_1\nf9,a1,o1,1\n", run, mem);
  EXPECT_EQ(missing_run.status().code(), StatusCode::kInvalidArgument);
  auto ragged = ParseAzureTrace("HashFunction,HashApp,HashOwner,minute_1\nf1,a1\n", run, mem);
  EXPECT_EQ(ragged.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseAzureTrace("", run, mem).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace wisp
