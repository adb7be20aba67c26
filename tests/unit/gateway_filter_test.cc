// Gateway filters: each filter's exact outputs on a fixed input, with time injected (no clock,
// no sleeping). Expected values are worked out by hand in the comments.
#include "gateway/filter_chain.h"

#include <gtest/gtest.h>

#include <cmath>
#include <deque>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace wisp {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

// A whole multiple of every window size used below, so windows start at kBase.
constexpr std::int64_t kBase = 1'700'000'000'000;
FilterTime At(std::int64_t ms) { return FilterTime(milliseconds(kBase + ms)); }

// One chain with its own counters, and the outputs of the last call.
class Chain {
 public:
  explicit Chain(std::vector<FilterSpec> filters, std::string key = "",
                 std::size_t max_keys = 10000) {
    trigger_.topic = "plant/#";
    trigger_.key = std::move(key);
    trigger_.max_keys = max_keys;
    trigger_.filters = std::move(filters);
    FunctionSpec spec;
    spec.mqtt_triggers = {trigger_};
    metrics_ = std::make_shared<FilterMetrics>("fn", FilterStagesOf(spec), 1, 1);
    auto chain = FilterChain::Create(trigger_,
                                     {metrics_->TriggerStages(0, 0), &metrics_->KeysEvicted(0, 0)});
    EXPECT_TRUE(chain.ok()) << chain.status().ToString();
    if (chain.ok()) chain_ = std::move(*chain);
  }

  std::vector<FilterOutput> Push(json payload, std::int64_t ms = 0, std::string topic = "plant/a") {
    topics_.push_back(std::move(topic));  // outputs view the topic: keep it alive
    std::vector<FilterOutput> out;
    chain_->Push(topics_.back(), std::move(payload), At(ms), out);
    return out;
  }
  std::vector<FilterOutput> Flush(std::int64_t ms) {
    std::vector<FilterOutput> out;
    chain_->Flush(At(ms), out);
    return out;
  }
  // Pushes each value at time 0 and returns every value that came out, in order.
  std::vector<json> Values(const std::vector<json>& inputs) {
    std::vector<json> values;
    for (const json& in : inputs) {
      for (FilterOutput& out : Push(in)) values.push_back(std::move(out.value));
    }
    return values;
  }
  FilterChain& chain() { return *chain_; }
  const FilterStageCounters& stage(std::size_t i) const { return metrics_->shard(0).stages[i]; }
  std::uint64_t evicted() const { return metrics_->shard(0).keys_evicted[0].Get(); }

 private:
  MqttTriggerSpec trigger_;
  FilterMetricsPtr metrics_;
  std::unique_ptr<FilterChain> chain_;
  std::deque<std::string> topics_;
};

WindowFilterSpec CountWindow(std::int64_t count, std::int64_t slide = 0) {
  WindowFilterSpec w;
  w.count = count;
  w.count_slide = slide == 0 ? count : slide;
  return w;
}
WindowFilterSpec TimeWindow(std::int64_t duration_ms, std::int64_t slide_ms = 0) {
  WindowFilterSpec w;
  w.duration = milliseconds(duration_ms);
  w.slide = milliseconds(slide_ms == 0 ? duration_ms : slide_ms);
  return w;
}
// The "values" of a batch.
json Batch(const FilterOutput& out) {
  EXPECT_TRUE(out.batch);
  return out.value.at("values");
}

TEST(GatewayFilterTest, RangeDropsOutsideValuesAndPassesEventsWithoutTheField) {
  RangeFilterSpec range{.field = "v", .min = 0.0, .max = 50.0, .clamp = false};
  Chain chain({range});
  const std::vector<json> out = chain.Values({{{"v", -1}},
                                              {{"v", 0}},
                                              {{"v", 25}},
                                              {{"v", 50}},
                                              {{"v", 50.5}},
                                              {{"v", "high"}},
                                              {{"w", 3}}});
  EXPECT_EQ(out,
            (std::vector<json>{{{"v", 0}}, {{"v", 25}}, {{"v", 50}}, {{"v", "high"}}, {{"w", 3}}}));
  EXPECT_EQ(chain.stage(0).in.Get(), 7u);
  EXPECT_EQ(chain.stage(0).out.Get(), 5u);
  EXPECT_EQ(chain.stage(0).without_field.Get(), 2u);
}

