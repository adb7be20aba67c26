#include "cli/sensor_sim.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <numbers>
#include <optional>
#include <utility>

#include <fmt/format.h>

#include "wisp/units.h"

namespace wisp::sim {

using nlohmann::ordered_json;

namespace {

constexpr double kTwoPi = 2 * std::numbers::pi;

// xoshiro256** seeded through splitmix64: small, fast, and the same sequence everywhere (the
// standard library's distributions are not specified bit for bit, so we make our own).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) {
    for (auto& word : state_) word = SplitMix(seed);
  }
  std::uint64_t Next() {
    const std::uint64_t result = Rotl(state_[1] * 5, 7) * 9;
    const std::uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = Rotl(state_[3], 45);
    return result;
  }
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double Uniform(double low, double high) { return low + (high - low) * Uniform(); }
  double Normal() {  // Box-Muller; the second value is dropped to keep the state simple
    const double u1 = 1.0 - Uniform();  // (0, 1]: log(0) is -inf
    const double u2 = Uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
  }
  bool Chance(double probability) { return Uniform() < probability; }

 private:
  static std::uint64_t SplitMix(std::uint64_t& x) {
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  static std::uint64_t Rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t state_[4];
};

// A slowly wandering offset (Ornstein-Uhlenbeck): standard deviation `sigma` in the long run,
// forgetting its past over `tau` seconds. Models drift of a sensor, a grid or the weather.
struct Drift {
  double sigma, tau, value = 0;
  void Advance(double dt, Rng& rng) {
    if (dt <= 0) return;
    const double keep = std::exp(-dt / tau);
    value = value * keep + sigma * std::sqrt(1 - keep * keep) * rng.Normal();
  }
};

double Round(double value, int decimals) {
  const double scale = std::pow(10.0, decimals);
  const double rounded = std::round(value * scale) / scale;
  return rounded == 0 ? 0.0 : rounded;  // no "-0.0" in payloads
}

// Hours since midnight UTC at epoch seconds `epoch_s`.
double HourOfDay(double epoch_s) {
  const double hour = std::fmod(epoch_s / 3600.0, 24.0);
  return hour < 0 ? hour + 24 : hour;
}

std::uint64_t Mix(std::uint64_t seed, std::uint64_t a, std::uint64_t b) {
  return seed * 0x9e3779b97f4a7c15ULL ^ (a + 1) * 0xc2b2ae3d27d4eb4fULL ^
         (b + 1) * 0x165667b19e3779f9ULL;
}

}  // namespace

// ---- Devices

// One machine: its physics state, the faults scheduled for it, and its own random streams: one
// for the physics and sensor noise, one for when random faults start, one for what faults do.
// Kept apart so that a fault changes only what it is meant to change, and --fault-rate does not
// change a healthy series.
class Device {
 public:
  Device(DeviceKind kind, std::string id, std::uint64_t seed, std::uint64_t index)
      : kind_(kind),
        id_(std::move(id)),
        rng_(Mix(seed, static_cast<std::uint64_t>(kind), index)),
        fault_rng_(Mix(seed ^ 0x5eed, static_cast<std::uint64_t>(kind), index)),
        effect_rng_(Mix(seed ^ 0xfa17, static_cast<std::uint64_t>(kind), index)) {}
  virtual ~Device() = default;

  DeviceKind kind() const { return kind_; }
  const std::string& id() const { return id_; }

  struct ScheduledFault {
    FaultSpec spec;
    bool start_noted = false, end_noted = false;
  };
  void AddFault(FaultSpec spec) { faults_.push_back({std::move(spec)}); }
  std::vector<ScheduledFault>& faults() { return faults_; }

