#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <variant>
#include <vector>

#include <gtest/gtest.h>

#include "wisp/function_spec.h"

namespace wisp {
namespace {

using std::chrono::milliseconds;

// The manifest of docs/manifest.md and CONVENTIONS.md, every key set.
constexpr const char* kFullManifest = R"yaml(
version: 1
functions:
  pump-alert:
    runtime: lua
    handler: ./handler.lua:on_reading
    version: 1.0.0
    description: Alerts when a pump vibrates too much
    environment: { VIBRATION_LIMIT: "7.1", RETRIES: 3, VERBOSE: true }
    secrets: [ plant-api-token ]
    labels: { line: press-3, team.io/owner: maintenance }
    limits: { memory: 32Mi, timeout: 2s }
    concurrency: { max: 4, target: 2 }
    scale: { min: 0, max: 8 }
    auth: token
    triggers:
      - http: { path: /pump-alert, methods: [POST] }
      - mqtt: { topic: plant/+/pump/#, qos: 1, group: alerts }
      - timer: { schedule: "*/5 * * * *" }
  hello:
    runtime: lua
    handler: hello.lua
)yaml";

std::vector<FunctionSpec> ParseOk(const std::string& yaml) {
  Result<std::vector<FunctionSpec>> specs = ParseManifest(yaml);
  EXPECT_TRUE(specs.ok()) << specs.status().ToString() << "\n" << yaml;
  return specs.ok() ? *specs : std::vector<FunctionSpec>{};
}

std::string ParseError(const std::string& yaml, std::string_view source = "wisp.yaml") {
  Result<std::vector<FunctionSpec>> specs = ParseManifest(yaml, source);
  EXPECT_FALSE(specs.ok()) << yaml;
  if (specs.ok()) return "";
  EXPECT_EQ(specs.status().code(), StatusCode::kInvalidArgument) << specs.status().ToString();
  return specs.status().message();
}

TEST(ManifestTest, ParsesEveryKey) {
  std::vector<FunctionSpec> specs = ParseOk(kFullManifest);
  ASSERT_EQ(specs.size(), 2u);
  const FunctionSpec& f = specs[0];  // document order is kept
  EXPECT_EQ(f.name, "pump-alert");
  EXPECT_EQ(f.runtime, "lua");
  EXPECT_EQ(f.handler_file, "handler.lua");
  EXPECT_EQ(f.handler_entry, "on_reading");
  EXPECT_EQ(f.version, "1.0.0");
  EXPECT_EQ(f.environment.at("VIBRATION_LIMIT"), "7.1");
  EXPECT_EQ(f.environment.at("RETRIES"), "3");
  EXPECT_EQ(f.environment.at("VERBOSE"), "true");
  EXPECT_EQ(f.labels.at("line"), "press-3");
  EXPECT_EQ(f.labels.at("team.io/owner"), "maintenance");
  EXPECT_EQ(f.limits.memory_bytes, 32u << 20);
  EXPECT_EQ(f.limits.timeout, milliseconds(2000));
  EXPECT_EQ(f.concurrency_max, 4);
  EXPECT_EQ(f.concurrency_target, 2);
  EXPECT_EQ(f.scale_min, 0);
  EXPECT_EQ(f.scale_max, 8);
  EXPECT_EQ(f.auth, AuthMode::kToken);
  ASSERT_EQ(f.mqtt_triggers.size(), 1u);
  EXPECT_EQ(f.mqtt_triggers[0].topic, "plant/+/pump/#");
  EXPECT_EQ(f.mqtt_triggers[0].qos, 1);
  EXPECT_EQ(f.mqtt_triggers[0].group, "alerts");
  ASSERT_EQ(f.timer_triggers.size(), 1u);
  EXPECT_EQ(f.timer_triggers[0].schedule, "*/5 * * * *");
  EXPECT_EQ(f.timer_triggers[0].interval, milliseconds(0));
  EXPECT_EQ(specs[1].name, "hello");
}

TEST(ManifestTest, Defaults) {
  std::vector<FunctionSpec> specs = ParseOk(kFullManifest);
  ASSERT_EQ(specs.size(), 2u);
  const FunctionSpec& f = specs[1];
  EXPECT_EQ(f.handler_file, "hello.lua");
  EXPECT_EQ(f.handler_entry, "handle");
  EXPECT_EQ(f.version, "0.0.0");
  EXPECT_TRUE(f.environment.empty());
  EXPECT_TRUE(f.labels.empty());
  EXPECT_EQ(f.limits.memory_bytes, 64u << 20);
  EXPECT_EQ(f.limits.timeout, milliseconds(5000));
  EXPECT_EQ(f.concurrency_max, 1);
  EXPECT_EQ(f.scale_min, 1);
  EXPECT_EQ(f.scale_max, 8);
  EXPECT_EQ(f.auth, AuthMode::kPublic);
  EXPECT_TRUE(f.mqtt_triggers.empty());
  EXPECT_TRUE(f.timer_triggers.empty());
}

TEST(ManifestTest, SingleFunctionForm) {
  std::vector<FunctionSpec> specs = ParseOk(
      "name: hello\nruntime: lua\nhandler: handler.lua:handle\nversion: 2\n"
      "limits: { memory: 16Mi }\n");
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].name, "hello");
  EXPECT_EQ(specs[0].version, "2");  // in this form `version` is the function's
  EXPECT_EQ(specs[0].limits.memory_bytes, 16u << 20);
}

TEST(ManifestTest, SingleFunctionFormErrorsHaveNoFunctionsPrefix) {
  EXPECT_EQ(ParseError("name: hello\nruntime: lua\nhandler: h.lua\nlimits: { memory: 32Q }\n"),
            "wisp.yaml: limits.memory: '32Q' has an unknown size unit 'Q' (use Ki, Mi, Gi, kB, "
            "MB or GB)");
  EXPECT_EQ(ParseError("name: Hello\nruntime: lua\nhandler: h.lua\n").rfind("wisp.yaml: name: ", 0),
            0u);
  EXPECT_EQ(ParseError("name: hello\nhandler: h.lua\n"),
            "wisp.yaml: runtime: is required (e.g. runtime: lua)");
}