TEST(GatewayFilterTest, RangeClampReplacesByTheNearerBound) {
  Chain chain({RangeFilterSpec{.field = "v", .min = 0.0, .max = 50.0, .clamp = true}});
  auto low = chain.Push({{"v", -1}, {"id", 1}});
  auto mid = chain.Push({{"v", 25}, {"id", 2}});
  auto high = chain.Push({{"v", 60}, {"id", 3}});
  ASSERT_EQ(low.size(), 1u);
  ASSERT_EQ(mid.size(), 1u);
  ASSERT_EQ(high.size(), 1u);
  EXPECT_EQ(low[0].value, (json{{"v", 0.0}, {"id", 1}}));
  EXPECT_TRUE(low[0].modified);
  EXPECT_EQ(mid[0].value, (json{{"v", 25}, {"id", 2}}));
  EXPECT_FALSE(mid[0].modified);
  EXPECT_EQ(high[0].value, (json{{"v", 50.0}, {"id", 3}}));
  EXPECT_TRUE(high[0].modified);
  // NaN (CBOR can carry it) is in no range and has no nearer bound: dropped even with clamp.
  EXPECT_TRUE(chain.Push({{"v", std::nan("")}}).empty());
}

TEST(GatewayFilterTest, DeadbandPassesChangesOfAtLeastDeltaFromTheLastPassedValue) {
  // The payload itself is the number (no field).
  Chain chain({DeadbandFilterSpec{.field = "", .delta = 0.5}});
  // 10 first; 10.25 (0.25 from 10); 10.5 (0.5); 10.75 (0.25 from 10.5); 11 (0.5); 9.5 (1.5);
  // 9.75 (0.25 from 9.5).
  EXPECT_EQ(chain.Values({10, 10.25, 10.5, 10.75, 11, 9.5, 9.75}),
            (std::vector<json>{10, 10.5, 11, 9.5}));
  EXPECT_EQ(chain.stage(0).in.Get(), 7u);
  EXPECT_EQ(chain.stage(0).out.Get(), 4u);
}

TEST(GatewayFilterTest, EwmaReplacesTheFieldByTheSmoothedValue) {
  Chain chain({EwmaFilterSpec{.field = "sensor.t", .alpha = 0.5}});
  // s1 = 10; s2 = 0.5*20 + 0.5*10 = 15; s3 = 0.5*20 + 0.5*15 = 17.5; s4 = 0 + 0.5*17.5 = 8.75.
  std::vector<double> smoothed;
  for (double t : {10.0, 20.0, 20.0, 0.0}) {
    auto out = chain.Push({{"sensor", {{"t", t}, {"unit", "C"}}}, {"id", 7}});
    ASSERT_EQ(out.size(), 1u);
    EXPECT_TRUE(out[0].modified);
    EXPECT_EQ(out[0].value["sensor"]["unit"], "C");  // the rest of the payload is kept
    EXPECT_EQ(out[0].value["id"], 7);
    smoothed.push_back(out[0].value["sensor"]["t"].get<double>());
  }
  EXPECT_EQ(smoothed, (std::vector<double>{10, 15, 17.5, 8.75}));

  Chain third({EwmaFilterSpec{.field = "", .alpha = 0.3}});
  // 10; 0.3*20 + 0.7*10 = 13; 0.3*30 + 0.7*13 = 18.1.
  auto values = third.Values({10, 20, 30});
  ASSERT_EQ(values.size(), 3u);
  EXPECT_DOUBLE_EQ(values[0].get<double>(), 10.0);
  EXPECT_DOUBLE_EQ(values[1].get<double>(), 13.0);
  EXPECT_DOUBLE_EQ(values[2].get<double>(), 18.1);
}