  // Seconds since `kind` began at simulated time t, or nullopt when it is not active.
  std::optional<double> FaultAge(FaultKind kind, double t) const {
    std::optional<double> age;
    for (const auto& f : faults_) {
      if (f.spec.kind == kind && t >= f.spec.start_s && t < f.spec.start_s + f.spec.length_s) {
        age = std::max(age.value_or(0), t - f.spec.start_s);
      }
    }
    return age;
  }
  bool AnyFaultActive(double t) const {
    for (const auto& f : faults_) {
      if (t >= f.spec.start_s && t < f.spec.start_s + f.spec.length_s) return true;
    }
    return false;
  }

  // Moves the physics from t - dt to t, in steps of at most a second so that a slow rate does
  // not change the dynamics (thermostats, ramps).
  void Advance(double t, double dt, double start_epoch_s) {
    if (dt == 0) Integrate(t, 0, start_epoch_s);  // the first tick: set up the derived state
    double done = 0;
    while (done < dt) {
      const double step = std::min(1.0, dt - done);
      done += step;
      Integrate(t - dt + done, step, start_epoch_s);
    }
  }
  // The measured values at t (sensor noise included), without the id and ts fields.
  virtual ordered_json Measure(double t) = 0;

  Rng& fault_rng() { return fault_rng_; }
  std::optional<ordered_json>& frozen() { return frozen_; }
  std::optional<ordered_json>& last() { return last_; }

 protected:
  virtual void Integrate(double t, double dt, double start_epoch_s) = 0;
  Rng& rng() { return rng_; }
  Rng& effect_rng() { return effect_rng_; }

 private:
  DeviceKind kind_;
  std::string id_;
  Rng rng_, fault_rng_, effect_rng_;
  std::vector<ScheduledFault> faults_;
  std::optional<ordered_json> frozen_;  // what a stuck sensor repeats
  std::optional<ordered_json> last_;    // the latest reading's fields
};

namespace {

// A centrifugal pump on a variable-speed drive. It runs 12 of every 15 minutes (a tank-filling
// duty cycle) at a speed that follows demand; flow goes with speed, pressure with its square
// (affinity laws), vibration mostly with the square too.
class Pump : public Device {
 public:
  Pump(std::string id, std::uint64_t seed, std::uint64_t index)
      : Device(DeviceKind::kPump, std::move(id), seed, index) {
    rated_flow_ = rng().Uniform(28, 45);        // m^3/h at full speed
    rated_pressure_ = rng().Uniform(4.0, 5.0);  // bar at full speed
    static_pressure_ = rng().Uniform(0.6, 1.0);
    base_vibration_ = rng().Uniform(1.8, 2.6);  // mm/s RMS at full speed: ISO 10816 zone B
    duty_offset_ = rng().Uniform(0, 300);       // < 720 - 420: every pump runs for 7 minutes
    demand_phase_ = rng().Uniform(0, kTwoPi);
  }

  ordered_json Measure(double t) override {
    Rng& r = rng();
    const bool running = Running(t);
    double flow = 0, pressure = static_pressure_ + 0.02 * r.Normal(), vibration = 0.3;
    if (running) {
      const double s = speed_;
      double flow_factor = 1 + wear_.value, pressure_factor = 1;
      if (FaultAge(FaultKind::kCavitation, t)) {
        // Vapour bubbles: the pump loses head and delivery, erratically.
        flow_factor *= 0.8 + 0.05 * effect_rng().Normal();
        pressure_factor = 0.65 + 0.12 * effect_rng().Normal();
      }
      flow = rated_flow_ * s * flow_factor + 0.01 * rated_flow_ * r.Normal();
      pressure = static_pressure_ + (rated_pressure_ - static_pressure_) * s * s * pressure_factor +
                 0.03 * r.Normal();
      vibration = base_vibration_ * (0.4 + 0.6 * s * s) * (1 + 0.04 * r.Normal());
      if (auto age = FaultAge(FaultKind::kBearing, t)) {
        // A damaged race: the level climbs (compressed to about a minute to zone D) and rolling
        // elements hit the defect now and then, more often as it grows.
        vibration += std::min(0.1 * *age, 12.0);
        Rng& e = effect_rng();
        if (e.Chance(std::min(0.05 + *age / 300, 0.5))) vibration += e.Uniform(1.0, 4.0);
      }
      if (FaultAge(FaultKind::kCavitation, t)) {
        vibration += 1.0 + 1.5 * std::abs(effect_rng().Normal());
      }
    } else {
      flow = 0.2 * std::abs(r.Normal());         // a meter's zero noise
      vibration += 0.05 * std::abs(r.Normal());  // neighbouring machines
    }
    return ordered_json{{"vibration", Round(std::max(vibration, 0.0), 2)},
                        {"pressure", Round(std::max(pressure, 0.0), 2)},
                        {"flow", Round(std::max(flow, 0.0), 1)},
                        {"running", running}};
  }