TEST(ManifestTest, HandlerForms) {
  for (const char* handler : {"./handler.lua:handle", "handler.lua:handle", "handler.lua"}) {
    std::vector<FunctionSpec> specs =
        ParseOk(std::string("name: a\nruntime: lua\nhandler: ") + handler + "\n");
    ASSERT_EQ(specs.size(), 1u) << handler;
    EXPECT_EQ(specs[0].handler_file, "handler.lua") << handler;
    EXPECT_EQ(specs[0].handler_entry, "handle") << handler;
  }
  std::vector<FunctionSpec> specs = ParseOk("name: a\nruntime: lua\nhandler: lib/x.lua:run_1\n");
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].handler_file, "lib/x.lua");
  EXPECT_EQ(specs[0].handler_entry, "run_1");
}

TEST(ManifestTest, LoneScaleMinRaisesDefaultMax) {
  std::vector<FunctionSpec> specs =
      ParseOk("name: a\nruntime: lua\nhandler: h.lua\nscale: { min: 10 }\n");
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].scale_min, 10);
  EXPECT_EQ(specs[0].scale_max, 10);
}

TEST(ManifestTest, LimitsAtTheirBounds) {
  std::vector<FunctionSpec> specs = ParseOk(
      "name: a\nruntime: lua\nhandler: h.lua\nlimits: { memory: 1Mi, timeout: 1ms }\n"
      "concurrency: { max: 1024 }\nscale: { min: 1000, max: 1000 }\n");
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].limits.memory_bytes, 1u << 20);
  EXPECT_EQ(specs[0].limits.timeout, milliseconds(1));
  specs = ParseOk("name: a\nruntime: lua\nhandler: h.lua\nlimits: { memory: 4Gi, timeout: 15m }\n");
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].limits.memory_bytes, 4ull << 30);
  EXPECT_EQ(specs[0].limits.timeout, milliseconds(15 * 60 * 1000));
}

TEST(ManifestTest, EmptyCollectionsAreAccepted) {
  ParseOk(
      "name: a\nruntime: lua\nhandler: h.lua\nenvironment:\nlabels: {}\nsecrets: []\n"
      "triggers: []\n");
}

// One good mqtt trigger per row: the parsed MqttTriggerSpec.
struct GoodMqttTrigger {
  const char* yaml;  // the value of `- mqtt:`
  const char* topic;
  int qos;
  const char* group;
};

class GoodMqttTriggerTest : public testing::TestWithParam<GoodMqttTrigger> {};

TEST_P(GoodMqttTriggerTest, IsParsed) {
  const GoodMqttTrigger& c = GetParam();
  std::vector<FunctionSpec> specs = ParseOk(
      std::string("name: a\nruntime: lua\nhandler: h.lua\ntriggers:\n  - mqtt: ") + c.yaml + "\n");
  ASSERT_EQ(specs.size(), 1u);
  ASSERT_EQ(specs[0].mqtt_triggers.size(), 1u);
  const MqttTriggerSpec& t = specs[0].mqtt_triggers[0];
  EXPECT_EQ(t.topic, c.topic);
  EXPECT_EQ(t.qos, c.qos);
  EXPECT_EQ(t.group, c.group);
}

INSTANTIATE_TEST_SUITE_P(
    ManifestMqtt, GoodMqttTriggerTest,
    testing::Values(GoodMqttTrigger{"{ topic: plant/+/pump/#, qos: 1, group: alerts }",
                                    "plant/+/pump/#", 1, "alerts"},
                    GoodMqttTrigger{"{ topic: a/b }", "a/b", 1, ""},  // qos defaults to 1, no group
                    GoodMqttTrigger{"{ topic: a/b, qos: 0 }", "a/b", 0, ""},
                    GoodMqttTrigger{"{ topic: '#' }", "#", 1, ""},
                    GoodMqttTrigger{"{ topic: '+' }", "+", 1, ""},
                    GoodMqttTrigger{"{ topic: +/+/# }", "+/+/#", 1, ""},
                    GoodMqttTrigger{"{ topic: / }", "/", 1, ""},  // two empty levels
                    GoodMqttTrigger{"{ topic: a//b/ }", "a//b/", 1, ""},
                    GoodMqttTrigger{"{ topic: /+ }", "/+", 1, ""},
                    GoodMqttTrigger{"{ topic: $SYS/broker/# }", "$SYS/broker/#", 1, ""},
                    GoodMqttTrigger{"{ topic: $share }", "$share", 1,
                                    ""},  // a plain topic named $share
                    GoodMqttTrigger{"{ topic: caf\xc3\xa9/Temp }", "caf\xc3\xa9/Temp", 1, ""},
                    GoodMqttTrigger{"{ topic: 42 }", "42", 1, ""},
                    GoodMqttTrigger{"{ topic: a, group: g-1 }", "a", 1, "g-1"}));

TEST(ManifestTest, SeveralMqttTriggersKeepTheirOrder) {
  std::vector<FunctionSpec> specs = ParseOk(
      "name: a\nruntime: lua\nhandler: h.lua\ntriggers:\n"
      "  - mqtt:\n      topic: a/#\n      qos: 0\n"
      "  - http: { path: /a }\n"
      "  - mqtt: { topic: b/+, group: workers }\n");
  ASSERT_EQ(specs.size(), 1u);
  ASSERT_EQ(specs[0].mqtt_triggers.size(), 2u);
  EXPECT_EQ(specs[0].mqtt_triggers[0].topic, "a/#");
  EXPECT_EQ(specs[0].mqtt_triggers[0].qos, 0);
  EXPECT_EQ(specs[0].mqtt_triggers[1].topic, "b/+");
  EXPECT_EQ(specs[0].mqtt_triggers[1].qos, 1);
  EXPECT_EQ(specs[0].mqtt_triggers[1].group, "workers");
}

TEST(ManifestTest, MqttTopicLengthLimit) {
  std::string base = "name: a\nruntime: lua\nhandler: h.lua\ntriggers:\n  - mqtt: { topic: ";
  std::vector<FunctionSpec> specs = ParseOk(base + std::string(65535, 'a') + " }\n");
  ASSERT_EQ(specs.size(), 1u);
  ASSERT_EQ(specs[0].mqtt_triggers.size(), 1u);
  EXPECT_EQ(specs[0].mqtt_triggers[0].topic.size(), 65535u);
  EXPECT_EQ(ParseError(base + std::string(65536, 'a') + " }\n"),
            "wisp.yaml: triggers[0].mqtt.topic: is 65536 bytes long; MQTT allows at most 65535");
}

