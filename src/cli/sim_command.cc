#include "cli/sim_command.h"

#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <condition_variable>
#include <iostream>
#include <memory>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "mqtt/mqtt_connection.h"
#include "mqtt/mqtt_url.h"
#include "wisp/units.h"

namespace wisp {
namespace {

constexpr auto kConnectTimeout = std::chrono::seconds(10);
constexpr auto kFlushTimeout = std::chrono::seconds(10);
constexpr auto kSleepSlice = std::chrono::milliseconds(50);  // how soon a stop is noticed

// Sleeps until `deadline` or until `stop`; false when stopped.
bool SleepUntil(std::chrono::steady_clock::time_point deadline, const std::atomic<bool>& stop) {
  while (!stop.load()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return true;
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(deadline - now, kSleepSlice));
  }
  return false;
}

std::string Plural(std::size_t n, std::string_view one, std::string_view many) {
  return fmt::format("{} {}", n, n == 1 ? one : many);
}

// Publishes readings through an MqttConnection and can tell when the broker has all of them.
// Flush() publishes a marker to a topic this client subscribes to and waits for it to come back:
// a client's messages reach the broker in the order they were queued, so once the marker is
// back, every reading queued before it has arrived (libmosquitto may hold QoS 1 messages beyond
// its in-flight window in a local queue, which a plain DISCONNECT would drop).
class Publisher {
 public:
  static Result<std::unique_ptr<Publisher>> Connect(const std::string& broker, std::string line,
                                                    const std::atomic<bool>& stop) {
    auto publisher = std::unique_ptr<Publisher>(new Publisher());
    MqttOptions options;
    options.url = broker;
    options.client_id = fmt::format("wisp-sim-{}-{}", line, ::getpid());
    options.clean_start = true;
    options.reconnect_max = std::chrono::seconds(2);
    publisher->flush_topic_ = "wisp-sim/" + options.client_id + "/flushed";
    Publisher* self = publisher.get();
    auto connection = MqttConnection::Create(options, [self](const MqttMessage& message) {
      if (message.topic != self->flush_topic_) return;
      std::lock_guard lock(self->mu_);
      self->flushed_ = std::string(message.payload);
      self->cv_.notify_all();
    });
    if (!connection.ok()) return connection.status();
    publisher->connection_ = std::move(*connection);
    RETURN_IF_ERROR(publisher->connection_->Subscribe(publisher->flush_topic_, 1));
    RETURN_IF_ERROR(publisher->connection_->Start());
    const auto deadline = std::chrono::steady_clock::now() + kConnectTimeout;
    while (!publisher->connection_->connected()) {
      if (stop.load()) return Unavailable("stopped before the broker answered");
      if (std::chrono::steady_clock::now() > deadline) {
        const std::string why = publisher->connection_->last_error();
        return Unavailable(fmt::format(
            "cannot reach the MQTT broker at {} within {} s{}. Is it running? (run.sh starts "
            "one; or `mosquitto -p PORT`)",
            broker, kConnectTimeout.count(), why.empty() ? "" : ": " + why));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return publisher;
  }

  ~Publisher() {
    if (connection_) connection_->Stop();
  }

  Status Publish(const sim::Reading& reading, int qos, bool cbor) {
    return connection_->Publish(reading.topic, EncodePayload(reading.payload, cbor), qos, false,
                                cbor ? "application/cbor" : "application/json");
  }

  // Waits until the broker has received everything published so far, or the timeout.
  Status Flush(std::chrono::seconds timeout) {
    const std::string marker = std::to_string(++flushes_);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    // The marker itself can be refused while the connection is down: try again until the end.
    while (true) {
      if (connection_->Publish(flush_topic_, marker, 1, false).ok()) {
        std::unique_lock lock(mu_);
        if (cv_.wait_until(
                lock,
                std::min(deadline, std::chrono::steady_clock::now() + std::chrono::seconds(2)),
                [&] { return flushed_ == marker; })) {
          return Status::Ok();
        }
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        return Unavailable(fmt::format(
            "the broker did not confirm the last readings within {} s; some may be lost",
            timeout.count()));
      }
    }
  }

 private:
  Publisher() = default;

  std::unique_ptr<MqttConnection> connection_;
  std::string flush_topic_;
  int flushes_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string flushed_;  // the latest marker that came back
};

std::atomic<bool> g_stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "set from a signal handler");

void OnStopSignal(int) { g_stop_requested.store(true); }

}  // namespace

Result<SimPlan> PlanSim(const SimOptions& options, double start_epoch_s) {
  SimPlan plan;
  sim::SimConfig& config = plan.config;
  config.line = options.line;
  config.pumps = options.pumps;
  config.feeders = options.feeders;
  config.hvac = options.hvac;
  config.seed = options.seed;
  config.start_epoch_s = start_epoch_s;
  auto rate = sim::ParseRate(options.rate);
  if (!rate.ok()) return rate.status().WithContext("--rate");
  config.rate_hz = *rate;
  if (!(options.fault_rate >= 0 && options.fault_rate <= 3600)) {
    return InvalidArgument(fmt::format(
        "--fault-rate {} must be between 0 and 3600 (random faults per device and simulated hour)",
        options.fault_rate));
  }
  config.fault_rate_per_hour = options.fault_rate;
  for (const std::string& text : options.faults) {
    auto fault = sim::ParseFaultSpec(text);
    if (!fault.ok()) return fault.status().WithContext("--fault");
    config.faults.push_back(std::move(*fault));
  }

  if (options.duration != "forever") {
    auto duration = ParseDuration(options.duration);
    if (!duration.ok()) return duration.status().WithContext("--duration (or 'forever')");
    if (duration->count() <= 0) return InvalidArgument("--duration must be more than 0");
    plan.duration_s = static_cast<double>(duration->count()) / 1000;
  }
  if (options.qos < 0 || options.qos > 1) {
    return InvalidArgument(fmt::format("--qos must be 0 or 1, not {}", options.qos));
  }
  plan.qos = options.qos;
  if (options.format != "json" && options.format != "cbor") {
    return InvalidArgument(fmt::format("--format must be json or cbor, not '{}'", options.format));
  }
  plan.cbor = options.format == "cbor";
  if (!(options.speed >= 0.001 && options.speed <= 1e6)) {
    return InvalidArgument(fmt::format(
        "--speed {} must be from 0.001 to 1000000 (simulated seconds per second)", options.speed));
  }
  plan.speed = options.speed;
  plan.print = options.print;
  plan.offline = options.offline;
  if (plan.offline) {
    if (!plan.duration_s) return InvalidArgument("--offline needs a --duration (it does not wait)");
    plan.print = true;
  } else {
    auto url = ParseMqttUrl(options.broker);
    if (!url.ok()) return url.status().WithContext("--broker");
    plan.broker = url->ToString();
  }
  // Device ids and fault targets are checked by the generator itself.
  auto generator = sim::Generator::Create(config);
  if (!generator.ok()) return generator.status();
  return plan;
}

std::chrono::nanoseconds WallOffset(std::uint64_t tick, double rate_hz, double speed) {
  const double seconds = static_cast<double>(tick) / (rate_hz * speed);
  // About 292 years of nanoseconds fit; a schedule beyond that is "never" either way.
  const double ns = std::min(seconds * 1e9, 9.2e18);
  return std::chrono::nanoseconds(static_cast<std::int64_t>(std::llround(ns)));
}

std::string EncodePayload(const nlohmann::ordered_json& payload, bool cbor) {
  if (!cbor) return payload.dump();
  const std::vector<std::uint8_t> bytes = nlohmann::ordered_json::to_cbor(payload);
  return std::string(bytes.begin(), bytes.end());
}

Status RunSim(const SimPlan& plan, const std::atomic<bool>& stop, std::ostream& out,
              std::ostream& log) {
  ASSIGN_OR_RETURN(sim::Generator generator, sim::Generator::Create(plan.config));
  const sim::SimConfig& config = plan.config;
  const std::optional<std::uint64_t> total_ticks =
      plan.duration_s ? std::optional(sim::TicksInDuration(*plan.duration_s, config.rate_hz))
                      : std::nullopt;

  std::unique_ptr<Publisher> publisher;
  if (!plan.offline) {
    ASSIGN_OR_RETURN(publisher, Publisher::Connect(plan.broker, config.line, stop));
  }
  const std::size_t devices = generator.device_count();
  log << fmt::format(
      "wisp sim: {} on plant/{}/ ({}, {}, {}), {:g} reading/s each ({:g} messages/s), {}{}{}\n",
      Plural(devices, "device", "devices"), config.line, Plural(config.pumps, "pump", "pumps"),
      Plural(config.feeders, "feeder", "feeders"), Plural(config.hvac, "hvac unit", "hvac units"),
      config.rate_hz, config.rate_hz * static_cast<double>(devices),
      plan.offline
          ? "offline"
          : fmt::format("to {} (QoS {}, {})", plan.broker, plan.qos, plan.cbor ? "cbor" : "json"),
      plan.speed == 1 ? "" : fmt::format(", {:g}x real time", plan.speed),
      plan.duration_s ? fmt::format(", for {:g} simulated s", *plan.duration_s)
                      : std::string(", until stopped (Ctrl-C)"));
  log.flush();

  std::uint64_t published = 0, dropped = 0;
  auto start = std::chrono::steady_clock::now();
  while (!total_ticks || generator.ticks() < *total_ticks) {
    if (!plan.offline) {
      const auto due = start + WallOffset(generator.ticks(), config.rate_hz, plan.speed);
      // Far behind (the machine was suspended, the broker stalled): carry on from now rather
      // than publishing the missed ticks in a burst.
      if (std::chrono::steady_clock::now() - due > std::chrono::seconds(2)) {
        start += std::chrono::steady_clock::now() - due;
      }
      if (!SleepUntil(due, stop)) break;
    } else if (stop.load()) {
      break;
    }
    sim::Tick tick = generator.Step();
    for (const std::string& note : tick.notes) {
      log << fmt::format("[{:8.1f} s] {}\n", tick.time_s, note);
    }
    if (!tick.notes.empty()) log.flush();
    for (const sim::Reading& reading : tick.readings) {
      if (publisher) {
        if (publisher->Publish(reading, plan.qos, plan.cbor).ok()) {
          ++published;
        } else {
          ++dropped;
        }
      }
      if (plan.print) out << reading.topic << ' ' << reading.payload.dump() << '\n';
    }
    if (plan.print) out.flush();
  }

  Status flushed;
  if (publisher) flushed = publisher->Flush(kFlushTimeout);
  log << fmt::format("wisp sim: {} simulated s, {} readings {}{}\n", generator.now_s(),
                     plan.offline ? generator.ticks() * devices : published,
                     plan.offline ? "generated" : "published",
                     dropped ? fmt::format(", {} dropped while disconnected", dropped) : "");
  return flushed;
}

SimCommand::SimCommand(CLI::App& app) {
  command_ = app.add_subcommand(
      "sim", "Publish simulated pump, feeder and HVAC readings to an MQTT broker (docs/sim.md)");
  CLI::App& c = *command_;
  c.add_option("--broker", options_.broker, "MQTT broker, mqtt://HOST:PORT")->capture_default_str();
  c.add_option("--rate", options_.rate, "Readings per device: N/s, N/min or N/h")
      ->capture_default_str();
  c.add_option("--pumps", options_.pumps, "Pumps p1..pN")->capture_default_str();
  c.add_option("--feeders", options_.feeders, "Power feeders f1..fN")->capture_default_str();
  c.add_option("--hvac", options_.hvac, "HVAC units h1..hN")->capture_default_str();
  c.add_option("--line", options_.line, "Line name in the topics plant/<line>/...")
      ->capture_default_str();
  c.add_option("--duration", options_.duration, "Simulated time to run (60s, 2h) or forever")
      ->capture_default_str();
  c.add_option("--fault", options_.faults,
               "Inject a fault: KIND:ID:FAULT@START[+LENGTH], e.g. pump:p2:bearing@30s "
               "(repeatable)");
  c.add_option("--fault-rate", options_.fault_rate, "Random faults per device per simulated hour")
      ->capture_default_str();
  c.add_option("--seed", options_.seed, "Random seed: the same seed gives the same readings")
      ->capture_default_str();
  c.add_option("--qos", options_.qos, "MQTT QoS, 0 or 1")->capture_default_str();
  c.add_option("--format", options_.format, "Payload format: json or cbor")->capture_default_str();
  c.add_option("--speed", options_.speed, "Simulated seconds per real second")
      ->capture_default_str();
  c.add_flag("--print", options_.print, "Also print each reading as 'topic json' on stdout");
  c.add_flag("--offline", options_.offline,
             "No broker and no waiting: print a --duration's readings at once");
}

bool SimCommand::parsed() const { return command_->parsed(); }

int SimCommand::Run() {
  // The MQTT connection logs through spdlog: keep stdout for --print, and only what matters.
  auto logger = spdlog::stderr_logger_mt("wisp-sim");
  logger->set_level(spdlog::level::warn);
  spdlog::set_default_logger(logger);

  const double now_s =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  auto plan = PlanSim(options_, std::round(now_s * 1000) / 1000);
  if (!plan.ok()) {
    std::cerr << "error: " << plan.status().message() << "\n";
    return 2;
  }
  // The first SIGINT/SIGTERM stops the run and flushes; a second one (SA_RESETHAND) ends the
  // process at once, for when the broker has gone and the flush would wait.
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  action.sa_flags = SA_RESETHAND;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  Status status = RunSim(*plan, g_stop_requested, std::cout, std::cerr);
  if (!status.ok()) {
    std::cerr << "error: " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace wisp