 private:
  bool Running(double t) const { return std::fmod(t + duty_offset_, 900.0) < 720.0; }

  void Integrate(double t, double dt, double) override {
    speed_drift_.Advance(dt, rng());
    wear_.Advance(dt, rng());
    speed_ = std::clamp(
        0.8 + 0.15 * std::sin(kTwoPi * t / 600 + demand_phase_) + speed_drift_.value, 0.55, 1.0);
  }

  double rated_flow_, rated_pressure_, static_pressure_, base_vibration_, duty_offset_,
      demand_phase_;
  double speed_ = 0.8;
  Drift speed_drift_{0.02, 120};
  Drift wear_{0.02, 1800};  // impeller wear and fouling: a few percent of flow, slowly
};

// A low-voltage feeder (230 V phase-to-neutral, 400 A rated) supplying a production hall. The
// load follows the shifts (06:00-22:00 UTC) plus machine cycles; the voltage falls with the load
// through the source impedance and wanders with the grid.
class Feeder : public Device {
 public:
  static constexpr double kNominalVoltage = 230, kRatedCurrent = 400;

  Feeder(std::string id, std::uint64_t seed, std::uint64_t index)
      : Device(DeviceKind::kFeeder, std::move(id), seed, index) {
    source_voltage_ = kNominalVoltage * (1 + rng().Uniform(0.005, 0.02));  // tap set a bit high
    impedance_ = rng().Uniform(0.015, 0.025);                              // ohm
    cycle_phase_ = rng().Uniform(0, 120);
  }

  ordered_json Measure(double t) override {
    Rng& r = rng();
    double current = load_ + 3 * r.Normal();
    if (auto age = FaultAge(FaultKind::kOvercurrent, t)) {
      current += (1.6 * kRatedCurrent - current) * std::min(1.0, *age / 10);
    }
    current = std::max(current, 0.0);
    double voltage =
        source_voltage_ * (1 + grid_.value) - impedance_ * current + 0.3 * r.Normal();  // flicker
    if (FaultAge(FaultKind::kSag, t)) {
      voltage = kNominalVoltage * (0.70 + 0.01 * effect_rng().Normal());
    }
    if (FaultAge(FaultKind::kSwell, t)) {
      voltage = kNominalVoltage * (1.13 + 0.005 * effect_rng().Normal());
    }
    // Rectifier loads (drives, LED lighting) distort the voltage more as the load grows.
    const double thd = std::max(0.5, 2.0 + 2.0 * current / kRatedCurrent + 0.2 * r.Normal());
    return ordered_json{{"voltage", Round(voltage, 1)},
                        {"current", Round(current, 1)},
                        {"thd", Round(thd, 2)},
                        {"frequency", Round(50 + frequency_.value, 3)}};
  }

 private:
  void Integrate(double t, double dt, double start_epoch_s) override {
    grid_.Advance(dt, rng());
    frequency_.Advance(dt, rng());
    load_noise_.Advance(dt, rng());
    const double hour = HourOfDay(start_epoch_s + t);
    // 1 during the shifts, 0 at night, with half-hour ramps.
    const double shift = std::clamp(std::min(hour - 5.75, 22.25 - hour) * 2, 0.0, 1.0);
    const bool machine_cycle = std::fmod(t + cycle_phase_, 120.0) < 60.0;
    load_ = 90 + 180 * shift + (machine_cycle ? 40 : 0) + load_noise_.value;
  }