TEST(ManifestTest, MqttTriggerMessages) {
  const std::string base = "name: a\nruntime: lua\nhandler: h.lua\ntriggers:\n  - mqtt: ";
  std::string message = ParseError(base + "{ topic: a, qos: 2 }\n");
  EXPECT_EQ(message.rfind("wisp.yaml: triggers[0].mqtt.qos: QoS 2 is not supported", 0), 0u)
      << message;
  EXPECT_NE(message.find("acknowledges a QoS 1 message after the function ran"), std::string::npos)
      << message;
  message = ParseError(base + "{ topic: a, qso: 1 }\n");
  EXPECT_EQ(message.rfind("wisp.yaml: triggers[0].mqtt.qso: unknown key; did you mean 'qos'?", 0),
            0u)
      << message;
  message = ParseError(base + "{ topic: a, format: xml }\n");
  EXPECT_EQ(message.rfind("wisp.yaml: triggers[0].mqtt.format: 'xml' is not a payload format", 0),
            0u)
      << message;
  for (const char* format : {"auto", "json", "cbor", "raw"}) {
    auto parsed = ParseManifest(base + "{ topic: a, format: " + format + " }\n");
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    EXPECT_EQ(parsed->front().mqtt_triggers.front().format,
              std::string(format) == "auto" ? "" : format);
  }
  message = ParseError(base + "{ topic: $share/g/a }\n");
  EXPECT_NE(message.find("group:"), std::string::npos) << message;
  EXPECT_EQ(ParseError(base + "\n"),
            "wisp.yaml: triggers[0].mqtt.topic: is required (e.g. mqtt: { topic: plant/+/pump })");
  EXPECT_NE(ParseError(base + "{ topic: \"a\\0b\" }\n").find("NUL"), std::string::npos);
  EXPECT_NE(ParseError(base + "{ topic: \"a\\x01b\" }\n").find("control"), std::string::npos);
}

TEST(ManifestTest, ParsesEveryFilter) {
  std::vector<FunctionSpec> specs = ParseOk(R"yaml(
name: a
runtime: lua
handler: h.lua
triggers:
  - mqtt:
      topic: plant/+/pump/#
      key: meta.pump
      max_keys: 500
      filters:
        - range: { field: vibration, min: 0, max: 50, action: clamp }
        - range: { field: vibration, max: 40 }
        - deadband: { field: vibration, delta: 0.2 }
        - ewma: { field: vibration, alpha: 0.3 }
        - downsample: { every: 10 }
        - downsample: { interval: 1s }
        - rate_limit: { rate: 5/s, burst: 10 }
        - rate_limit: { rate: 90/min }
        - window: { count: 10 }
        - window: { count: 10, slide: 5 }
        - window: { duration: 10s }
        - window: { duration: 10s, slide: 2s }
  - mqtt: { topic: other }
)yaml");
  ASSERT_EQ(specs.size(), 1u);
  ASSERT_EQ(specs[0].mqtt_triggers.size(), 2u);
  const MqttTriggerSpec& t = specs[0].mqtt_triggers[0];
  EXPECT_EQ(t.key, "meta.pump");
  EXPECT_EQ(t.max_keys, 500u);
  ASSERT_EQ(t.filters.size(), 12u);
  std::vector<std::string> names;
  for (const FilterSpec& f : t.filters) names.emplace_back(FilterName(f));
  EXPECT_EQ(names, (std::vector<std::string>{"range", "range", "deadband", "ewma", "downsample",
                                             "downsample", "rate_limit", "rate_limit", "window",
                                             "window", "window", "window"}));
  const auto& clamp = std::get<RangeFilterSpec>(t.filters[0]);
  EXPECT_EQ(clamp.field, "vibration");
  EXPECT_EQ(clamp.min, 0.0);
  EXPECT_EQ(clamp.max, 50.0);
  EXPECT_TRUE(clamp.clamp);
  const auto& drop = std::get<RangeFilterSpec>(t.filters[1]);
  EXPECT_FALSE(drop.min.has_value());
  EXPECT_EQ(drop.max, 40.0);
  EXPECT_FALSE(drop.clamp);  // drop is the default
  EXPECT_EQ(std::get<DeadbandFilterSpec>(t.filters[2]).delta, 0.2);
  EXPECT_EQ(std::get<EwmaFilterSpec>(t.filters[3]).alpha, 0.3);
  EXPECT_EQ(std::get<DownsampleFilterSpec>(t.filters[4]).every, 10);
  EXPECT_EQ(std::get<DownsampleFilterSpec>(t.filters[5]).interval, milliseconds(1000));
  EXPECT_EQ(std::get<RateLimitFilterSpec>(t.filters[6]).per_second, 5.0);
  EXPECT_EQ(std::get<RateLimitFilterSpec>(t.filters[6]).burst, 10.0);
  EXPECT_EQ(std::get<RateLimitFilterSpec>(t.filters[7]).per_second, 1.5);
  EXPECT_EQ(std::get<RateLimitFilterSpec>(t.filters[7]).burst, 2.0);  // default: ceil(rate/s)
  const auto& w0 = std::get<WindowFilterSpec>(t.filters[8]);
  EXPECT_EQ(w0.count, 10);
  EXPECT_EQ(w0.count_slide, 10);  // tumbling
  EXPECT_EQ(std::get<WindowFilterSpec>(t.filters[9]).count_slide, 5);
  const auto& w2 = std::get<WindowFilterSpec>(t.filters[10]);
  EXPECT_EQ(w2.duration, milliseconds(10000));
  EXPECT_EQ(w2.slide, milliseconds(10000));
  EXPECT_EQ(w2.count, 0);
  EXPECT_EQ(std::get<WindowFilterSpec>(t.filters[11]).slide, milliseconds(2000));
  // Defaults: keyed by topic, 10000 keys, no filters.
  EXPECT_EQ(specs[0].mqtt_triggers[1].key, "");
  EXPECT_EQ(specs[0].mqtt_triggers[1].max_keys, 10000u);
  EXPECT_TRUE(specs[0].mqtt_triggers[1].filters.empty());
}