TEST(GatewayFilterTest, NumericFiltersPassEventsWithoutTheFieldUnchangedAndCountThem) {
  Chain chain({EwmaFilterSpec{.field = "v", .alpha = 0.5}, DeadbandFilterSpec{"v", 1}});
  auto out = chain.Push({{"status", "online"}});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].value, (json{{"status", "online"}}));
  EXPECT_FALSE(out[0].modified);
  out = chain.Push(PlainPayloadValue("not a number"));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].value, "not a number");
  out = chain.Push({{"v", true}});  // a boolean is not a number
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(chain.stage(0).without_field.Get(), 3u);
  EXPECT_EQ(chain.stage(1).without_field.Get(), 3u);
  // The state was not touched: the first real value starts the average and the band.
  out = chain.Push({{"v", 4}});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].value["v"], 4.0);
}

TEST(GatewayFilterTest, PlainPayloadsBecomeNumbersOrText) {
  EXPECT_EQ(PlainPayloadValue(" 21.5\n"), json(21.5));
  EXPECT_EQ(PlainPayloadValue("-3"), json(-3.0));
  EXPECT_EQ(PlainPayloadValue("21.5 C"), json("21.5 C"));
  EXPECT_EQ(PlainPayloadValue("nan"), json("nan"));
  EXPECT_EQ(PlainPayloadValue(""), json(""));
}

TEST(GatewayFilterTest, DownsampleEveryNthPassesTheFirstOfEachGroup) {
  Chain chain({DownsampleFilterSpec{.every = 3}});
  EXPECT_EQ(chain.Values({1, 2, 3, 4, 5, 6, 7}), (std::vector<json>{1, 4, 7}));
}

TEST(GatewayFilterTest, DownsampleByIntervalPassesTheFirstEventOfEachInterval) {
  Chain chain({DownsampleFilterSpec{.every = 0, .interval = milliseconds(1000)}});
  std::vector<std::int64_t> passed;
  // 0 passes; 400, 999 are within 1s of it; 1000 passes; 1500 no; 2100 passes (1100 after);
  // 2999 no (899 after); 3100 passes (1000 after).
  for (std::int64_t ms : {0, 400, 999, 1000, 1500, 2100, 2999, 3100}) {
    if (!chain.Push(ms, ms).empty()) passed.push_back(ms);
  }
  EXPECT_EQ(passed, (std::vector<std::int64_t>{0, 1000, 2100, 3100}));
}

TEST(GatewayFilterTest, RateLimitIsATokenBucketPerKeyOnInjectedTime) {
  Chain chain({RateLimitFilterSpec{.per_second = 2, .burst = 2}});
  std::vector<int> passed;
  // Bucket starts full (2). t=0: 2->1 pass, 1->0 pass, 0 drop. t=250: +0.5 -> 0.5 drop.
  // t=500: +0.5 -> 1 pass -> 0. t=1500: +2 -> 2 (the cap) pass, pass, then 0 drop.
  const std::vector<std::int64_t> times = {0, 0, 0, 250, 500, 1500, 1500, 1500};
  for (std::size_t i = 0; i < times.size(); ++i) {
    if (!chain.Push(static_cast<int>(i), times[i]).empty()) passed.push_back(static_cast<int>(i));
  }
  EXPECT_EQ(passed, (std::vector<int>{0, 1, 4, 5, 6}));
  // Another key has its own full bucket.
  EXPECT_EQ(chain.Push(99, 1500, "plant/b").size(), 1u);
  // A clock stepping back refills nothing (and does not crash).
  EXPECT_TRUE(chain.Push(100, 0).empty());
}