  double source_voltage_, impedance_, cycle_phase_;
  double load_ = 90;
  Drift grid_{0.005, 600};
  Drift frequency_{0.02, 30};
  Drift load_noise_{10, 60};
};

// A cooling unit for a control room with a lot of equipment: without cooling the room settles
// ~20 K above outdoors (time constant 5 min, compressed for demos); a thermostat switches the
// compressor with +-0.5 K hysteresis around the setpoint. Outdoors follows the day (UTC).
class Hvac : public Device {
 public:
  Hvac(std::string id, std::uint64_t seed, std::uint64_t index)
      : Device(DeviceKind::kHvac, std::move(id), seed, index) {
    setpoint_ = index % 2 == 0 ? 21.0 : 22.0;
    internal_gain_ = rng().Uniform(18, 22);
    temperature_ = setpoint_ + rng().Uniform(-0.3, 0.3);
  }

  ordered_json Measure(double t) override {
    Rng& r = rng();
    return ordered_json{{"temperature", Round(temperature_ + 0.05 * r.Normal(), 2)},
                        {"setpoint", setpoint_},
                        {"outdoor", Round(outdoor_ + 0.1 * r.Normal(), 1)},
                        {"compressor", compressor_on_}};
  }

 private:
  static constexpr double kTau = 300, kCooling = 0.1, kHysteresis = 0.5;

  void Integrate(double t, double dt, double start_epoch_s) override {
    weather_.Advance(dt, rng());
    const double hour = HourOfDay(start_epoch_s + t);
    outdoor_ = 15 + 8 * std::sin(kTwoPi * (hour - 9) / 24) + weather_.value;  // peak at 15:00
    // A failed compressor is still called for (the controller does not know), but cools nothing.
    const bool cooling = compressor_on_ && !FaultAge(FaultKind::kCompressor, t);
    temperature_ +=
        dt * ((outdoor_ + internal_gain_ - temperature_) / kTau - (cooling ? kCooling : 0));
    if (temperature_ > setpoint_ + kHysteresis) compressor_on_ = true;
    if (temperature_ < setpoint_ - kHysteresis) compressor_on_ = false;
  }

  double setpoint_, internal_gain_, temperature_;
  double outdoor_ = 15;
  bool compressor_on_ = false;
  Drift weather_{0.5, 1800};
};

std::unique_ptr<Device> MakeDevice(DeviceKind kind, std::uint64_t seed, int number) {
  const std::string id = fmt::format("{}{}", DeviceKindName(kind).front(), number);
  switch (kind) {
    case DeviceKind::kPump:
      return std::make_unique<Pump>(id, seed, number);
    case DeviceKind::kFeeder:
      return std::make_unique<Feeder>(id, seed, number);
    case DeviceKind::kHvac:
      return std::make_unique<Hvac>(id, seed, number);
  }
  return nullptr;
}

std::string JoinNames(const std::vector<FaultKind>& kinds) {
  std::string out;
  for (FaultKind k : kinds) out += (out.empty() ? "" : ", ") + std::string(FaultKindName(k));
  return out;
}

std::optional<DeviceKind> DeviceKindFromName(std::string_view name) {
  for (DeviceKind k : {DeviceKind::kPump, DeviceKind::kFeeder, DeviceKind::kHvac}) {
    if (DeviceKindName(k) == name) return k;
  }
  return std::nullopt;
}

}  // namespace

// ---- Names and parsing

std::string_view DeviceKindName(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::kPump:
      return "pump";
    case DeviceKind::kFeeder:
      return "feeder";
    case DeviceKind::kHvac:
      return "hvac";
  }
  return "?";
}