TEST(ManifestTest, FilterMessages) {
  const std::string base =
      "version: 1\nfunctions:\n  x:\n    runtime: lua\n    handler: h.lua\n    triggers:\n"
      "      - mqtt:\n          topic: a\n          filters:\n"
      "            - deadband: { delta: 1 }\n            - ewma: { alpha: 0.5 }\n            - ";
  auto error = [&](const std::string& third) { return ParseError(base + third + "\n"); };
  const std::string at = "wisp.yaml: functions.x.triggers[0].mqtt.filters[2]";
  EXPECT_EQ(error("window: { count: 0 }"), at + ".window: count must be >= 1 and <= 10000");
  EXPECT_EQ(error("window: { count: 10, slide: 11 }"),
            at + ".window: slide must be >= 1 and <= count (10)");
  EXPECT_EQ(error("window: { count: 10, duration: 1s }"),
            at + ".window: give either count or duration (e.g. window: { count: 10 })");
  EXPECT_EQ(error("window: { duration: 10s, slide: 3s }"),
            at + ".window: duration (10s) must be a whole number of slides (3s)");
  EXPECT_EQ(error("window: { duration: 10s, slide: 1ms }"),
            at + ".window: duration (10s) must be at most 1000 slides (1ms each)");
  EXPECT_EQ(error("window: { duration: 1s, slide: 2s }"),
            at + ".window: slide must not be longer than duration (1s)");
  EXPECT_EQ(error("window: { duration: 0s }"),
            at + ".window.duration: '0s' is out of range (1ms..24h)");
  EXPECT_EQ(error("deadband: { field: v, delta: -1 }"), at + ".deadband: delta must be > 0");
  EXPECT_EQ(error("deadband: { field: v }"),
            at + ".deadband: needs delta (e.g. deadband: { delta: 0.5 })");
  EXPECT_EQ(error("deadband: { field: v, delta: lots }"),
            at + ".deadband.delta: 'lots' is not a number");
  EXPECT_EQ(error("deadband: { field: v, delta: .nan }"),
            at + ".deadband.delta: '.nan' is not a number");
  EXPECT_EQ(error("ewma: { alpha: 0 }"), at + ".ewma: alpha must be > 0 and <= 1");
  EXPECT_EQ(error("range: { field: v }"), at + ".range: needs min, max or both");
  EXPECT_EQ(error("range: { min: 5, max: 1 }"),
            at + ".range: min (5) must not be greater than max (1)");
  EXPECT_EQ(error("range: { max: 1, action: wrap }"),
            at + ".range.action: 'wrap' is not an action (use drop or clamp)");
  EXPECT_EQ(error("range: { field: a..b, max: 1 }"),
            at + ".range.field: 'a..b' has an empty part between dots");
  EXPECT_EQ(error("downsample: { every: 2, interval: 1s }"),
            at + ".downsample: give either every or interval (e.g. downsample: { every: 10 })");
  EXPECT_EQ(error("downsample: { every: 0 }"),
            at + ".downsample: every must be >= 1 and <= 1000000");
  EXPECT_EQ(error("rate_limit: { rate: 5 }"),
            at +
                ".rate_limit.rate: '5' is not a rate (a positive number of events per s, min or h, "
                "e.g. 5/s or 300/min)");
  EXPECT_EQ(
      error("rate_limit: { rate: -1/s }").rfind(at + ".rate_limit.rate: '-1/s' is not a rate", 0),
      0u);
  EXPECT_EQ(error("rate_limit: { burst: 3 }"),
            at + ".rate_limit: needs rate (e.g. rate_limit: { rate: 5/s })");
  EXPECT_EQ(error("median: { n: 3 }"),
            at + ": unknown filter 'median' (use range, deadband, ewma, downsample, rate_limit, "
                 "window)");
  EXPECT_EQ(error("window: 10"), at + ".window: expected a map of settings, found a value");
  EXPECT_EQ(error("{ window: { count: 2 }, ewma: { alpha: 1 } }"),
            at + ": expected one filter kind with its settings (e.g. - ewma: { alpha: 0.3 })");
  std::string message = error("window: { cuont: 2 }");
  EXPECT_EQ(message.rfind(at + ".window.cuont: unknown key; did you mean 'count'?", 0), 0u)
      << message;
  std::string many =
      "name: a\nruntime: lua\nhandler: h.lua\ntriggers:\n  - mqtt:\n"
      "      topic: a\n      filters:\n";
  for (int i = 0; i < 17; ++i) many += "        - ewma: { alpha: 1 }\n";
  EXPECT_EQ(ParseError(many),
            "wisp.yaml: triggers[0].mqtt.filters: has 17 filters; at most 16 are "
            "allowed");
}

// One good timer trigger per row: the parsed TimerTriggerSpec.
struct GoodTimerTrigger {
  const char* yaml;  // the value of `- timer:`
  std::int64_t interval_ms;
  const char* schedule;
};

class GoodTimerTriggerTest : public testing::TestWithParam<GoodTimerTrigger> {};

TEST_P(GoodTimerTriggerTest, IsParsed) {
  const GoodTimerTrigger& c = GetParam();
  std::vector<FunctionSpec> specs = ParseOk(
      std::string("name: a\nruntime: lua\nhandler: h.lua\ntriggers:\n  - timer: ") + c.yaml + "\n");
  ASSERT_EQ(specs.size(), 1u);
  ASSERT_EQ(specs[0].timer_triggers.size(), 1u);
  const TimerTriggerSpec& t = specs[0].timer_triggers[0];
  EXPECT_EQ(t.interval, milliseconds(c.interval_ms));
  EXPECT_EQ(t.schedule, c.schedule);
}

INSTANTIATE_TEST_SUITE_P(
    ManifestTimer, GoodTimerTriggerTest,
    testing::Values(GoodTimerTrigger{"{ interval: 30s }", 30000, ""},
                    GoodTimerTrigger{"{ interval: 100ms }", 100, ""},  // the minimum
                    GoodTimerTrigger{"{ interval: 1.5m }", 90000, ""},
                    GoodTimerTrigger{"{ interval: 24h }", 86400000, ""},
                    GoodTimerTrigger{"{ interval: 5 }", 5000, ""},  // bare number: seconds
                    GoodTimerTrigger{"{ schedule: \"*/5 * * * *\" }", 0, "*/5 * * * *"},
                    GoodTimerTrigger{"{ schedule: '0 9-17 * * MON-FRI' }", 0, "0 9-17 * * MON-FRI"},
                    GoodTimerTrigger{"{ schedule: '@daily' }", 0, "@daily"},
                    GoodTimerTrigger{"{ schedule: '0 0 1,15 jan-jun 0,7' }", 0,
                                     "0 0 1,15 jan-jun 0,7"},
                    GoodTimerTrigger{"\n      schedule: 30 2 * * *", 0, "30 2 * * *"}));