TEST(GatewayFilterTest, TumblingCountWindowEmitsEveryNEvents) {
  Chain chain({CountWindow(3)});
  std::vector<json> batches;
  for (int i = 1; i <= 7; ++i) {
    auto out = chain.Push(i, i * 100);
    if (i == 3 || i == 6) {
      ASSERT_EQ(out.size(), 1u) << i;
      EXPECT_EQ(out[0].value["key"], "plant/a");
      EXPECT_EQ(out[0].value["count"], 3);
      // A count window's start and end are its first and last event's receive times.
      EXPECT_EQ(out[0].value["start"], kBase + (i - 2) * 100);
      EXPECT_EQ(out[0].value["end"], kBase + i * 100);
      EXPECT_EQ(out[0].Topic(), "plant/a");
      batches.push_back(Batch(out[0]));
    } else {
      EXPECT_TRUE(out.empty()) << i;
    }
  }
  EXPECT_EQ(batches, (std::vector<json>{{1, 2, 3}, {4, 5, 6}}));
  EXPECT_EQ(chain.chain().buffered_events(), 1u);          // 7 waits for two more
  EXPECT_FALSE(chain.chain().NextDeadline().has_value());  // count windows need no timer
}

TEST(GatewayFilterTest, SlidingCountWindowOverlaps) {
  Chain chain({CountWindow(4, 2)});
  std::vector<json> batches;
  for (int i = 1; i <= 8; ++i) {
    for (auto& out : chain.Push(i)) batches.push_back(Batch(out));
  }
  // First at 4 events, then every 2 more, keeping the last 2 of the previous batch.
  EXPECT_EQ(batches, (std::vector<json>{{1, 2, 3, 4}, {3, 4, 5, 6}, {5, 6, 7, 8}}));
}

