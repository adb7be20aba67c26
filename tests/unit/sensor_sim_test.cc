// The sensor simulator without a broker: the generator's determinism, its healthy ranges, what
// each fault does to its series, the rate and pacing arithmetic, and the flag checks.
#include <atomic>
#include <cmath>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <CLI/CLI.hpp>

#include "cli/sensor_sim.h"
#include "cli/sim_command.h"

namespace wisp::sim {
namespace {

using nlohmann::ordered_json;

constexpr double kStartEpoch = 1'780'000'000;  // a fixed ts origin, 2026-05-28 UTC

SimConfig SmallPlant() {
  SimConfig config;
  config.pumps = 3;
  config.feeders = 1;
  config.hvac = 2;
  config.rate_hz = 1;
  config.seed = 42;
  config.start_epoch_s = kStartEpoch;
  return config;
}

Generator Make(const SimConfig& config) {
  auto generator = Generator::Create(config);
  EXPECT_TRUE(generator.ok()) << generator.status().ToString();
  return std::move(generator).value();
}

struct Sample {
  double t;
  ordered_json payload;
};

// Every reading of one device (by topic) over `seconds` of simulated time.
std::vector<Sample> Series(const SimConfig& config, const std::string& topic, double seconds) {
  Generator generator = Make(config);
  std::vector<Sample> out;
  while (generator.now_s() < seconds) {
    Tick tick = generator.Step();
    for (auto& r : tick.readings) {
      if (r.topic == topic) out.push_back({tick.time_s, r.payload});
    }
  }
  return out;
}

// Mean of `field` over the samples with from <= t < to.
double Mean(const std::vector<Sample>& series, const std::string& field, double from, double to) {
  double sum = 0;
  int n = 0;
  for (const auto& s : series) {
    if (s.t >= from && s.t < to) {
      sum += s.payload[field].get<double>();
      ++n;
    }
  }
  EXPECT_GT(n, 0) << "no samples of " << field << " in [" << from << ", " << to << ")";
  return n ? sum / n : NAN;
}

double Max(const std::vector<Sample>& series, const std::string& field, double from, double to) {
  double best = -INFINITY;
  for (const auto& s : series) {
    if (s.t >= from && s.t < to) best = std::max(best, s.payload[field].get<double>());
  }
  return best;
}

double Min(const std::vector<Sample>& series, const std::string& field, double from, double to) {
  double best = INFINITY;
  for (const auto& s : series) {
    if (s.t >= from && s.t < to) best = std::min(best, s.payload[field].get<double>());
  }
  return best;
}

SimConfig WithFault(const std::string& spec) {
  SimConfig config = SmallPlant();
  auto fault = ParseFaultSpec(spec);
  EXPECT_TRUE(fault.ok()) << fault.status().ToString();
  if (fault.ok()) config.faults.push_back(*fault);
  return config;
}

// ---- Determinism and the shape of the readings

std::string Dump(const SimConfig& config, int ticks) {
  Generator generator = Make(config);
  std::string out;
  for (int i = 0; i < ticks; ++i) {
    for (auto& r : generator.Step().readings) out += r.topic + " " + r.payload.dump() + "\n";
  }
  return out;
}

TEST(SensorSimTest, TheSameSeedGivesTheSameReadingsAndAnotherSeedOthers) {
  SimConfig config = SmallPlant();
  config.faults.push_back(*ParseFaultSpec("pump:p2:bearing@100s"));
  config.fault_rate_per_hour = 30;
  const std::string first = Dump(config, 600);
  EXPECT_EQ(first, Dump(config, 600));
  config.seed = 43;
  EXPECT_NE(first, Dump(config, 600));
}

TEST(SensorSimTest, ReadingsNameTheirDeviceAndCarryTheSimulatedTime) {
  SimConfig config = SmallPlant();
  config.line = "press-3";
  config.rate_hz = 4;
  Generator generator = Make(config);
  generator.Step();
  Tick tick = generator.Step();
  EXPECT_DOUBLE_EQ(tick.time_s, 0.25);
  ASSERT_EQ(tick.readings.size(), 6u);
  const std::vector<std::string> topics = {"plant/press-3/pump/p1", "plant/press-3/pump/p2",
                                           "plant/press-3/pump/p3", "plant/press-3/feeder/f1",
                                           "plant/press-3/hvac/h1", "plant/press-3/hvac/h2"};
  for (std::size_t i = 0; i < topics.size(); ++i) {
    EXPECT_EQ(tick.readings[i].topic, topics[i]);
    EXPECT_DOUBLE_EQ(tick.readings[i].payload["ts"].get<double>(), kStartEpoch + 0.25);
  }
  const ordered_json& pump = tick.readings[0].payload;
  EXPECT_EQ(pump["pump"], "p1");
  EXPECT_EQ(pump.begin().key(), "pump");  // id first, for people reading the stream
  for (const char* field : {"vibration", "pressure", "flow"}) {
    EXPECT_TRUE(pump[field].is_number()) << pump.dump();
  }
  EXPECT_TRUE(tick.readings[3].payload["voltage"].is_number());
  EXPECT_TRUE(tick.readings[3].payload["current"].is_number());
  EXPECT_EQ(tick.readings[3].payload["feeder"], "f1");
  EXPECT_TRUE(tick.readings[4].payload["temperature"].is_number());
  EXPECT_EQ(tick.readings[5].payload["hvac"], "h2");
}

TEST(SensorSimTest, HealthyDevicesStayInTheirNormalRanges) {
  SimConfig config = SmallPlant();
  // Seven hours from 00:00 UTC on a 1 s grid cover pump duty cycles, the morning shift start
  // and the thermostats' cycling.
  config.start_epoch_s = std::floor(kStartEpoch / 86400) * 86400;
  Generator generator = Make(config);
  int pump_stopped = 0, pump_running = 0, compressor_on = 0;
  double feeder_min = INFINITY, feeder_max = -INFINITY, current_min = INFINITY,
         current_max = -INFINITY;
  while (generator.now_s() < 7 * 3600) {
    for (auto& r : generator.Step().readings) {
      const ordered_json& p = r.payload;
      if (p.contains("pump")) {
        const double v = p["vibration"], pressure = p["pressure"], flow = p["flow"];
        EXPECT_GE(v, 0);
        EXPECT_LT(v, 4.5) << "healthy pumps stay in ISO 10816 zones A/B: " << p.dump();
        EXPECT_GE(pressure, 0);
        EXPECT_LT(pressure, 6) << p.dump();
        EXPECT_GE(flow, 0);
        EXPECT_LT(flow, 50) << p.dump();
        if (p["running"]) {
          ++pump_running;
          EXPECT_GT(flow, 10) << p.dump();
          EXPECT_GT(pressure, 1.2) << "above the static head: " << p.dump();
        } else {
          ++pump_stopped;
          EXPECT_LT(flow, 1.5) << p.dump();
          EXPECT_LT(v, 1) << p.dump();
          EXPECT_LT(pressure, 1.2) << "the static head only: " << p.dump();
        }
      } else if (p.contains("feeder")) {
        feeder_min = std::min(feeder_min, p["voltage"].get<double>());
        feeder_max = std::max(feeder_max, p["voltage"].get<double>());
        current_min = std::min(current_min, p["current"].get<double>());
        current_max = std::max(current_max, p["current"].get<double>());
        EXPECT_NEAR(p["frequency"].get<double>(), 50, 0.2);
      } else {
        const double temperature = p["temperature"], setpoint = p["setpoint"];
        EXPECT_NEAR(temperature, setpoint, 1.5) << p.dump();
        compressor_on += p["compressor"].get<bool>();
      }
    }
  }
  EXPECT_GT(pump_running, pump_stopped) << "pumps run 12 of every 15 minutes";
  EXPECT_GT(pump_stopped, 0);
  // EN 50160: within +-10 % of 230 V; a healthy feeder stays well inside.
  EXPECT_GT(feeder_min, 230 * 0.95);
  EXPECT_LT(feeder_max, 230 * 1.05);
  EXPECT_LT(current_max, 400) << "below the rating";
  EXPECT_GT(current_max - current_min, 150) << "the shift starts at 06:00 and raises the load";
  EXPECT_GT(compressor_on, 0) << "the thermostat cycles";
}

TEST(SensorSimTest, FlowFollowsPumpSpeedAndPressureItsSquare) {
  auto series = Series(SmallPlant(), "plant/line1/pump/p1", 400);
  ASSERT_GT(series.size(), 300u);
  // Across the demand cycle, the readings with more flow have more pressure.
  double lo_flow = INFINITY, hi_flow = -INFINITY, p_at_lo = 0, p_at_hi = 0;
  for (auto& s : series) {
    if (!s.payload["running"]) continue;
    const double flow = s.payload["flow"];
    if (flow < lo_flow) lo_flow = flow, p_at_lo = s.payload["pressure"];
    if (flow > hi_flow) hi_flow = flow, p_at_hi = s.payload["pressure"];
  }
  EXPECT_GT(hi_flow, lo_flow * 1.2);
  EXPECT_GT(p_at_hi, p_at_lo);
}

// ---- Faults

TEST(SensorSimFaultTest, BearingWearRaisesVibrationIntoZoneDWithSpikes) {
  const std::string topic = "plant/line1/pump/p2";
  auto healthy = Series(SmallPlant(), topic, 300);
  auto worn = Series(WithFault("pump:p2:bearing@60s"), topic, 300);
  EXPECT_LT(Max(healthy, "vibration", 0, 300), 4.5);
  EXPECT_LT(Max(worn, "vibration", 0, 60), 4.5) << "nothing before the fault";
  EXPECT_GT(Mean(worn, "vibration", 150, 300), 7.1) << "zone D within a couple of minutes";
  // Spikes: some readings jump well above their neighbours.
  int spikes = 0;
  for (std::size_t i = 1; i + 1 < worn.size(); ++i) {
    const double v = worn[i].payload["vibration"];
    if (worn[i].t > 60 && v > worn[i - 1].payload["vibration"].get<double>() + 1 &&
        v > worn[i + 1].payload["vibration"].get<double>() + 1) {
      ++spikes;
    }
  }
  EXPECT_GE(spikes, 5);
  // The process side is untouched.
  ASSERT_EQ(worn.size(), healthy.size());
  for (std::size_t i = 0; i < worn.size(); ++i) {
    EXPECT_EQ(worn[i].payload["flow"], healthy[i].payload["flow"]);
    EXPECT_EQ(worn[i].payload["pressure"], healthy[i].payload["pressure"]);
  }
}

TEST(SensorSimFaultTest, CavitationDropsPressureAndFlowAndShakesThePump) {
  const std::string topic = "plant/line1/pump/p1";
  auto healthy = Series(SmallPlant(), topic, 400);
  auto cavitating = Series(WithFault("pump:p1:cavitation@100s"), topic, 400);
  EXPECT_LT(Mean(cavitating, "pressure", 100, 400), 0.85 * Mean(healthy, "pressure", 100, 400));
  EXPECT_LT(Mean(cavitating, "flow", 100, 400), 0.9 * Mean(healthy, "flow", 100, 400));
  EXPECT_GT(Mean(cavitating, "vibration", 100, 400), Mean(healthy, "vibration", 100, 400) + 1.5);
  EXPECT_NEAR(Mean(cavitating, "pressure", 0, 100), Mean(healthy, "pressure", 0, 100), 1e-9);
}

TEST(SensorSimFaultTest, VoltageSagIsBelowEn50160ForItsLengthOnly) {
  const std::string topic = "plant/line1/feeder/f1";
  auto sagging = Series(WithFault("feeder:f1:sag@60s+10s"), topic, 120);
  EXPECT_GT(Min(sagging, "voltage", 0, 60), 207);
  EXPECT_LT(Max(sagging, "voltage", 60, 70), 207);
  EXPECT_GT(Min(sagging, "voltage", 70, 120), 207);
}

TEST(SensorSimFaultTest, SwellRaisesTheVoltageAboveTenPercent) {
  auto swelling = Series(WithFault("feeder:f1:swell@30s"), "plant/line1/feeder/f1", 60);
  EXPECT_LT(Max(swelling, "voltage", 0, 30), 253);
  EXPECT_GT(Min(swelling, "voltage", 30, 40), 253);
  EXPECT_LT(Max(swelling, "voltage", 40, 60), 253) << "10 s by default";
}

TEST(SensorSimFaultTest, OvercurrentClimbsAboveTheRatingAndPullsTheVoltageDown) {
  const std::string topic = "plant/line1/feeder/f1";
  auto healthy = Series(SmallPlant(), topic, 120);
  auto overloaded = Series(WithFault("feeder:f1:overcurrent@30s+60s"), topic, 120);
  EXPECT_LT(Max(overloaded, "current", 0, 30), 400);
  EXPECT_GT(Min(overloaded, "current", 45, 90), 400);
  EXPECT_LT(Mean(overloaded, "voltage", 45, 90), Mean(healthy, "voltage", 45, 90) - 3);
  EXPECT_LT(Max(overloaded, "current", 90, 120), 400);
}

TEST(SensorSimFaultTest, CompressorFailureLetsTheRoomWarmPastTheSetpoint) {
  const std::string topic = "plant/line1/hvac/h1";
  auto healthy = Series(SmallPlant(), topic, 400);
  auto failed = Series(WithFault("hvac:h1:compressor@60s"), topic, 400);
  const double setpoint = healthy.front().payload["setpoint"];
  EXPECT_LT(Max(healthy, "temperature", 0, 400), setpoint + 1.5);
  EXPECT_GT(Min(failed, "temperature", 200, 400), setpoint + 2);
  EXPECT_GT(Mean(failed, "temperature", 300, 400), Mean(failed, "temperature", 200, 300))
      << "still warming";
}

TEST(SensorSimFaultTest, AStuckSensorRepeatsItselfThenRecovers) {
  const std::string topic = "plant/line1/pump/p3";
  auto stuck = Series(WithFault("pump:p3:stuck@50s+40s"), topic, 120);
  std::vector<std::string> during;
  for (auto& s : stuck) {
    ordered_json fields = s.payload;
    fields.erase("ts");
    if (s.t >= 50 && s.t < 90) during.push_back(fields.dump());
  }
  ASSERT_EQ(during.size(), 40u);
  for (auto& d : during) EXPECT_EQ(d, during.front());
  EXPECT_EQ(during.front(), [&] {
    ordered_json before = stuck[49].payload;  // t = 49: the last good reading
    before.erase("ts");
    return before.dump();
  }());
  std::set<double> after;
  for (int i = 90; i < 120; ++i) after.insert(stuck[i].payload["vibration"].get<double>());
  EXPECT_GT(after.size(), 10u) << "alive again";
  EXPECT_DOUBLE_EQ(stuck[60].payload["ts"].get<double>(), kStartEpoch + 60) << "time goes on";
}

TEST(SensorSimFaultTest, DropoutSilencesTheDeviceOnly) {
  auto config = WithFault("hvac:h2:dropout@10s+20s");
  Generator generator = Make(config);
  std::vector<double> heard;
  while (generator.now_s() < 60) {
    Tick tick = generator.Step();
    EXPECT_EQ(tick.readings.size(), tick.time_s >= 10 && tick.time_s < 30 ? 5u : 6u);
    for (auto& r : tick.readings) {
      if (r.topic == "plant/line1/hvac/h2") heard.push_back(tick.time_s);
    }
  }
  EXPECT_EQ(heard.size(), 40u);
}

TEST(SensorSimFaultTest, FaultStartsAndEndsAreNoted) {
  SimConfig config = SmallPlant();
  config.faults.push_back(*ParseFaultSpec("feeder:f1:sag@5s+3s"));
  config.faults.push_back(*ParseFaultSpec("pump:p1:bearing@6s"));
  Generator generator = Make(config);
  std::vector<std::pair<double, std::string>> notes;
  while (generator.now_s() < 20) {
    Tick tick = generator.Step();
    for (auto& n : tick.notes) notes.emplace_back(tick.time_s, n);
  }
  ASSERT_EQ(notes.size(), 3u);
  EXPECT_EQ(notes[0], (std::pair<double, std::string>{5, "feeder f1: sag starts, for 3 s"}));
  EXPECT_EQ(notes[1], (std::pair<double, std::string>{6, "pump p1: bearing starts"}));
  EXPECT_EQ(notes[2], (std::pair<double, std::string>{8, "feeder f1: sag ends"}));
}

TEST(SensorSimFaultTest, RandomFaultsHappenAtTheirRateAndLeaveHealthyReadingsAlone) {
  SimConfig config = SmallPlant();
  config.fault_rate_per_hour = 6;  // per device: ~36 over an hour for six devices
  Generator generator = Make(config);
  Generator quiet = Make(SmallPlant());
  int starts = 0;
  bool same_until_first_fault = true;
  while (generator.now_s() < 3600) {
    Tick tick = generator.Step();
    Tick calm = quiet.Step();
    for (auto& n : tick.notes) starts += n.find("starts") != std::string::npos;
    if (starts == 0 && tick.readings.size() == calm.readings.size()) {
      for (std::size_t i = 0; i < tick.readings.size(); ++i) {
        same_until_first_fault &= tick.readings[i].payload == calm.readings[i].payload;
      }
    }
  }
  EXPECT_GE(starts, 10);
  EXPECT_LE(starts, 70);
  EXPECT_TRUE(same_until_first_fault);
}

// ---- Parsing and arithmetic

TEST(SensorSimParseTest, FaultSpecs) {
  auto bearing = ParseFaultSpec("pump:p2:bearing@30s");
  ASSERT_TRUE(bearing.ok()) << bearing.status().ToString();
  EXPECT_EQ(bearing->device, DeviceKind::kPump);
  EXPECT_EQ(bearing->device_id, "p2");
  EXPECT_EQ(bearing->kind, FaultKind::kBearing);
  EXPECT_DOUBLE_EQ(bearing->start_s, 30);
  EXPECT_TRUE(std::isinf(bearing->length_s));

  auto sag = ParseFaultSpec("feeder:f1:sag@1m+500ms");
  ASSERT_TRUE(sag.ok()) << sag.status().ToString();
  EXPECT_DOUBLE_EQ(sag->start_s, 60);
  EXPECT_DOUBLE_EQ(sag->length_s, 0.5);
  EXPECT_DOUBLE_EQ(ParseFaultSpec("feeder:f1:sag@0")->length_s, 10) << "the default";
}

TEST(SensorSimParseTest, BadFaultSpecsSayWhatIsWrong) {
  struct Case {
    const char* text;
    const char* says;
  };
  for (const Case& c : std::vector<Case>{
           {"pump:p2:bearing", "KIND:ID:FAULT@START"},
           {"pump:bearing@3s", "KIND:ID:FAULT@START"},
           {"valve:v1:stuck@3s", "unknown device kind 'valve'"},
           {"pump:p1:sag@3s", "choose from bearing, cavitation, stuck, dropout"},
           {"hvac:h1:compressor@soon", "not a duration"},
           {"feeder:f1:sag@3s+0s", "more than 0"},
           {"pump::bearing@3s", "KIND:ID:FAULT@START"},
       }) {
    auto spec = ParseFaultSpec(c.text);
    ASSERT_FALSE(spec.ok()) << c.text;
    EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(spec.status().message().find(c.says), std::string::npos)
        << c.text << ": " << spec.status().message();
  }
}

TEST(SensorSimParseTest, Rates) {
  EXPECT_DOUBLE_EQ(*ParseRate("10"), 10);
  EXPECT_DOUBLE_EQ(*ParseRate("10/s"), 10);
  EXPECT_DOUBLE_EQ(*ParseRate("30/min"), 0.5);
  EXPECT_DOUBLE_EQ(*ParseRate("120/h"), 1.0 / 30);
  EXPECT_DOUBLE_EQ(*ParseRate("0.5/s"), 0.5);
  EXPECT_DOUBLE_EQ(*ParseRate("1/h"), 1.0 / 3600);
  for (const char* bad : {"", "0", "-1", "fast", "10/day", "10/", "5000/s", "0.5/h", "1e400"}) {
    auto rate = ParseRate(bad);
    EXPECT_FALSE(rate.ok()) << "'" << bad << "'";
  }
  EXPECT_NE(ParseRate("5000/s").status().message().find("1/h to 1000/s"), std::string::npos);
}

TEST(SensorSimParseTest, TicksAndPacing) {
  EXPECT_EQ(TicksInDuration(60, 10), 600u);
  EXPECT_EQ(TicksInDuration(60, 0.1), 6u);  // 60 * 0.1 is 6.000000000000001 in doubles
  EXPECT_EQ(TicksInDuration(1, 0.1), 1u);   // t = 0 only
  EXPECT_EQ(TicksInDuration(2.5, 1), 3u);   // t = 0, 1, 2
  EXPECT_EQ(TicksInDuration(0, 5), 0u);

  using std::chrono::milliseconds;
  EXPECT_EQ(WallOffset(0, 10, 1), milliseconds(0));
  EXPECT_EQ(WallOffset(10, 10, 1), milliseconds(1000));
  EXPECT_EQ(WallOffset(10, 10, 10), milliseconds(100));
  EXPECT_EQ(WallOffset(1, 1.0 / 3, 1), milliseconds(3000));
  EXPECT_EQ(WallOffset(3600, 1, 3600), milliseconds(1000)) << "an hour a second";
  EXPECT_GT(WallOffset(~0ULL, 1.0 / 3600, 0.001), std::chrono::hours(24 * 365 * 100))
      << "saturates instead of overflowing";

  // The generator's clock follows the same grid.
  SimConfig config = SmallPlant();
  config.rate_hz = 0.1;
  Generator generator = Make(config);
  for (int i = 0; i < 6; ++i) generator.Step();
  EXPECT_DOUBLE_EQ(generator.now_s(), 60);
}

TEST(SensorSimParseTest, GeneratorRefusesImpossibleConfigs) {
  SimConfig config = SmallPlant();
  config.faults.push_back(*ParseFaultSpec("pump:p9:bearing@1s"));
  auto missing = Generator::Create(config);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("ids are p1 to p3"), std::string::npos)
      << missing.status().message();

