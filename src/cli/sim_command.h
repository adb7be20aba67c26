// `wisp sim`: publishes the sensor simulator's readings (cli/sensor_sim.h) to an MQTT broker at
// a steady pace, or prints them (docs/sim.md).
//
// Split for testing: PlanSim turns the flags into a checked plan (pure), WallOffset is the
// pacing arithmetic (pure), RunSim does the I/O. SimCommand is the thin CLI11 glue that
// wisp_main.cc registers.
//
// Thread safety: RunSim runs on the calling thread; `stop` may be set from any thread or from a
// signal handler. The MQTT connection's own thread only sets a flag RunSim waits for.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "cli/sensor_sim.h"
#include "wisp/status.h"

namespace CLI {
class App;
}

namespace wisp {

// The flags as typed; defaults are what `wisp sim` with no flags does.
struct SimOptions {
  std::string broker = "mqtt://127.0.0.1:1883";
  std::string rate = "1/s";  // per device
  int pumps = 3, feeders = 1, hvac = 2;
  std::string line = "line1";
  std::string duration = "forever";  // simulated time, or "forever"
  std::vector<std::string> faults;   // KIND:ID:FAULT@START[+LENGTH]
  double fault_rate = 0;             // random faults per device per simulated hour
  std::uint64_t seed = 1;
  int qos = 0;
  std::string format = "json";  // json or cbor
  bool print = false;           // also write "topic payload" lines to stdout
  bool offline = false;         // no broker, no pacing: print a finite run at once
  double speed = 1;             // simulated seconds per wall-clock second
};

struct SimPlan {
  sim::SimConfig config;
  std::optional<double> duration_s;  // simulated seconds; nullopt: until stopped
  std::string broker;                // checked mqtt:// or mqtts:// URL ("" when offline)
  int qos = 0;
  bool cbor = false;
  bool print = false;
  bool offline = false;
  double speed = 1;
};

// Checks every flag and builds the plan; `start_epoch_s` becomes the payloads' ts at simulated
// time 0. InvalidArgument names the flag and what it accepts.
Result<SimPlan> PlanSim(const SimOptions& options, double start_epoch_s);

// When tick `tick` is due, measured from the first one: tick / (rate_hz * speed) seconds.
std::chrono::nanoseconds WallOffset(std::uint64_t tick, double rate_hz, double speed);

// The bytes of a reading: compact JSON, or CBOR (RFC 8949) of the same object.
std::string EncodePayload(const nlohmann::ordered_json& payload, bool cbor);

// Runs the plan until its duration has passed or `stop` becomes true. Offline: writes every
// reading to `out` at once ("topic payload", JSON) and never touches the network. Otherwise:
// connects (Unavailable if the broker cannot be reached within 10 s), publishes each tick's
// readings on the wall-clock schedule of WallOffset, counts readings it could not publish while
// the connection was down (a sensor has no buffer either), and before returning waits (up to
// 10 s) until the broker has everything it was given. Fault notes and a summary go to `log`.
Status RunSim(const SimPlan& plan, const std::atomic<bool>& stop, std::ostream& out,
              std::ostream& log);

// The `sim` subcommand: its flags on construction; Run() after parsing when parsed().
class SimCommand {
 public:
  explicit SimCommand(CLI::App& app);
  bool parsed() const;
  // Plans and runs; SIGINT/SIGTERM stop the run cleanly. Returns the process exit code: 0, 1
  // for a failure during the run, 2 for bad flags.
  int Run();

 private:
  CLI::App* command_;
  SimOptions options_;
};

}  // namespace wisp