TEST(ManifestTest, SeveralTimerTriggersKeepTheirOrder) {
  std::vector<FunctionSpec> specs = ParseOk(
      "name: a\nruntime: lua\nhandler: h.lua\ntriggers:\n"
      "  - timer: { interval: 2s }\n"
      "  - mqtt: { topic: a/b }\n"
      "  - timer: { schedule: '@hourly' }\n");
  ASSERT_EQ(specs.size(), 1u);
  ASSERT_EQ(specs[0].timer_triggers.size(), 2u);
  EXPECT_EQ(specs[0].timer_triggers[0].interval, milliseconds(2000));
  EXPECT_EQ(specs[0].timer_triggers[0].schedule, "");
  EXPECT_EQ(specs[0].timer_triggers[1].interval, milliseconds(0));
  EXPECT_EQ(specs[0].timer_triggers[1].schedule, "@hourly");
  EXPECT_EQ(specs[0].mqtt_triggers.size(), 1u);
}

TEST(ManifestTest, TimerTriggerMessages) {
  const std::string base = "name: a\nruntime: lua\nhandler: h.lua\ntriggers:\n  - timer: ";
  EXPECT_EQ(ParseError(base + "{ schedule: '61 * * * *' }\n"),
            "wisp.yaml: triggers[0].timer.schedule: cron '61 * * * *': minute field '61' is out "
            "of range 0-59");
  EXPECT_EQ(ParseError(base + "{ schedule: '0 0 * * 8' }\n"),
            "wisp.yaml: triggers[0].timer.schedule: cron '0 0 * * 8': day-of-week field '8' is "
            "out of range 0-7");
  EXPECT_EQ(ParseError(base + "{ interval: 50ms }\n"),
            "wisp.yaml: triggers[0].timer.interval: '50ms' is too short (at least 100ms)");
  EXPECT_EQ(ParseError(base + "{ interval: 1s, schedule: '@daily' }\n"),
            "wisp.yaml: triggers[0].timer.schedule: give either interval or schedule, not both");
  EXPECT_EQ(ParseError(base + "{ schedule: '@daily', interval: 1s }\n"),
            "wisp.yaml: triggers[0].timer.interval: give either interval or schedule, not both");
  EXPECT_EQ(ParseError(base + "\n"),
            "wisp.yaml: triggers[0].timer: needs an interval or a schedule (e.g. timer: { "
            "interval: 30s } or timer: { schedule: \"*/5 * * * *\" })");
  EXPECT_EQ(ParseError(base + "{}\n"), ParseError(base + "\n"));
  std::string message = ParseError(base + "{ intervall: 1s }\n");
  EXPECT_EQ(message.rfind(
                "wisp.yaml: triggers[0].timer.intervall: unknown key; did you mean 'interval'?", 0),
            0u)
      << message;
  message = ParseError(base + "{ cron: '@daily' }\n");
  EXPECT_EQ(message,
            "wisp.yaml: triggers[0].timer.cron: unknown key (known keys: interval, schedule)")
      << message;
}

// One bad value per row: the error must name the field, in the documented form.
struct BadField {
  const char* key;    // set (or replaced) in an otherwise valid function
  const char* value;  // YAML text
  const char* path;   // expected field path after "functions.f."
};

class BadFieldTest : public testing::TestWithParam<BadField> {};

TEST_P(BadFieldTest, ErrorNamesTheField) {
  const BadField& c = GetParam();
  std::string runtime = "lua";
  std::string handler = "./handler.lua:handle";
  std::string extra;
  if (std::string(c.key) == "runtime") {
    runtime = c.value;
  } else if (std::string(c.key) == "handler") {
    handler = c.value;
  } else {
    extra = std::string("    ") + c.key + ": " + c.value + "\n";
  }
  std::string yaml = "version: 1\nfunctions:\n  f:\n    runtime: " + runtime +
                     "\n    handler: " + handler + "\n" + extra;
  std::string message = ParseError(yaml);
  std::string prefix = std::string("wisp.yaml: functions.f.") + c.path + ": ";
  EXPECT_EQ(message.rfind(prefix, 0), 0u) << "got: " << message << "\nwant prefix: " << prefix;
  EXPECT_GT(message.size(), prefix.size()) << "no problem stated";
}