std::string_view FaultKindName(FaultKind kind) {
  switch (kind) {
    case FaultKind::kBearing:
      return "bearing";
    case FaultKind::kCavitation:
      return "cavitation";
    case FaultKind::kSag:
      return "sag";
    case FaultKind::kSwell:
      return "swell";
    case FaultKind::kOvercurrent:
      return "overcurrent";
    case FaultKind::kCompressor:
      return "compressor";
    case FaultKind::kStuck:
      return "stuck";
    case FaultKind::kDropout:
      return "dropout";
  }
  return "?";
}

const std::vector<FaultKind>& FaultsFor(DeviceKind kind) {
  static const std::vector<FaultKind> pump = {FaultKind::kBearing, FaultKind::kCavitation,
                                              FaultKind::kStuck, FaultKind::kDropout};
  static const std::vector<FaultKind> feeder = {FaultKind::kSag, FaultKind::kSwell,
                                                FaultKind::kOvercurrent, FaultKind::kStuck,
                                                FaultKind::kDropout};
  static const std::vector<FaultKind> hvac = {FaultKind::kCompressor, FaultKind::kStuck,
                                              FaultKind::kDropout};
  switch (kind) {
    case DeviceKind::kPump:
      return pump;
    case DeviceKind::kFeeder:
      return feeder;
    case DeviceKind::kHvac:
      return hvac;
  }
  return pump;
}

double DefaultFaultLength(FaultKind kind) {
  switch (kind) {
    case FaultKind::kSag:
    case FaultKind::kSwell:
      return 10;
    case FaultKind::kOvercurrent:
      return 30;
    default:
      return kUntilTheEnd;
  }
}

Result<FaultSpec> ParseFaultSpec(std::string_view text) {
  const std::string usage = fmt::format(
      "fault '{}' should look like KIND:ID:FAULT@START[+LENGTH], e.g. pump:p2:bearing@30s or "
      "feeder:f1:sag@1m+5s",
      text);
  const auto at = text.find('@');
  if (at == std::string_view::npos) return InvalidArgument(usage);
  const std::string_view what = text.substr(0, at), when = text.substr(at + 1);
  const auto colon1 = what.find(':');
  const auto colon2 = colon1 == std::string_view::npos ? colon1 : what.find(':', colon1 + 1);
  if (colon2 == std::string_view::npos || what.find(':', colon2 + 1) != std::string_view::npos) {
    return InvalidArgument(usage);
  }
  FaultSpec spec;
  const auto device = DeviceKindFromName(what.substr(0, colon1));
  if (!device) {
    return InvalidArgument(
        fmt::format("fault '{}': unknown device kind '{}' (use pump, feeder or hvac)", text,
                    what.substr(0, colon1)));
  }
  spec.device = *device;
  spec.device_id = std::string(what.substr(colon1 + 1, colon2 - colon1 - 1));
  if (spec.device_id.empty()) return InvalidArgument(usage);
  const std::string_view fault_name = what.substr(colon2 + 1);
  const auto& valid = FaultsFor(spec.device);
  const auto found = std::find_if(valid.begin(), valid.end(),
                                  [&](FaultKind k) { return FaultKindName(k) == fault_name; });
  if (found == valid.end()) {
    return InvalidArgument(fmt::format("fault '{}': a {} has no fault '{}' (choose from {})", text,
                                       DeviceKindName(spec.device), fault_name, JoinNames(valid)));
  }
  spec.kind = *found;
  const auto plus = when.find('+');
  auto start = ParseDuration(when.substr(0, plus));
  if (!start.ok()) return start.status().WithContext(fmt::format("fault '{}' start", text));
  spec.start_s = static_cast<double>(start->count()) / 1000;
  spec.length_s = DefaultFaultLength(spec.kind);
  if (plus != std::string_view::npos) {
    auto length = ParseDuration(when.substr(plus + 1));
    if (!length.ok()) return length.status().WithContext(fmt::format("fault '{}' length", text));
    if (length->count() <= 0) {
      return InvalidArgument(fmt::format("fault '{}': the length must be more than 0", text));
    }
    spec.length_s = static_cast<double>(length->count()) / 1000;
  }
  return spec;
}

