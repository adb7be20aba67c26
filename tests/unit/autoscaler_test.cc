// The KPA-style autoscaler (include/wisp/autoscaler.h) driven tick by tick, once per second as
// the node does; every expected count is worked out by hand in the comments.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "scheduling/autoscaler.h"
#include "scheduling/keepalive_policies.h"
#include "wisp/autoscaler.h"
#include "wisp/function_spec.h"

namespace wisp {
namespace {

constexpr PolicyTimeMs kSecond = 1000;

// A policy that answers every idle with the same window (to test pre-warm) and counts calls.
class ScriptedPolicy final : public KeepAlivePolicy {
 public:
  explicit ScriptedPolicy(WarmWindow window) : window_(window) {}
  std::string_view Name() const override { return "scripted"; }
  void OnArrival(PolicyAppId, PolicyTimeMs) override { ++arrivals; }
  WarmWindow OnIdle(PolicyAppId, PolicyTimeMs) override {
    ++idles;
    return window_;
  }
  int arrivals = 0;
  int idles = 0;

 private:
  WarmWindow window_;
};

// Target 1 call per instance keeps the arithmetic in whole numbers.
AutoscalerConfig UnitTargetConfig() {
  AutoscalerConfig config;
  config.target_concurrency = 1;
  config.max_instances = 100;
  return config;
}

// Runs the autoscaler one tick per second from `from_s` to `to_s` inclusive: samples
// load(t), asks for a recommendation and follows it at once. Returns the recommendation of
// each second.
class Driver {
 public:
  Driver(const AutoscalerConfig& config, KeepAlivePolicy* policy) {
    auto created = CreateAutoscaler(config, policy, 0);
    EXPECT_TRUE(created.ok()) << created.status().ToString();
    if (created.ok()) autoscaler = std::move(*created);
  }

  void Run(int from_s, int to_s, const std::function<double(int)>& load) {
    for (int t = from_s; t <= to_s; ++t) {
      autoscaler->RecordConcurrency(t * kSecond, load(t));
      Tick(t);
    }
  }
  // A recommendation at second t without a new sample.
  void Tick(int t) {
    ScaleRecommendation r = autoscaler->Recommend(t * kSecond, instances);
    instances = r.instances;
    at[t] = r;
  }