INSTANTIATE_TEST_SUITE_P(
    EveryField, BadFieldTest,
    testing::Values(
        BadField{"runtime", "'Lua!'", "runtime"}, BadField{"runtime", "[lua]", "runtime"},
        BadField{"runtime", "''", "runtime"}, BadField{"runtime", "", "runtime"},
        BadField{"handler", "../x.lua:handle", "handler"},
        BadField{"handler", "/abs.lua", "handler"}, BadField{"handler", "a//b.lua", "handler"},
        BadField{"handler", ".hidden.lua", "handler"},
        BadField{"handler", "'handler.lua:'", "handler"},
        BadField{"handler", "handler.lua:1st", "handler"},
        BadField{"handler", "handler.lua:a.b", "handler"},
        BadField{"handler", "{file: x}", "handler"}, BadField{"version", "''", "version"},
        BadField{"version", "[1]", "version"}, BadField{"description", "{a: b}", "description"},
        BadField{"environment", "[A]", "environment"},
        BadField{"environment", "{1BAD: x}", "environment.1BAD"},
        BadField{"environment", "{BAD-NAME: x}", "environment.BAD-NAME"},
        BadField{"environment", "{A: [1]}", "environment.A"},
        BadField{"environment", "{A: }", "environment.A"},
        BadField{"environment", "{A: 1, A: 2}", "environment.A"}, BadField{"labels", "x", "labels"},
        BadField{"labels", "{-bad: x}", "labels.-bad"},
        BadField{"labels", "{a: {b: c}}", "labels.a"}, BadField{"limits", "7", "limits"},
        BadField{"limits", "{memory: 32Q}", "limits.memory"},
        BadField{"limits", "{memory: 512Ki}", "limits.memory"},
        BadField{"limits", "{memory: 5Gi}", "limits.memory"},
        BadField{"limits", "{memory: lots}", "limits.memory"},
        BadField{"limits", "{timeout: 0ms}", "limits.timeout"},
        BadField{"limits", "{timeout: 16m}", "limits.timeout"},
        BadField{"limits", "{timeout: soon}", "limits.timeout"},
        BadField{"limits", "{timeout: 2d}", "limits.timeout"},
        BadField{"limits", "{cpu: 1}", "limits.cpu"}, BadField{"concurrency", "4", "concurrency"},
        BadField{"concurrency", "{max: 0}", "concurrency.max"},
        BadField{"concurrency", "{max: 1025}", "concurrency.max"},
        BadField{"concurrency", "{max: two}", "concurrency.max"},
        BadField{"concurrency", "{max: 1.5}", "concurrency.max"},
        BadField{"concurrency", "{max: 99999999999999999999}", "concurrency.max"},
        BadField{"concurrency", "{target: 0}", "concurrency.target"},
        BadField{"concurrency", "{max: 2, target: 3}", "concurrency.target"},
        BadField{"concurrency", "{burst: 1}", "concurrency.burst"},
        BadField{"scale", "[1, 2]", "scale"}, BadField{"scale", "{min: -1}", "scale.min"},
        BadField{"scale", "{min: 1001}", "scale.min"}, BadField{"scale", "{max: 0}", "scale.max"},
        BadField{"scale", "{min: 5, max: 2}", "scale.min"},
        BadField{"scale", "{mx: 2}", "scale.mx"}, BadField{"auth", "private", "auth"},
        BadField{"auth", "", "auth"}, BadField{"secrets", "plant-token", "secrets"},
        BadField{"secrets", "[Bad_Name]", "secrets[0]"},
        BadField{"secrets", "[a, b, a]", "secrets[2]"}, BadField{"secrets", "[[a]]", "secrets[0]"},
        BadField{"triggers", "{http: {}}", "triggers"},
        BadField{"triggers", "[{smtp: {}}]", "triggers[0]"},
        BadField{"triggers", "[{http: {}}, {http: {}, mqtt: {}}]", "triggers[1]"},
        BadField{"triggers", "[http]", "triggers[0]"},
        BadField{"triggers", "[{http: 5}]", "triggers[0].http"},
        BadField{"triggers", "[{mqtt: 5}]", "triggers[0].mqtt"},
        BadField{"triggers", "[{mqtt: [a/b]}]", "triggers[0].mqtt"},
        BadField{"triggers", "[{mqtt: }]", "triggers[0].mqtt.topic"},
        BadField{"triggers", "[{mqtt: {qos: 1}}]", "triggers[0].mqtt.topic"},
        BadField{"triggers", "[{mqtt: {topic: ''}}]", "triggers[0].mqtt.topic"},
        BadField{"triggers", "[{mqtt: {topic: }}]", "triggers[0].mqtt.topic"},
        BadField{"triggers", "[{mqtt: {topic: [a]}}]", "triggers[0].mqtt.topic"},
        BadField{"triggers", "[{mqtt: {topic: 'a/b+/c'}}]", "triggers[0].mqtt.topic"},
        BadField{"triggers", "[{mqtt: {topic: '+a'}}]", "triggers[0].mqtt.topic"},
        BadField{"triggers", "[{mqtt: {topic: 'a/#/b'}}]", "triggers[0].mqtt.topic"},
        BadField{"triggers", "[{mqtt: {topic: 'a/b#'}}]", "triggers[0].mqtt.topic"},
        BadField{"triggers", "[{mqtt: {topic: '##'}}]", "triggers[0].mqtt.topic"},
        BadField{"triggers", "[{mqtt: {topic: '$share/g/a/b'}}]", "triggers[0].mqtt.topic"},
        BadField{"triggers", "[{mqtt: {topic: \"a\\0b\"}}]", "triggers[0].mqtt.topic"},
        BadField{"triggers", "[{mqtt: {topic: \"\xff\"}}]", "triggers[0].mqtt.topic"},
        BadField{"triggers", "[{http: {}}, {mqtt: {topic: 'a/#/b'}}]", "triggers[1].mqtt.topic"},
        BadField{"triggers", "[{mqtt: {topic: a, qos: 2}}]", "triggers[0].mqtt.qos"},
        BadField{"triggers", "[{mqtt: {topic: a, qos: x}}]", "triggers[0].mqtt.qos"},
        BadField{"triggers", "[{mqtt: {topic: a, qos: -1}}]", "triggers[0].mqtt.qos"},
        BadField{"triggers", "[{mqtt: {topic: a, qos: 1.0}}]", "triggers[0].mqtt.qos"},
        BadField{"triggers", "[{mqtt: {topic: a, qos: }}]", "triggers[0].mqtt.qos"},
        BadField{"triggers", "[{mqtt: {topic: a, group: 'a/b'}}]", "triggers[0].mqtt.group"},
        BadField{"triggers", "[{mqtt: {topic: a, group: 'a+'}}]", "triggers[0].mqtt.group"},
        BadField{"triggers", "[{mqtt: {topic: a, group: '#'}}]", "triggers[0].mqtt.group"},
        BadField{"triggers", "[{mqtt: {topic: a, group: ''}}]", "triggers[0].mqtt.group"},
        BadField{"triggers", "[{mqtt: {topic: a, group: Alerts}}]", "triggers[0].mqtt.group"},
        BadField{"triggers", "[{mqtt: {topic: a, qso: 1}}]", "triggers[0].mqtt.qso"},
        BadField{"triggers", "[{mqtt: {topic: a, filters: x}}]", "triggers[0].mqtt.filters"},
        BadField{"triggers", "[{mqtt: {topic: a, filters: [{ewma: {alpha: 2}}]}}]",
                 "triggers[0].mqtt.filters[0].ewma"},
        BadField{"triggers", "[{mqtt: {topic: a, key: ''}}]", "triggers[0].mqtt.key"},
        BadField{"triggers", "[{mqtt: {topic: a, max_keys: 0}}]", "triggers[0].mqtt.max_keys"},
        BadField{"triggers", "[{mqtt: {topic: a, format: yaml}}]", "triggers[0].mqtt.format"},
        BadField{"triggers", "[{mqtt: {topic: a, topic: b}}]", "triggers[0].mqtt.topic"},
        BadField{"triggers", "[{timer: 5}]", "triggers[0].timer"},
        BadField{"triggers", "[{timer: [30s]}]", "triggers[0].timer"},
        BadField{"triggers", "[{timer: }]", "triggers[0].timer"},
        BadField{"triggers", "[{timer: {}}]", "triggers[0].timer"},
        BadField{"triggers", "[{timer: {interval: }}]", "triggers[0].timer.interval"},
        BadField{"triggers", "[{timer: {interval: [1s]}}]", "triggers[0].timer.interval"},
        BadField{"triggers", "[{timer: {interval: soon}}]", "triggers[0].timer.interval"},
        BadField{"triggers", "[{timer: {interval: 2d}}]", "triggers[0].timer.interval"},
        BadField{"triggers", "[{timer: {interval: -1s}}]", "triggers[0].timer.interval"},
        BadField{"triggers", "[{timer: {interval: 0}}]", "triggers[0].timer.interval"},
        BadField{"triggers", "[{timer: {interval: 99ms}}]", "triggers[0].timer.interval"},
        BadField{"triggers", "[{timer: {interval: 1s, interval: 2s}}]",
                 "triggers[0].timer.interval"},
        BadField{"triggers", "[{timer: {interval: 1s, schedule: '@daily'}}]",
                 "triggers[0].timer.schedule"},
        BadField{"triggers", "[{timer: {schedule: }}]", "triggers[0].timer.schedule"},
        BadField{"triggers", "[{timer: {schedule: ''}}]", "triggers[0].timer.schedule"},
        BadField{"triggers", "[{timer: {schedule: [a]}}]", "triggers[0].timer.schedule"},
        BadField{"triggers", "[{timer: {schedule: '* * * *'}}]", "triggers[0].timer.schedule"},
        BadField{"triggers", "[{timer: {schedule: '60 * * * *'}}]", "triggers[0].timer.schedule"},
        BadField{"triggers", "[{timer: {schedule: '0 0 * FOO *'}}]", "triggers[0].timer.schedule"},
        BadField{"triggers", "[{timer: {schedule: '*/0 * * * *'}}]", "triggers[0].timer.schedule"},
        BadField{"triggers", "[{timer: {schedule: '@reboot'}}]", "triggers[0].timer.schedule"},
        BadField{"triggers", "[{http: {}}, {timer: {every: 5m}}]", "triggers[1].timer.every"},
        BadField{"timeout", "2s", "timeout"}, BadField{"runtime_version", "1", "runtime_version"}));