Result<double> ParseRate(std::string_view text) {
  const std::string usage =
      fmt::format("rate '{}' should be readings per device and time, e.g. 10/s, 30/min, 2/h", text);
  const auto slash = text.find('/');
  const std::string_view number_text = text.substr(0, slash);
  double number = 0;
  auto [end, ec] =
      std::from_chars(number_text.data(), number_text.data() + number_text.size(), number);
  if (ec != std::errc() || end != number_text.data() + number_text.size() ||
      !std::isfinite(number) || number <= 0) {
    return InvalidArgument(usage);
  }
  double per_second = number;
  if (slash != std::string_view::npos) {
    const std::string_view unit = text.substr(slash + 1);
    if (unit == "s") {
    } else if (unit == "min" || unit == "m") {
      per_second = number / 60;
    } else if (unit == "h") {
      per_second = number / 3600;
    } else {
      return InvalidArgument(usage);
    }
  }
  if (per_second < 1.0 / 3600 * (1 - 1e-9) || per_second > 1000) {
    return InvalidArgument(
        fmt::format("rate '{}' is out of range: from 1/h to 1000/s per device", text));
  }
  return per_second;
}

std::uint64_t TicksInDuration(double duration_s, double rate_hz) {
  if (!(duration_s > 0) || !(rate_hz > 0)) return 0;
  // ceil, but a product that lands a hair above a whole number (60 * 0.1 = 6.000000000000001)
  // is that number.
  const double exact = duration_s * rate_hz;
  return static_cast<std::uint64_t>(std::ceil(exact - 1e-9));
}

// ---- Generator

Result<Generator> Generator::Create(SimConfig config) {
  if (config.line.empty() || config.line.find_first_of("/+#") != std::string::npos) {
    return InvalidArgument(fmt::format(
        "line '{}' must be one MQTT topic level: not empty, without '/', '+' or '#'", config.line));
  }
  for (auto [count, name] : {std::pair{config.pumps, "pumps"}, std::pair{config.feeders, "feeders"},
                             std::pair{config.hvac, "hvac"}}) {
    if (count < 0 || count > 1000) {
      return InvalidArgument(fmt::format("--{} must be between 0 and 1000, not {}", name, count));
    }
  }
  if (config.pumps + config.feeders + config.hvac == 0) {
    return InvalidArgument("nothing to simulate: --pumps, --feeders and --hvac are all 0");
  }
  if (!(config.rate_hz >= 1.0 / 3600 * (1 - 1e-9) && config.rate_hz <= 1000)) {
    return InvalidArgument("the rate must be from 1/h to 1000/s per device");
  }
  if (!(config.fault_rate_per_hour >= 0) || config.fault_rate_per_hour > 3600) {
    return InvalidArgument("--fault-rate must be between 0 and 3600 faults per device and hour");
  }

  std::vector<std::unique_ptr<Device>> devices;
  for (auto [kind, count] :
       {std::pair{DeviceKind::kPump, config.pumps}, std::pair{DeviceKind::kFeeder, config.feeders},
        std::pair{DeviceKind::kHvac, config.hvac}}) {
    for (int n = 1; n <= count; ++n) devices.push_back(MakeDevice(kind, config.seed, n));
  }
  for (const FaultSpec& fault : config.faults) {
    auto device = std::find_if(devices.begin(), devices.end(), [&](const auto& d) {
      return d->kind() == fault.device && d->id() == fault.device_id;
    });
    if (device == devices.end()) {
      const int count = fault.device == DeviceKind::kPump     ? config.pumps
                        : fault.device == DeviceKind::kFeeder ? config.feeders
                                                              : config.hvac;
      const char prefix = DeviceKindName(fault.device).front();
      return InvalidArgument(fmt::format(
          "fault for {} '{}': no such device ({})", DeviceKindName(fault.device), fault.device_id,
          count == 0 ? fmt::format("there are no {} devices", DeviceKindName(fault.device))
                     : fmt::format("ids are {}1 to {}{}", prefix, prefix, count)));
    }
    const auto& valid = FaultsFor(fault.device);
    if (std::find(valid.begin(), valid.end(), fault.kind) == valid.end()) {
      return InvalidArgument(fmt::format("a {} has no fault '{}' (choose from {})",
                                         DeviceKindName(fault.device), FaultKindName(fault.kind),
                                         JoinNames(valid)));
    }
    if (!(fault.start_s >= 0) || !(fault.length_s > 0)) {
      return InvalidArgument("a fault needs a start >= 0 and a length > 0");
    }
    (*device)->AddFault(fault);
  }
  return Generator(std::move(config), std::move(devices));
}