  config = SmallPlant();
  config.hvac = 0;
  config.faults.push_back(*ParseFaultSpec("hvac:h1:compressor@1s"));
  EXPECT_NE(Generator::Create(config).status().message().find("no hvac devices"),
            std::string::npos);

  config = SmallPlant();
  config.line = "a/b";
  EXPECT_FALSE(Generator::Create(config).ok());
  config = SmallPlant();
  config.pumps = config.feeders = config.hvac = 0;
  EXPECT_NE(Generator::Create(config).status().message().find("nothing to simulate"),
            std::string::npos);
  config = SmallPlant();
  config.pumps = 1001;
  EXPECT_FALSE(Generator::Create(config).ok());
}

}  // namespace
}  // namespace wisp::sim

namespace wisp {
namespace {

constexpr double kStart = 1'780'000'000;

TEST(SimCommandTest, PlanChecksEveryFlag) {
  struct Case {
    std::function<void(SimOptions&)> change;
    const char* says;
  };
  const std::vector<Case> cases = {
      {[](SimOptions& o) { o.rate = "fast"; }, "--rate"},
      {[](SimOptions& o) { o.duration = "a while"; }, "--duration"},
      {[](SimOptions& o) { o.duration = "0s"; }, "more than 0"},
      {[](SimOptions& o) { o.qos = 2; }, "--qos must be 0 or 1"},
      {[](SimOptions& o) { o.format = "xml"; }, "json or cbor"},
      {[](SimOptions& o) { o.speed = 0; }, "--speed"},
      {[](SimOptions& o) { o.speed = 1e-9; }, "from 0.001 to 1000000"},
      {[](SimOptions& o) { o.fault_rate = -1; }, "--fault-rate"},
      {[](SimOptions& o) { o.broker = "http://127.0.0.1:1883"; }, "--broker"},
      {[](SimOptions& o) { o.faults = {"pump:p7:bearing@1s"}; }, "no such device"},
      {[](SimOptions& o) { o.faults = {"pump:p1:melt@1s"}; }, "--fault"},
      {[](SimOptions& o) { o.offline = true; }, "--offline needs a --duration"},
      {[](SimOptions& o) { o.pumps = -1; }, "--pumps"},
  };
  for (const Case& c : cases) {
    SimOptions options;
    c.change(options);
    auto plan = PlanSim(options, 0);
    ASSERT_FALSE(plan.ok()) << c.says;
    EXPECT_EQ(plan.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(plan.status().message().find(c.says), std::string::npos)
        << "expected '" << c.says << "' in: " << plan.status().message();
  }

  SimOptions good;
  good.rate = "2/s";
  good.duration = "90s";
  good.faults = {"pump:p2:bearing@30s"};
  good.format = "cbor";
  auto plan = PlanSim(good, 1000);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_DOUBLE_EQ(plan->config.rate_hz, 2);
  EXPECT_DOUBLE_EQ(*plan->duration_s, 90);
  EXPECT_EQ(plan->broker, "mqtt://127.0.0.1:1883");
  EXPECT_TRUE(plan->cbor);
  EXPECT_EQ(plan->config.faults.size(), 1u);
  EXPECT_FALSE(PlanSim(SimOptions{}, 0)->duration_s.has_value()) << "forever by default";
}

TEST(SimCommandTest, OfflineRunPrintsEveryReadingWithoutABroker) {
  SimOptions options;
  options.offline = true;
  options.duration = "10s";
  options.rate = "2/s";
  options.pumps = 1;
  options.feeders = 1;
  options.hvac = 0;
  options.faults = {"feeder:f1:sag@5s"};
  options.broker = "mqtt://127.0.0.1:1";  // never used
  auto plan = PlanSim(options, kStart);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  std::atomic<bool> stop{false};
  std::ostringstream out, log;
  ASSERT_TRUE(RunSim(*plan, stop, out, log).ok()) << log.str();
  std::istringstream lines(out.str());
  std::string line;
  int pump = 0, feeder = 0;
  while (std::getline(lines, line)) {
    const auto space = line.find(' ');
    ASSERT_NE(space, std::string::npos) << line;
    auto payload = nlohmann::json::parse(line.substr(space + 1));
    if (line.starts_with("plant/line1/pump/p1 ")) ++pump;
    if (line.starts_with("plant/line1/feeder/f1 ")) {
      ++feeder;
      const double t = payload["ts"].get<double>() - kStart;
      EXPECT_EQ(payload["voltage"].get<double>() < 207, t >= 5) << line;
    }
  }
  EXPECT_EQ(pump, 20);
  EXPECT_EQ(feeder, 20);
  EXPECT_NE(log.str().find("feeder f1: sag starts, for 10 s"), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("40 readings generated"), std::string::npos) << log.str();

  std::ostringstream none;
  stop = true;
  ASSERT_TRUE(RunSim(*plan, stop, none, log).ok());
  EXPECT_EQ(none.str(), "") << "a stop before the first tick publishes nothing";
}

TEST(SimCommandTest, CborPayloadsDecodeToTheSameObject) {
  nlohmann::ordered_json payload = {{"pump", "p1"}, {"ts", 1.5}, {"vibration", 2.75}};
  const std::string cbor = EncodePayload(payload, true);
  EXPECT_EQ(static_cast<unsigned char>(cbor[0]), 0xa3) << "a CBOR map of three pairs";
  EXPECT_EQ(nlohmann::ordered_json::from_cbor(cbor), payload);
  EXPECT_EQ(EncodePayload(payload, false), R"({"pump":"p1","ts":1.5,"vibration":2.75})");
}

TEST(SimCommandTest, FlagsParseIntoTheSubcommand) {
  CLI::App app{"test"};
  SimCommand sim(app);
  EXPECT_FALSE(sim.parsed());
  EXPECT_NO_THROW(app.parse("sim --pumps 3 --fault pump:p1:bearing@5s --print", false));
  EXPECT_TRUE(sim.parsed());
  CLI::App bad{"test"};
  SimCommand bad_sim(bad);
  EXPECT_THROW(bad.parse("sim --pumps many", false), CLI::ParseError);
}

}  // namespace
}  // namespace wisp