TEST(GatewayFilterTest, TumblingTimeWindowClosesOnTimeWithoutFurtherInput) {
  Chain chain({TimeWindow(10'000)});
  EXPECT_TRUE(chain.Push("a", 1000).empty());
  EXPECT_TRUE(chain.Push("b", 4000).empty());
  EXPECT_TRUE(chain.Push("c", 9999).empty());
  ASSERT_TRUE(chain.chain().NextDeadline().has_value());
  EXPECT_EQ(*chain.chain().NextDeadline(), At(10'000));  // windows are aligned: [0s, 10s)
  EXPECT_TRUE(chain.Flush(9999).empty());
  auto out = chain.Flush(10'000);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(Batch(out[0]), (json{"a", "b", "c"}));
  EXPECT_EQ(out[0].value["start"], kBase);
  EXPECT_EQ(out[0].value["end"], kBase + 10'000);
  EXPECT_EQ(out[0].value["count"], 3);
  EXPECT_EQ(out[0].time, At(10'000));
  EXPECT_FALSE(chain.chain().NextDeadline().has_value());
  EXPECT_TRUE(chain.Flush(50'000).empty());

  // An empty window [10s, 20s) emits nothing. d at 25s opens [20s, 30s); e at 31s arrives
  // before the timer fired, so its Push closes [20s, 30s) first.
  EXPECT_TRUE(chain.Push("d", 25'000).empty());
  EXPECT_EQ(*chain.chain().NextDeadline(), At(30'000));
  out = chain.Push("e", 31'000);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(Batch(out[0]), (json{"d"}));
  EXPECT_EQ(out[0].value["start"], kBase + 20'000);
  EXPECT_EQ(*chain.chain().NextDeadline(), At(40'000));
  EXPECT_EQ(chain.chain().buffered_events(), 1u);
}

TEST(GatewayFilterTest, ALateEventNeverReopensAClosedWindow) {
  Chain chain({TimeWindow(10'000)});
  EXPECT_TRUE(chain.Push("a", 5000).empty());
  auto out = chain.Flush(10'000);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(Batch(out[0]), (json{"a"}));
  // Received at 9s but handled after the timer closed [0s, 10s): it goes into [10s, 20s).
  EXPECT_TRUE(chain.Push("b", 9000).empty());
  EXPECT_EQ(*chain.chain().NextDeadline(), At(20'000));
  // A clock stepped back to 1s does not reopen anything either.
  EXPECT_TRUE(chain.Push("c", 1000).empty());
  out = chain.Flush(20'000);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(Batch(out[0]), (json{"b", "c"}));
  EXPECT_EQ(out[0].value["start"], kBase + 10'000);
}

TEST(GatewayFilterTest, SlidingTimeWindowPutsEachEventInEveryWindowThatCoversIt) {
  // 10s windows every 5s: [-5s,5s), [0s,10s), [5s,15s), [10s,20s)...
  Chain chain({TimeWindow(10'000, 5'000)});
  EXPECT_TRUE(chain.Push("a", 1000).empty());
  EXPECT_EQ(*chain.chain().NextDeadline(), At(5'000));
  auto out = chain.Flush(5'000);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(Batch(out[0]), (json{"a"}));
  EXPECT_EQ(out[0].value["start"], kBase - 5'000);
  EXPECT_EQ(out[0].value["end"], kBase + 5'000);

  EXPECT_TRUE(chain.Push("b", 6000).empty());
  EXPECT_EQ(*chain.chain().NextDeadline(), At(10'000));
  out = chain.Flush(10'000);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(Batch(out[0]), (json{"a", "b"}));

  EXPECT_TRUE(chain.Push("c", 12'000).empty());
  // One late flush closes both windows that ended by then, in order.
  out = chain.Flush(20'000);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(Batch(out[0]), (json{"b", "c"}));
  EXPECT_EQ(out[0].value["end"], kBase + 15'000);
  EXPECT_EQ(Batch(out[1]), (json{"c"}));
  EXPECT_EQ(out[1].value["end"], kBase + 20'000);
  EXPECT_FALSE(chain.chain().NextDeadline().has_value());
  EXPECT_EQ(chain.chain().buffered_events(), 0u);
  EXPECT_EQ(chain.stage(0).in.Get(), 3u);
  EXPECT_EQ(chain.stage(0).out.Get(), 4u);
}

TEST(GatewayFilterTest, FiltersComposeInManifestOrder) {
  RangeFilterSpec clamp{.field = "", .min = std::nullopt, .max = 10.0, .clamp = true};
  DeadbandFilterSpec band{.field = "", .delta = 1};
  // range then deadband: 5, 10 (12 clamped), 10 (15 clamped: inside the band), 9.5 (in the band).
  Chain range_first({clamp, band});
  EXPECT_EQ(range_first.Values({5, 12, 15, 9.5}), (std::vector<json>{
                                                      5,
                                                      10.0,
                                                  }));
  EXPECT_EQ(range_first.stage(0).in.Get(), 4u);
  EXPECT_EQ(range_first.stage(0).out.Get(), 4u);
  EXPECT_EQ(range_first.stage(1).in.Get(), 4u);
  EXPECT_EQ(range_first.stage(1).out.Get(), 2u);
  // deadband then range: the band sees raw values (all 4 pass), then they are clamped.
  Chain band_first({band, clamp});
  EXPECT_EQ(band_first.Values({5, 12, 15, 9.5}), (std::vector<json>{5, 10.0, 10.0, 9.5}));

  // deadband then a count window: the window batches only what passed the band.
  Chain batched({DeadbandFilterSpec{.field = "v", .delta = 1}, CountWindow(2)});
  std::vector<json> batches;
  for (double v : {1.0, 1.5, 2.0, 2.2, 3.0, 5.0}) {
    for (auto& out : batched.Push({{"v", v}})) batches.push_back(Batch(out));
  }
  // Passed: 1, 2, 3, 5 (1.5 and 2.2 are within 1 of the last passed value).
  EXPECT_EQ(batches, (std::vector<json>{json::array({{{"v", 1.0}}, {{"v", 2.0}}}),
                                        json::array({{{"v", 3.0}}, {{"v", 5.0}}})}));
  EXPECT_EQ(batched.stage(1).in.Get(), 4u);
  EXPECT_EQ(batched.stage(1).out.Get(), 2u);
}

TEST(GatewayFilterTest, StateIsKeptPerTopic) {
  Chain chain({DeadbandFilterSpec{.field = "", .delta = 1}});
  std::vector<std::string> passed;
  // a:10 first; b:10 first (own key); a:10.5 in a's band; b:11 out of b's band; a:11 out of a's.
  for (auto [topic, v] : std::vector<std::pair<std::string, double>>{
           {"a", 10}, {"b", 10}, {"a", 10.5}, {"b", 11}, {"a", 11}}) {
    for (auto& out : chain.Push(v, 0, topic))
      passed.push_back(std::string(out.Topic()) + "=" + out.value.dump());
  }
  EXPECT_EQ(passed, (std::vector<std::string>{"a=10.0", "b=10.0", "b=11.0", "a=11.0"}));
  EXPECT_EQ(chain.chain().key_count(), 2u);
}

TEST(GatewayFilterTest, KeyFieldGroupsMessagesAcrossTopics) {
  Chain chain({CountWindow(2)}, "meta.pump");
  EXPECT_TRUE(chain.Push({{"meta", {{"pump", "p1"}}}, {"v", 1}}, 0, "plant/1/temp").empty());
  EXPECT_TRUE(chain.Push({{"meta", {{"pump", "p2"}}}, {"v", 2}}, 0, "plant/2/temp").empty());
  auto out = chain.Push({{"meta", {{"pump", "p1"}}}, {"v", 3}}, 0, "plant/1/vibration");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].value["key"], "p1");
  EXPECT_EQ(out[0].Topic(), "plant/1/vibration");  // the batch's last event
  EXPECT_EQ(Batch(out[0])[0]["v"], 1);
  EXPECT_EQ(Batch(out[0])[1]["v"], 3);
  // A number names its key by its JSON text; a message without the field is keyed by topic.
  EXPECT_TRUE(chain.Push({{"meta", {{"pump", 7}}}, {"v", 4}}, 0, "x").empty());
  out = chain.Push({{"meta", {{"pump", 7}}}, {"v", 5}}, 0, "y");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].value["key"], "7");
  // Without the field the topic is the key: here "p2", the same key as pump p2 above.
  out = chain.Push({{"v", 6}}, 0, "p2");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].value["key"], "p2");
  EXPECT_EQ(Batch(out[0])[0]["v"], 2);
  EXPECT_EQ(Batch(out[0])[1]["v"], 6);
  EXPECT_EQ(chain.chain().key_count(), 3u);  // p1, p2, 7
}

TEST(GatewayFilterTest, MaxKeysEvictsTheLeastRecentlySeenKey) {
  Chain chain({CountWindow(2)}, "", /*max_keys=*/2);
  EXPECT_TRUE(chain.Push(1, 0, "a").empty());
  EXPECT_TRUE(chain.Push(2, 0, "b").empty());
  EXPECT_TRUE(chain.Push(3, 0, "c").empty());  // evicts a with its half-filled window
  EXPECT_EQ(chain.evicted(), 1u);
  EXPECT_TRUE(chain.Push(4, 0, "a").empty());  // a is new again; evicts b
  EXPECT_EQ(chain.evicted(), 2u);
  auto out = chain.Push(5, 0, "a");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(Batch(out[0]), (json{4, 5}));  // not 1: a's old window went with its state
  auto c = chain.Push(6, 0, "c");          // c was seen after b, so it stayed
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(Batch(c[0]), (json{3, 6}));
  EXPECT_EQ(chain.chain().key_count(), 2u);
  EXPECT_EQ(chain.chain().buffered_events(), 0u);
}

TEST(GatewayFilterTest, EvictionDropsAKeysTimeWindowAndItsDeadline) {
  Chain chain({TimeWindow(10'000)}, "", /*max_keys=*/1);
  EXPECT_TRUE(chain.Push("a", 1000, "a").empty());
  EXPECT_TRUE(chain.Push("b", 12'000, "b").empty());  // evicts a, whose window ended at 10s
  EXPECT_EQ(*chain.chain().NextDeadline(), At(20'000));
  auto out = chain.Flush(20'000);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].value["key"], "b");
  EXPECT_EQ(Batch(out[0]), (json{"b"}));
}

TEST(GatewayFilterTest, WindowBuffersAreBoundedPerChain) {
  Chain chain({TimeWindow(10'000)});
  for (std::size_t i = 0; i < kMaxBufferedEvents + 2; ++i) (void)chain.Push(1, 0);
  EXPECT_EQ(chain.chain().buffered_events(), kMaxBufferedEvents);
  EXPECT_EQ(chain.stage(0).overflow.Get(), 2u);
  auto out = chain.Flush(10'000);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].value["count"], kMaxBufferedEvents);
  EXPECT_EQ(chain.chain().buffered_events(), 0u);
}

TEST(GatewayFilterTest, CreateRefusesCountersThatDoNotFitTheFilters) {
  MqttTriggerSpec trigger;
  trigger.topic = "a";
  trigger.filters = {DeadbandFilterSpec{.field = "", .delta = 1}};
  ShardCounter evicted;
  auto chain = FilterChain::Create(trigger, {{}, &evicted});
  ASSERT_FALSE(chain.ok());
  EXPECT_EQ(chain.status().code(), StatusCode::kInvalidArgument);
  std::vector<FilterStageCounters> counters(1);
  trigger.filters = {DeadbandFilterSpec{.field = "", .delta = 0}};
  EXPECT_FALSE(FilterChain::Create(trigger, {counters, &evicted}).ok());
}

TEST(GatewayFilterTest, MetricsLabelStagesAndKeepCountingWhenTheLayoutIsTheSame) {
  FunctionSpec spec;
  spec.mqtt_triggers.resize(2);
  spec.mqtt_triggers[1].filters = {DeadbandFilterSpec{.field = "", .delta = 1}, CountWindow(2)};
  const auto stages = FilterStagesOf(spec);
  ASSERT_EQ(stages.size(), 2u);
  EXPECT_EQ(stages[0], (FilterMetrics::Stage{1, "0:deadband"}));
  EXPECT_EQ(stages[1], (FilterMetrics::Stage{1, "1:window"}));

  MetricsRegistry registry(2);
  (void)registry.ForFunction("fn", "lua");
  FilterMetricsPtr metrics = registry.ForFilters("fn", stages, 2);
  EXPECT_EQ(registry.ForFilters("fn", stages, 2), metrics);
  EXPECT_TRUE(metrics->TriggerStages(0, 0).empty());
  ASSERT_EQ(metrics->TriggerStages(1, 1).size(), 2u);
  metrics->TriggerStages(0, 1)[0].in.Add(3);
  metrics->TriggerStages(1, 1)[0].in.Add(2);
  metrics->TriggerStages(1, 1)[1].out.Add(1);
  metrics->KeysEvicted(1, 1).Add(4);
  const std::string text = registry.RenderPrometheus("0", "x");
  auto has = [&](const std::string& line) { return text.find(line + "\n") != std::string::npos; };
  EXPECT_TRUE(
      has(R"(wisp_filter_events_in_total{function="fn",trigger="1",filter="0:deadband"} 5)"))
      << text;
  EXPECT_TRUE(
      has(R"(wisp_filter_events_out_total{function="fn",trigger="1",filter="1:window"} 1)"));
  EXPECT_TRUE(has(R"(wisp_filter_keys_evicted_total{function="fn",trigger="1"} 4)"));
  EXPECT_EQ(text.find(R"(trigger="0")"), std::string::npos);  // trigger 0 has no filters

  // A new layout starts new counters; deleting the function drops its series.
  auto fewer = std::vector<FilterMetrics::Stage>(stages.begin(), stages.begin() + 1);
  EXPECT_NE(registry.ForFilters("fn", fewer, 2), metrics);
  registry.RemoveFunction("fn");
  EXPECT_EQ(registry.RenderPrometheus("0", "x").find("wisp_filter_"), std::string::npos);
}

}  // namespace
}  // namespace wisp