Generator::Generator(SimConfig config, std::vector<std::unique_ptr<Device>> devices)
    : config_(std::move(config)), devices_(std::move(devices)) {}
Generator::Generator(Generator&&) noexcept = default;
Generator& Generator::operator=(Generator&&) noexcept = default;
Generator::~Generator() = default;

double Generator::now_s() const { return static_cast<double>(ticks_) / config_.rate_hz; }

Tick Generator::Step() {
  Tick tick;
  tick.time_s = now_s();
  const double t = tick.time_s;
  const double dt = ticks_ == 0 ? 0 : 1 / config_.rate_hz;
  ++ticks_;

  for (auto& device : devices_) {
    if (config_.fault_rate_per_hour > 0 && dt > 0 && !device->AnyFaultActive(t)) {
      Rng& r = device->fault_rng();
      if (r.Chance(1 - std::exp(-config_.fault_rate_per_hour * dt / 3600))) {
        const auto& kinds = FaultsFor(device->kind());
        const auto pick = static_cast<std::size_t>(r.Uniform() * static_cast<double>(kinds.size()));
        device->AddFault({device->kind(), device->id(), kinds[std::min(pick, kinds.size() - 1)], t,
                          r.Uniform(30, 300)});
      }
    }
    for (auto& fault : device->faults()) {
      const double end = fault.spec.start_s + fault.spec.length_s;
      const std::string who = fmt::format("{} {}: {}", DeviceKindName(device->kind()), device->id(),
                                          FaultKindName(fault.spec.kind));
      if (!fault.start_noted && t >= fault.spec.start_s && t < end) {
        fault.start_noted = true;
        tick.notes.push_back(std::isinf(end)
                                 ? who + " starts"
                                 : fmt::format("{} starts, for {:g} s", who, fault.spec.length_s));
      }
      if (fault.start_noted && !fault.end_noted && t >= end) {
        fault.end_noted = true;
        tick.notes.push_back(who + " ends");
      }
    }

    device->Advance(t, dt, config_.start_epoch_s);
    ordered_json fields = device->Measure(t);
    if (device->FaultAge(FaultKind::kStuck, t)) {
      if (!device->frozen()) device->frozen() = device->last() ? *device->last() : fields;
      fields = *device->frozen();
    } else {
      device->frozen().reset();
    }
    device->last() = fields;
    if (device->FaultAge(FaultKind::kDropout, t)) continue;

    ordered_json payload{{std::string(DeviceKindName(device->kind())), device->id()},
                         {"ts", Round(config_.start_epoch_s + t, 3)}};
    payload.update(fields);
    tick.readings.push_back(
        {fmt::format("plant/{}/{}/{}", config_.line, DeviceKindName(device->kind()), device->id()),
         std::move(payload)});
  }
  return tick;
}

}  // namespace wisp::sim