  std::unique_ptr<Autoscaler> autoscaler;
  int instances = 0;
  std::map<int, ScaleRecommendation> at;
};

TEST(AutoscalerTest, SteadyLoadNeedsLoadOverTarget) {
  FixedKeepAlivePolicy policy(10 * kMsPerMinute);
  AutoscalerConfig config = UnitTargetConfig();
  config.target_concurrency = 0.7;  // e.g. concurrency.max 1 at 70%
  Driver d(config, &policy);
  d.instances = 3;
  // 2.1 in flight / 0.7 per instance = 3 instances, every second.
  d.Run(1, 120, [](int) { return 2.1; });
  for (int t : {1, 60, 120}) {
    EXPECT_EQ(d.at[t].instances, 3) << t;
    EXPECT_EQ(d.at[t].reason, ScaleReason::kStable) << t;
    EXPECT_FALSE(d.at[t].panicking);
    EXPECT_NEAR(d.at[t].stable_concurrency, 2.1, 1e-9);
  }
  // 2.2 / 0.7 = 3.14: a fourth instance.
  d.Run(121, 180, [](int) { return 2.2; });
  EXPECT_EQ(d.at[180].instances, 4);
}

TEST(AutoscalerTest, BurstPanicsNeverScalesDownInPanicAndExitsAfterAStableWindow) {
  FixedKeepAlivePolicy policy(10 * kMsPerMinute);
  Driver d(UnitTargetConfig(), &policy);
  d.instances = 1;
  // Load 1 for a minute, a 3-second burst of 10 at 61..63, then 1 again.
  d.Run(1, 200, [](int t) { return t >= 61 && t <= 63 ? 10.0 : 1.0; });
  EXPECT_EQ(d.at[60].instances, 1);
  EXPECT_EQ(d.at[60].reason, ScaleReason::kStable);
  // t=61: panic window (55,61] = five 1s and a 10 = 15/6 = 2.5 -> 3 instances; 3/1 >= 2: panic.
  // (The stable window alone would say ceil(69/60) = 2.)
  EXPECT_EQ(d.at[61].instances, 3);
  EXPECT_EQ(d.at[61].reason, ScaleReason::kPanic);
  EXPECT_TRUE(d.at[61].panicking);
  EXPECT_DOUBLE_EQ(d.at[61].panic_concurrency, 2.5);
  // t=62: (4 + 20)/6 = 4 -> 4 (4/3 < 2: no new panic, but still panicking).
  EXPECT_EQ(d.at[62].instances, 4);
  // t=63..66: 33/6 = 5.5 -> 6.
  EXPECT_EQ(d.at[63].instances, 6);
  EXPECT_EQ(d.at[66].instances, 6);
  // t=67: 24/6 = 4, t=69: 1 -- but a panic never scales down: 6 until it ends.
  EXPECT_EQ(d.at[67].instances, 6);
  EXPECT_EQ(d.at[69].instances, 6);
  EXPECT_EQ(d.at[120].instances, 6);
  EXPECT_EQ(d.at[120].reason, ScaleReason::kPanic);
  // The last time over the threshold was t=61: panic ends at 61 + 60 = 121. Stable window
  // (61,121] = two 10s + 58 1s = 78/60 = 1.3 -> 2, but scale-down is limited to 6/2 = 3.
  EXPECT_EQ(d.at[121].instances, 3);
  EXPECT_EQ(d.at[121].reason, ScaleReason::kStable);
  EXPECT_FALSE(d.at[121].panicking);
  // t=122: (62,122] = one 10 + 59 1s = 69/60 -> 2 (floor(3/2) = 1 allows it).
  EXPECT_EQ(d.at[122].instances, 2);
  // t=123: sixty 1s -> 1.
  EXPECT_EQ(d.at[123].instances, 1);
  EXPECT_EQ(d.at[200].instances, 1);
}

TEST(AutoscalerTest, BurstFromZeroPanicsAsIfOneInstanceWereReady) {
  FixedKeepAlivePolicy policy(10 * kMsPerMinute);
  Driver d(UnitTargetConfig(), &policy);
  d.Tick(0);
  EXPECT_EQ(d.at[0].instances, 0);
  // Five calls queued at zero: 5 / 1 per instance = 5, and 5 / max(0, 1) >= 2: panic.
  d.Run(1, 1, [](int) { return 5.0; });
  EXPECT_EQ(d.at[1].instances, 5);
  EXPECT_EQ(d.at[1].reason, ScaleReason::kPanic);
  EXPECT_EQ(d.at[1].detail, "panic: 5.00 in flight over 6s / 1.00 per instance");
}

TEST(AutoscalerTest, ScaleUpRateLimitsEachStepEvenInPanic) {
  FixedKeepAlivePolicy policy(10 * kMsPerMinute);
  AutoscalerConfig config = UnitTargetConfig();
  config.max_scale_up_rate = 2;
  Driver d(config, &policy);
  d.instances = 1;
  // 10 in flight wants 10 instances; at most 2x the current per step: 2, 4, 8, 10.
  d.Run(1, 5, [](int) { return 10.0; });
  EXPECT_EQ(d.at[1].instances, 2);
  EXPECT_EQ(d.at[1].reason, ScaleReason::kPanic);
  EXPECT_EQ(d.at[2].instances, 4);
  EXPECT_EQ(d.at[3].instances, 8);
  EXPECT_EQ(d.at[4].instances, 10);
  EXPECT_EQ(d.at[5].instances, 10);
}

TEST(AutoscalerTest, ScaleDownRateHalvesAtMostThenScalesToZeroWithoutKeepAlive) {
  FixedKeepAlivePolicy policy(0);
  Driver d(UnitTargetConfig(), &policy);
  d.autoscaler->RecordArrival(0);
  d.autoscaler->RecordIdle(0);
  d.instances = 8;
  // No load at all: floor(8/2) = 4, 2, 1, then 0 (keep-alive 0 has passed).
  for (int t = 1; t <= 4; ++t) d.Tick(t);
  EXPECT_EQ(d.at[1].instances, 4);
  EXPECT_EQ(d.at[2].instances, 2);
  EXPECT_EQ(d.at[3].instances, 1);
  EXPECT_EQ(d.at[3].reason, ScaleReason::kStable);
  EXPECT_EQ(d.at[4].instances, 0);
  EXPECT_EQ(d.at[4].reason, ScaleReason::kScaleToZero);
}

TEST(AutoscalerTest, ScalesFromZeroThenToZeroOnlyAfterThePolicysKeepAlive) {
  FixedKeepAlivePolicy policy(10 * kMsPerMinute);
  Driver d(UnitTargetConfig(), &policy);
  d.Tick(0);
  EXPECT_EQ(d.at[0].instances, 0);
  EXPECT_EQ(d.at[0].reason, ScaleReason::kNoTraffic);
  // One call arrives at t=1 (no sample shows it yet): one instance for it.
  d.autoscaler->RecordArrival(1 * kSecond);
  d.Tick(1);
  EXPECT_EQ(d.at[1].instances, 1);
  EXPECT_EQ(d.at[1].reason, ScaleReason::kInFlight);
  // It runs until t=10 (samples of 1 at 2..9), then the function is idle.
  d.Run(2, 9, [](int) { return 1.0; });
  d.autoscaler->RecordIdle(10 * kSecond);
  d.Run(10, 700, [](int) { return 0.0; });
  // The stable window holds a sample of 1 until (now - 60, now] leaves t=9 out: at t=69.
  EXPECT_EQ(d.at[68].instances, 1);
  EXPECT_EQ(d.at[68].reason, ScaleReason::kStable);
  EXPECT_EQ(d.at[69].instances, 1);
  EXPECT_EQ(d.at[69].reason, ScaleReason::kKeepAlive);
  // Idle since t=10 with 600 s keep-alive: still one at 609, zero from 610.
  EXPECT_EQ(d.at[609].instances, 1);
  EXPECT_EQ(d.at[609].reason, ScaleReason::kKeepAlive);
  EXPECT_EQ(d.at[610].instances, 0);
  EXPECT_EQ(d.at[610].reason, ScaleReason::kScaleToZero);
  EXPECT_EQ(d.at[610].detail, "scale-to-zero after 600s idle (policy fixed)");
  EXPECT_EQ(d.at[700].instances, 0);
}

TEST(AutoscalerTest, ForwardsArrivalsAndIdlesToThePolicyAndFollowsItsPrewarm) {
  // Idle at t=1: unload, load again 30 s later, keep it 20 s.
  ScriptedPolicy policy(WarmWindow{30 * kSecond, 20 * kSecond});
  AutoscalerConfig config = UnitTargetConfig();
  config.stable_window_ms = 10 * kSecond;
  config.panic_window_ms = 2 * kSecond;
  Driver d(config, &policy);
  d.autoscaler->RecordArrival(0);
  d.autoscaler->RecordConcurrency(0, 1);
  d.autoscaler->RecordIdle(1 * kSecond);
  EXPECT_EQ(policy.arrivals, 1);
  EXPECT_EQ(policy.idles, 1);
  d.instances = 1;
  d.Run(1, 60, [](int) { return 0.0; });
  // The sample of 1 at t=0 is in the 10 s window (t-10, t] up to t=9 and leaves it at t=10.
  EXPECT_EQ(d.at[9].instances, 1);
  EXPECT_EQ(d.at[10].instances, 0);
  EXPECT_EQ(d.at[10].reason, ScaleReason::kUnloaded);
  EXPECT_EQ(d.at[30].instances, 0);  // idle 29 s < 30 s
  EXPECT_EQ(d.at[31].instances, 1);  // the pre-warm window opens
  EXPECT_EQ(d.at[31].reason, ScaleReason::kPrewarm);
  EXPECT_EQ(d.at[50].instances, 1);  // idle 49 s < 30 + 20
  EXPECT_EQ(d.at[51].instances, 0);
  EXPECT_EQ(d.at[51].reason, ScaleReason::kScaleToZero);
}

TEST(AutoscalerTest, ClampsToMinAndMaxInstances) {
  FixedKeepAlivePolicy policy(0);
  AutoscalerConfig config = UnitTargetConfig();
  config.min_instances = 2;
  config.max_instances = 5;
  Driver d(config, &policy);
  d.Tick(0);  // no traffic: raised to scale.min
  EXPECT_EQ(d.at[0].instances, 2);
  EXPECT_EQ(d.at[0].reason, ScaleReason::kMinimum);
  d.Run(1, 3, [](int) { return 20.0; });  // wants 20 (panic), capped at 5
  EXPECT_EQ(d.at[3].instances, 5);
  EXPECT_EQ(d.at[3].reason, ScaleReason::kMaximum);
  EXPECT_TRUE(d.at[3].panicking);
  // After the panic and the load are over, back down to 2, never below: min > 0 never idles out.
  d.autoscaler->RecordArrival(0);
  d.autoscaler->RecordIdle(4 * kSecond);
  d.Run(4, 200, [](int) { return 0.0; });
  EXPECT_EQ(d.at[200].instances, 2);
  EXPECT_EQ(d.at[200].reason, ScaleReason::kMinimum);
}

TEST(AutoscalerTest, RefusesBadConfigurations) {
  FixedKeepAlivePolicy policy(0);
  EXPECT_FALSE(CreateAutoscaler(UnitTargetConfig(), nullptr, 0).ok());
  auto refused = [&](std::function<void(AutoscalerConfig&)> change) {
    AutoscalerConfig config = UnitTargetConfig();
    change(config);
    auto created = CreateAutoscaler(config, &policy, 0);
    return !created.ok() && created.status().code() == StatusCode::kInvalidArgument;
  };
  EXPECT_TRUE(refused([](AutoscalerConfig& c) { c.target_concurrency = 0; }));
  EXPECT_TRUE(refused([](AutoscalerConfig& c) { c.panic_window_ms = 0; }));
  EXPECT_TRUE(refused([](AutoscalerConfig& c) { c.stable_window_ms = c.panic_window_ms - 1; }));
  EXPECT_TRUE(refused([](AutoscalerConfig& c) { c.panic_threshold = 0.5; }));
  EXPECT_TRUE(refused([](AutoscalerConfig& c) { c.max_scale_up_rate = 1; }));
  EXPECT_TRUE(refused([](AutoscalerConfig& c) { c.max_scale_down_rate = 1; }));
  EXPECT_TRUE(refused([](AutoscalerConfig& c) { c.min_instances = -1; }));
  EXPECT_TRUE(refused([](AutoscalerConfig& c) { c.max_instances = 0; }));
  EXPECT_TRUE(refused([](AutoscalerConfig& c) {
    c.min_instances = 4;
    c.max_instances = 3;
  }));
  EXPECT_FALSE(refused([](AutoscalerConfig&) {}));
}

TEST(AutoscalerTest, ConfigComesFromTheManifest) {
  auto specs = ParseManifest(R"yaml(
version: 1
functions:
  a: { runtime: lua, handler: a.lua, concurrency: { max: 4 }, scale: { min: 0, max: 6 } }
  b: { runtime: lua, handler: b.lua, concurrency: { max: 4, target: 3 } }
)yaml");
  ASSERT_TRUE(specs.ok()) << specs.status().ToString();
  AutoscalerConfig a = AutoscalerConfigFor((*specs)[0]);
  EXPECT_DOUBLE_EQ(a.target_concurrency, 0.7 * 4);
  EXPECT_EQ(a.min_instances, 0);
  EXPECT_EQ(a.max_instances, 6);
  AutoscalerConfig b = AutoscalerConfigFor((*specs)[1]);
  EXPECT_DOUBLE_EQ(b.target_concurrency, 3);
  EXPECT_EQ(b.min_instances, 1);
  EXPECT_EQ(b.max_instances, 8);
  EXPECT_EQ(ScaleReasonName(ScaleReason::kScaleToZero), "scale_to_zero");
}

}  // namespace
}  // namespace wisp