TEST(ManifestTest, ExampleErrorMessage) {
  EXPECT_EQ(ParseError("version: 1\nfunctions:\n  pump-alert:\n    runtime: lua\n"
                       "    handler: h.lua\n    limits: { memory: 32Q }\n"),
            "wisp.yaml: functions.pump-alert.limits.memory: '32Q' has an unknown size unit 'Q' "
            "(use Ki, Mi, Gi, kB, MB or GB)");
}

TEST(ManifestTest, SourceNameIsUsed) {
  std::string message =
      ParseError("name: a\nruntime: lua\nhandler: h.lua\nauth: nope\n", "fn/wisp.yaml");
  EXPECT_EQ(message.rfind("fn/wisp.yaml: auth: ", 0), 0u) << message;
}

TEST(ManifestTest, MissingRequiredKeys) {
  EXPECT_EQ(ParseError("functions:\n  f:\n    handler: h.lua\n"),
            "wisp.yaml: functions.f.runtime: is required (e.g. runtime: lua)");
  EXPECT_EQ(ParseError("functions:\n  f:\n    runtime: lua\n"),
            "wisp.yaml: functions.f.handler: is required (e.g. handler: ./handler.lua:handle)");
}

TEST(ManifestTest, UnknownKeySuggestsTheNearOne) {
  std::string message = ParseError(
      "functions:\n  f:\n    runtime: lua\n    handler: h.lua\n"
      "    limits: { timout: 2s }\n");
  EXPECT_EQ(message.rfind("wisp.yaml: functions.f.limits.timout: unknown key; did you mean "
                          "'timeout'?",
                          0),
            0u)
      << message;
  message =
      ParseError("functions:\n  f:\n    runtime: lua\n    handler: h.lua\n    enviroment: {}\n");
  EXPECT_NE(message.find("did you mean 'environment'"), std::string::npos) << message;
}

TEST(ManifestTest, UnknownTopLevelKey) {
  std::string message =
      ParseError("version: 1\nprovider: openfaas\nfunctions:\n  f: {runtime: lua, handler: h}\n");
  EXPECT_EQ(message.rfind("wisp.yaml: provider: unknown key", 0), 0u) << message;
}

TEST(ManifestTest, UnsupportedManifestVersion) {
  std::string message = ParseError("version: 2\nfunctions:\n  f: {runtime: lua, handler: h}\n");
  EXPECT_EQ(message.rfind("wisp.yaml: version: ", 0), 0u) << message;
  ParseOk("version: '1.0'\nfunctions:\n  f: {runtime: lua, handler: h}\n");
}

TEST(ManifestTest, YamlSyntaxErrorHasLineAndColumn) {
  std::string message =
      ParseError("version: 1\nfunctions:\n  f:\n    runtime: lua\n   handler: h.lua\n");
  EXPECT_EQ(message.rfind("wisp.yaml: line 5, column 4: ", 0), 0u) << message;
  message = ParseError("functions:\n  f: [1, 2\n");
  EXPECT_EQ(message.rfind("wisp.yaml: line 3, column 1: ", 0), 0u) << message;
}

TEST(ManifestTest, BadFunctionNames) {
  for (const char* name : {"Pump", "pump_alert", "-pump", "pump-", "p.q", "\"\""}) {
    std::string message =
        ParseError(std::string("functions:\n  ") + name + ": {runtime: lua, handler: h.lua}\n");
    EXPECT_NE(message.find("is not a valid function name"), std::string::npos) << message;
  }
  EXPECT_NE(ParseError("name: 'a b'\nruntime: lua\nhandler: h.lua\n").find("not a valid function"),
            std::string::npos);
}

