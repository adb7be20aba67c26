// The sensor simulator's generator: plausible readings from pumps, power feeders and HVAC units
// on one production line, with faults injected on a schedule or at random (docs/sim.md).
//
// Pure and deterministic: the Generator owns a simulated clock that advances by 1/rate seconds
// per Step(), and every random number comes from generators seeded by SimConfig::seed, so the
// same config yields the same readings, byte for byte (the noise is our own xoshiro256** and
// Box-Muller, not the standard library's unspecified distributions). Nothing here touches
// the network or the wall clock; `wisp sim` (cli/sim_command.h) paces and publishes the ticks.
//
// Thread safety: a Generator is a plain value used by one thread at a time; the free functions
// are pure.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "wisp/status.h"

namespace wisp::sim {

enum class DeviceKind { kPump, kFeeder, kHvac };
// "pump", "feeder", "hvac": the topic level and the payload's id field.
std::string_view DeviceKindName(DeviceKind kind);

enum class FaultKind {
  kBearing,      // pump: vibration ramps up, with impacts
  kCavitation,   // pump: pressure and flow drop and fluctuate, broadband vibration
  kSag,          // feeder: voltage dip to ~70 % of nominal
  kSwell,        // feeder: voltage rise to ~113 % of nominal
  kOvercurrent,  // feeder: current climbs to ~1.6x the rating (a stalled motor)
  kCompressor,   // hvac: the compressor stops cooling; the room warms up
  kStuck,        // any: the sensor repeats the values it had when the fault began
  kDropout,      // any: the device publishes nothing
};
std::string_view FaultKindName(FaultKind kind);
// The faults that make sense for a kind of device, in a stable order.
const std::vector<FaultKind>& FaultsFor(DeviceKind kind);

inline constexpr double kUntilTheEnd = std::numeric_limits<double>::infinity();

struct FaultSpec {
  DeviceKind device = DeviceKind::kPump;
  std::string device_id;  // "p2"
  FaultKind kind = FaultKind::kBearing;
  double start_s = 0;              // simulated seconds after the start
  double length_s = kUntilTheEnd;  // how long it lasts
};

// How long a fault lasts when the spec gives no "+LENGTH": sags and swells are short events,
// overcurrent half a minute, wear and failures last until the end of the run.
double DefaultFaultLength(FaultKind kind);

// Parses "KIND:ID:FAULT@START[+LENGTH]", e.g. "pump:p2:bearing@30s" or "feeder:f1:sag@1m+5s".
// START and LENGTH are durations (units.h: ms, s, m, h). InvalidArgument names what is wrong and
// lists the valid choices. Does not check that the device exists (the Generator does).
Result<FaultSpec> ParseFaultSpec(std::string_view text);

// Parses a reading rate: "10", "10/s", "30/min", "120/h", "0.5/s". Returns readings per second,
// which must lie in [1/3600, 1000]. InvalidArgument otherwise.
Result<double> ParseRate(std::string_view text);

// How many ticks a run of `duration_s` simulated seconds at `rate_hz` has: the ticks at
// t = 0, 1/rate, 2/rate, ... that fall before the end (a 60 s run at 10/s has 600).
std::uint64_t TicksInDuration(double duration_s, double rate_hz);

struct SimConfig {
  std::string line = "line1";            // the topic's line level: plant/<line>/...
  int pumps = 3, feeders = 1, hvac = 2;  // 0..1000 each, ids p1.., f1.., h1..
  double rate_hz = 1.0;                  // readings per second, per device
  std::uint64_t seed = 1;
  double start_epoch_s = 0;  // the payloads' "ts" at simulated time 0 (seconds since 1970)
  std::vector<FaultSpec> faults;
  // Random faults: expected number that start per device per simulated hour (0: none). Each
  // picks one of FaultsFor(kind) and lasts 30 s to 5 min.
  double fault_rate_per_hour = 0;
};

struct Reading {
  std::string topic;               // plant/<line>/<kind>/<id>
  nlohmann::ordered_json payload;  // {"pump":"p1","ts":...,"vibration":...}, fields in order
};

struct Tick {
  double time_s = 0;              // simulated seconds since the start
  std::vector<Reading> readings;  // one per device that is not dropped out, in device order
  // Faults that began or ended during this tick, in words ("pump p2: bearing starts").
  std::vector<std::string> notes;
};

class Device;  // one simulated machine (sensor_sim.cc)

class Generator {
 public:
  // Validates the config (line is one topic level, counts, rate, faults name existing devices
  // and faults of their kind) and builds the devices. InvalidArgument says what is wrong.
  static Result<Generator> Create(SimConfig config);
  Generator(Generator&&) noexcept;
  Generator& operator=(Generator&&) noexcept;
  ~Generator();

  // Produces the readings at the current simulated time, then advances it by 1/rate.
  Tick Step();

  double now_s() const;  // simulated time of the next Step()
  std::uint64_t ticks() const { return ticks_; }
  std::size_t device_count() const { return devices_.size(); }
  const SimConfig& config() const { return config_; }

 private:
  Generator(SimConfig config, std::vector<std::unique_ptr<Device>> devices);

  SimConfig config_;
  std::vector<std::unique_ptr<Device>> devices_;
  std::uint64_t ticks_ = 0;
};

}  // namespace wisp::sim