TEST(ManifestTest, IsValidFunctionName) {
  for (const std::string& name :
       std::vector<std::string>{"a", "0", "pump-alert", "a-b-c", "x1", std::string(63, 'a')}) {
    EXPECT_TRUE(IsValidFunctionName(name)) << name;
  }
  for (const std::string& name :
       std::vector<std::string>{"", "A", "-a", "a-", "a_b", "a.b", "a b", "é", std::string(64, 'a'),
                                std::string("a\0b", 3)}) {
    EXPECT_FALSE(IsValidFunctionName(name)) << name;
  }
}

TEST(ManifestTest, NoFunctions) {
  for (const char* yaml : {"", "   \n", "# only a comment\n", "version: 1\n", "functions:\n",
                           "functions: {}\n", "hello\n", "[1, 2]\n", "functions: [a]\n"}) {
    std::string message = ParseError(yaml);
    EXPECT_EQ(message.rfind("wisp.yaml: ", 0), 0u) << message;
  }
}

TEST(ManifestTest, DuplicateFunctionName) {
  std::string message = ParseError(
      "functions:\n  f: {runtime: lua, handler: h.lua}\n  f: {runtime: lua, handler: g.lua}\n");
  EXPECT_EQ(message, "wisp.yaml: functions.f: appears twice");
}

TEST(ManifestTest, SecondDocumentIsRefused) {
  std::string message = ParseError("name: a\nruntime: lua\nhandler: h.lua\n---\nname: b\n");
  EXPECT_NE(message.find("more than one YAML document"), std::string::npos) << message;
}

TEST(ManifestTest, AliasesAreResolved) {
  std::vector<FunctionSpec> specs =
      ParseOk("functions:\n  a: &base {runtime: lua, handler: h.lua}\n  b: *base\n");
  ASSERT_EQ(specs.size(), 2u);
  EXPECT_EQ(specs[1].name, "b");
  EXPECT_EQ(specs[1].handler_file, "h.lua");
}

TEST(ManifestTest, HostileInputIsAnErrorNotACrash) {
  EXPECT_NE(ParseError(std::string(100000, '[')).find("nested too deeply"), std::string::npos);
  std::string deep_block;
  for (int i = 0; i < 800; ++i) deep_block += std::string(i, ' ') + "a:\n";
  ParseError(deep_block);
  std::string too_big = "name: a\nruntime: lua\nhandler: h.lua\ndescription: \"";
  too_big += std::string(1 << 20, 'x') + "\"\n";
  EXPECT_NE(ParseError(too_big).find("the limit is 1Mi"), std::string::npos);
  ParseError(std::string("\0\xff\xfe{[:\t\"", 9));
  ParseError("*undefined_alias\n");
  ParseError(",\"\xdd,@H");  // made YAML::LoadAll loop forever (fuzz/manifest_fuzz)
  ParseError("functions:\n  ? [complex, key]\n  : {runtime: lua}\n");
}

TEST(ManifestTest, AliasBombIsRefused) {
  // One 20 KB environment referenced by 40000 functions would be 800 MB of copies.
  std::string yaml =
      "functions:\n  f0: &f\n    runtime: lua\n    handler: h.lua\n"
      "    environment:\n";
  for (int i = 0; i < 1000; ++i) yaml += "      V" + std::to_string(i) + ": xxxxxxxxxxxx\n";
  for (int i = 1; i < 40000; ++i) yaml += "  f" + std::to_string(i) + ": *f\n";
  ASSERT_LT(yaml.size(), 1u << 20);
  EXPECT_NE(ParseError(yaml).find("expands to too much data"), std::string::npos);
}

TEST(ManifestTest, ErrorsEscapeControlCharacters) {
  std::string message = ParseError("name: a\nruntime: lua\nhandler: h.lua\nauth: \"x\\ny\"\n");
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_NE(message.find("'x\\x0ay'"), std::string::npos) << message;
}

#ifdef WISP_SOURCE_DIR
// The shipped examples and the docs' example must stay valid as the parser evolves.
TEST(ManifestTest, ExamplesParse) {
  namespace fs = std::filesystem;
  fs::path examples = fs::path(WISP_SOURCE_DIR) / "examples";
  if (!fs::is_directory(examples)) GTEST_SKIP() << "no examples directory";
  for (const fs::directory_entry& dir : fs::directory_iterator(examples)) {
    fs::path manifest = dir.path() / "wisp.yaml";
    if (!fs::exists(manifest)) continue;
    std::ifstream in(manifest, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    Result<std::vector<FunctionSpec>> specs = ParseManifest(text, manifest.string());
    EXPECT_TRUE(specs.ok()) << specs.status().ToString();
  }
}
#endif

}  // namespace
}  // namespace wisp

namespace wisp {
namespace {

TEST(ManifestTest, ProcessCommand) {
  std::vector<FunctionSpec> specs =
      ParseOk("name: a\nruntime: process\nhandler: main.py\ncommand: [python3, -u, main.py]\n");
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].command, (std::vector<std::string>{"python3", "-u", "main.py"}));
  EXPECT_TRUE(ParseOk("name: a\nruntime: process\nhandler: main.py\n")[0].command.empty());

  EXPECT_EQ(ParseError("name: a\nruntime: lua\nhandler: h.lua\ncommand: [lua]\n"),
            "wisp.yaml: command: is only for runtime: process");
  EXPECT_EQ(ParseError("name: a\nruntime: process\nhandler: m.py\ncommand: []\n"),
            "wisp.yaml: command: must be a list of 1 to 64 strings (e.g. [python3, main.py])");
  EXPECT_EQ(ParseError("name: a\nruntime: process\nhandler: m.py\ncommand: python3 m.py\n"),
            "wisp.yaml: command: must be a list of 1 to 64 strings (e.g. [python3, main.py])");
  EXPECT_EQ(ParseError("name: a\nruntime: process\nhandler: m.py\ncommand: [python3, \"\"]\n"),
            "wisp.yaml: command[1]: must be 1 to 4096 bytes without NUL");
}

}  // namespace
}  // namespace wisp
