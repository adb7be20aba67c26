// mqtt_load: load generator and meter for bench/mqtt_pipeline (see run.sh, docs/benchmarks.md).
//
// Publishes readings (pipeline_payload.h) on --in and counts what arrives on --out, through
// whatever sits between: nothing (in = out: the broker's one hop), the stock relay, or wispd.
// One process, two libmosquitto clients (publisher and subscriber), each on its own network
// thread (mosquitto_loop_start), MQTT 3.1.1, TCP_NODELAY, clean sessions.
//
// Modes:
//   throughput  publish --count readings as fast as the path takes them. The publisher stays
//               at most --window readings ahead of the newest reading seen on --out (an
//               end-to-end window, so the broker's per-client queues stay bounded and what is
//               measured is the path, not a queue filling up). Reports the sustained input
//               events/s between 10% and 90% of the arrivals, and lost/duplicate outputs.
//   latency     publish at a fixed --rate for --duration seconds, open loop: reading i is due
//               at start + i/rate and carries that intended time in `t`, so a stalled
//               publisher or path shows up as latency instead of being hidden (no coordinated
//               omission). Reports p50/p99/p99.9/max of arrival - t (the first --warmup
//               fraction left out) and the achieved send and arrival rates.
//   probe       publishes a probe reading (seq -1, above the limit) every 200 ms until one
//               comes out on --out: run.sh's check that the path is up and subscribed.
//
// --outputs all: every reading comes out (raw, relay, echo); actions: only the readings above
// the limit do (alert). Anything else on --out (a probe's echo, a stranger's message) is
// counted as stray and ignored.
//
// Output: a summary on stderr and one JSON object on stdout. Exit 1 on bad flags, a broker
// that cannot be reached, or a path that stops delivering for --timeout seconds.
#include <mosquitto.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "pipeline_payload.h"

namespace wisp::bench {
namespace {

std::int64_t MonotonicNs() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

void SleepUntil(std::int64_t deadline_ns) {
  timespec ts{};
  ts.tv_sec = deadline_ns / 1'000'000'000;
  ts.tv_nsec = deadline_ns % 1'000'000'000;
  while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

[[noreturn]] void Fail(const std::string& message) {
  std::fprintf(stderr, "mqtt_load: error: %s\n", message.c_str());
  std::exit(1);
}

struct Options {
  std::string host = "127.0.0.1";
  int port = 1883;
  std::string in_topic, out_topic;
  std::string mode = "throughput";
  std::string outputs = "all";
  int qos = 1;
  std::int64_t count = 100'000;
  double rate = 1000;
  double duration_s = 5;
  std::int64_t action_every = 100;
  std::int64_t window = 1000;
  int inflight = 100;
  double warmup = 0.1;
  double timeout_s = 15;
};

// What the subscriber saw. Written only by the subscriber's network thread while the run is
// on; the main thread reads the vectors after that thread has stopped, and the atomics at any
// time.
struct Arrivals {
  std::int64_t count = 0;  // readings published (seq 0..count-1)
  std::int64_t action_every = 1;
  bool actions_only = false;      // only readings above the limit are expected
  std::int64_t latency_from = 0;  // first seq whose latency is kept (after warm-up)

  std::vector<std::uint8_t> seen;        // by seq
  std::vector<std::int64_t> at_ns;       // arrival times of first arrivals, in arrival order
  std::vector<std::int64_t> latency_ns;  // arrival - intended send time, seq >= latency_from
  std::int64_t duplicates = 0, unexpected = 0, strays = 0;

  std::atomic<std::int64_t> received{0};     // distinct expected readings seen
  std::atomic<std::int64_t> newest_seq{-1};  // highest seq seen (the window's front)
  std::atomic<bool> probe_seen{false};

  // The throughput publisher sleeps here until newest_seq reaches resume_at.
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<std::int64_t> resume_at{std::numeric_limits<std::int64_t>::max()};

  bool Expected(std::int64_t seq) const { return !actions_only || IsAction(seq, action_every); }

  void OnPayload(std::string_view payload, std::int64_t now) {
    std::int64_t seq = 0, t = 0;
    if (!ParseSeqAndTime(payload, &seq, &t)) {
      ++strays;
      return;
    }
    if (seq == -1) {
      probe_seen = true;
      ++strays;
      return;
    }
    if (seq < 0 || seq >= count) {
      ++strays;
      return;
    }
    if (!Expected(seq)) {
      ++unexpected;  // e.g. an alert for a reading below the limit: the function is wrong
      return;
    }
    if (seen[seq] != 0) {
      ++duplicates;  // QoS 1 is at least once: a redelivery is allowed, and counted once
      return;
    }
    seen[seq] = 1;
    at_ns.push_back(now);
    if (seq >= latency_from) latency_ns.push_back(now - t);
    received.fetch_add(1);
    std::int64_t newest = newest_seq.load();
    while (seq > newest && !newest_seq.compare_exchange_weak(newest, seq)) {
    }
    // Dekker-style with the publisher: it stores resume_at, then checks newest_seq (under
    // mu); we store newest_seq, then check resume_at. One of the two sees the other.
    if (seq >= resume_at.load()) {
      std::lock_guard lock(mu);
      cv.notify_one();
    }
  }
};

// One libmosquitto client on its own network thread, connected and (for the subscriber)
// subscribed before the constructor returns; Fail()s otherwise.
class Client {
 public:
  Client(const Options& options, const char* role, Arrivals* arrivals) : arrivals_(arrivals) {
    const std::string id = std::string("mqtt-load-") + role + "-" + std::to_string(::getpid());
    mosq_ = mosquitto_new(id.c_str(), /*clean_session=*/true, this);
    if (mosq_ == nullptr) Fail("mosquitto_new failed");
    mosquitto_int_option(mosq_, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_int_option(mosq_, MOSQ_OPT_SEND_MAXIMUM, options.inflight);
    mosquitto_connect_callback_set(mosq_, [](mosquitto*, void* self, int rc) {
      static_cast<Client*>(self)->Signal(rc == 0 ? kConnected : kRefused);
    });
    mosquitto_subscribe_callback_set(mosq_, [](mosquitto*, void* self, int, int, const int*) {
      static_cast<Client*>(self)->Signal(kSubscribed);
    });
    mosquitto_message_callback_set(mosq_, [](mosquitto*, void* self,
                                             const mosquitto_message* message) {
      const std::int64_t now = MonotonicNs();
      auto* client = static_cast<Client*>(self);
      if (client->arrivals_ == nullptr || message->payload == nullptr) return;
      client->arrivals_->OnPayload(std::string_view(static_cast<const char*>(message->payload),
                                                    static_cast<std::size_t>(message->payloadlen)),
                                   now);
    });
    if (int rc = mosquitto_connect(mosq_, options.host.c_str(), options.port, 30);
        rc != MOSQ_ERR_SUCCESS) {
      Fail("cannot connect to " + options.host + ":" + std::to_string(options.port) + ": " +
           mosquitto_strerror(rc));
    }
    if (int rc = mosquitto_loop_start(mosq_); rc != MOSQ_ERR_SUCCESS) {
      Fail(std::string("mosquitto_loop_start: ") + mosquitto_strerror(rc));
    }
    Await(kConnected, "CONNACK");
    if (arrivals_ != nullptr) {
      int rc = mosquitto_subscribe(mosq_, nullptr, options.out_topic.c_str(), options.qos);
      if (rc != MOSQ_ERR_SUCCESS) Fail(std::string("subscribe: ") + mosquitto_strerror(rc));
      Await(kSubscribed, "SUBACK");
    }
  }
  ~Client() {
    mosquitto_disconnect(mosq_);
    mosquitto_loop_stop(mosq_, /*force=*/false);
    mosquitto_destroy(mosq_);
  }

  // Queues a message for the network thread; Fail()s when libmosquitto refuses it.
  void Publish(const std::string& topic, const char* payload, std::size_t size, int qos) {
    int rc = mosquitto_publish(mosq_, nullptr, topic.c_str(), static_cast<int>(size), payload, qos,
                               false);
    if (rc != MOSQ_ERR_SUCCESS) Fail(std::string("publish: ") + mosquitto_strerror(rc));
  }

 private:
  enum Event { kNone, kConnected, kRefused, kSubscribed };
  void Signal(Event event) {
    std::lock_guard lock(mu_);
    event_ = event;
    cv_.notify_all();
  }
  void Await(Event wanted, const char* what) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(10),
                      [&] { return event_ == wanted || event_ == kRefused; }) ||
        event_ == kRefused) {
      Fail(std::string("no ") + what + " from the broker");
    }
    event_ = kNone;
  }

  mosquitto* mosq_ = nullptr;
  Arrivals* arrivals_;
  std::mutex mu_;
  std::condition_variable cv_;
  Event event_ = kNone;
};

// Waits until the arrivals stop growing for `idle_s` seconds or reach `expected`.
void Drain(const Arrivals& arrivals, std::int64_t expected, double idle_s) {
  std::int64_t last = -1;
  auto last_change = std::chrono::steady_clock::now();
  while (arrivals.received.load() < expected) {
    const std::int64_t now_received = arrivals.received.load();
    if (now_received != last) {
      last = now_received;
      last_change = std::chrono::steady_clock::now();
    } else if (std::chrono::steady_clock::now() - last_change >
               std::chrono::duration<double>(idle_s)) {
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

int RunProbe(const Options& options) {
  Arrivals arrivals;
  Client subscriber(options, "probe-sub", &arrivals);
  Client publisher(options, "probe-pub", nullptr);
  char buf[256];
  const auto give_up =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(options.timeout_s);
  while (std::chrono::steady_clock::now() < give_up) {
    const std::size_t n = FormatReading(buf, sizeof(buf), -1, MonotonicNs(), options.action_every);
    publisher.Publish(options.in_topic, buf, n, options.qos);
    for (int i = 0; i < 20 && !arrivals.probe_seen; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (arrivals.probe_seen) {
      std::printf("{\"mode\":\"probe\",\"ok\":true}\n");
      return 0;
    }
  }
  Fail("nothing came out on '" + options.out_topic + "' within " +
       std::to_string(options.timeout_s) + " s of publishing on '" + options.in_topic + "'");
}

int RunLoad(const Options& options) {
  const bool latency_mode = options.mode == "latency";
  const std::int64_t count =
      latency_mode ? static_cast<std::int64_t>(options.rate * options.duration_s) : options.count;
  if (count < 10) Fail("fewer than 10 readings to send: raise --count or --rate/--duration");

  Arrivals arrivals;
  arrivals.count = count;
  arrivals.action_every = options.action_every;
  arrivals.actions_only = options.outputs == "actions";
  arrivals.latency_from = static_cast<std::int64_t>(options.warmup * static_cast<double>(count));
  const std::int64_t expected =
      arrivals.actions_only ? ActionCount(count, options.action_every) : count;
  arrivals.seen.assign(count, 0);
  arrivals.at_ns.reserve(expected);
  arrivals.latency_ns.reserve(expected);

  auto subscriber = std::make_unique<Client>(options, "sub", &arrivals);
  auto publisher = std::make_unique<Client>(options, "pub", nullptr);

  // Pacing wants sleeps that end on time, not 50 us late (the default timer slack).
  ::prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  char buf[256];
  std::int64_t max_send_lag_ns = 0;
  const std::int64_t start = MonotonicNs() + 1'000'000;
  std::int64_t first_send = 0, last_send = 0;
  const auto stall_limit = std::chrono::duration<double>(options.timeout_s);
  for (std::int64_t seq = 0; seq < count; ++seq) {
    std::int64_t t = 0;
    if (latency_mode) {
      t = start + static_cast<std::int64_t>(static_cast<double>(seq) * 1e9 / options.rate);
      if (MonotonicNs() < t) SleepUntil(t);
      max_send_lag_ns = std::max(max_send_lag_ns, MonotonicNs() - t);
    } else {
      if (seq - arrivals.newest_seq.load() > options.window) {
        // Resume at three quarters of the window, so that we wake once per quarter window
        // rather than once per message.
        const std::int64_t resume = seq - options.window * 3 / 4;
        std::unique_lock lock(arrivals.mu);
        arrivals.resume_at = resume;
        const std::int64_t before = arrivals.received.load();
        if (!arrivals.cv.wait_for(lock, stall_limit,
                                  [&] { return arrivals.newest_seq.load() >= resume; })) {
          Fail("no progress on '" + options.out_topic + "' for " +
               std::to_string(options.timeout_s) + " s (" + std::to_string(before) + " of " +
               std::to_string(expected) + " outputs so far): the path stalled or drops messages");
        }
        arrivals.resume_at = std::numeric_limits<std::int64_t>::max();
      }
      t = MonotonicNs();
    }
    const std::size_t n = FormatReading(buf, sizeof(buf), seq, t, options.action_every);
    publisher->Publish(options.in_topic, buf, n, options.qos);
    last_send = MonotonicNs();
    if (seq == 0) first_send = last_send;
  }
  Drain(arrivals, expected, options.timeout_s);
  const std::int64_t end = MonotonicNs();
  publisher.reset();
  subscriber.reset();  // joins its network thread: the vectors are ours now

  const std::int64_t received = arrivals.received.load();
  const std::int64_t lost = expected - received;
  const double send_seconds = static_cast<double>(last_send - first_send) / 1e9;
  const double sent_rate = send_seconds > 0 ? static_cast<double>(count - 1) / send_seconds : 0;
  const double inputs_per_output = arrivals.actions_only ? options.action_every : 1.0;
  std::string common =
      "\"sent\":" + std::to_string(count) + ",\"expected\":" + std::to_string(expected) +
      ",\"received\":" + std::to_string(received) + ",\"lost\":" + std::to_string(lost) +
      ",\"duplicates\":" + std::to_string(arrivals.duplicates) +
      ",\"unexpected\":" + std::to_string(arrivals.unexpected) +
      ",\"strays\":" + std::to_string(arrivals.strays) + ",\"qos\":" + std::to_string(options.qos);
  if (!latency_mode) {
    const double events_per_s = SteadyEventsPerSecond(arrivals.at_ns, inputs_per_output);
    const double overall = static_cast<double>(count) * 1e9 / static_cast<double>(end - start);
    std::fprintf(stderr,
                 "  throughput: %.0f events/s sustained (%.0f overall), %lld/%lld outputs, "
                 "lost %lld, duplicates %lld, window %lld\n",
                 events_per_s, overall, static_cast<long long>(received),
                 static_cast<long long>(expected), static_cast<long long>(lost),
                 static_cast<long long>(arrivals.duplicates),
                 static_cast<long long>(options.window));
    std::printf(
        "{\"mode\":\"throughput\",\"events_per_s\":%.0f,\"overall_events_per_s\":%.0f,%s,"
        "\"window\":%lld}\n",
        events_per_s, overall, common.c_str(), static_cast<long long>(options.window));
    return 0;
  }
  std::vector<std::int64_t>& lat = arrivals.latency_ns;
  std::sort(lat.begin(), lat.end());
  auto ms = [](std::int64_t ns) { return static_cast<double>(ns) / 1e6; };
  const double p50 = ms(Quantile(lat, 0.50)), p99 = ms(Quantile(lat, 0.99)),
               p999 = ms(Quantile(lat, 0.999)), max = ms(lat.empty() ? 0 : lat.back());
  double recv_rate = 0;
  if (arrivals.at_ns.size() > 1) {
    recv_rate = static_cast<double>(arrivals.at_ns.size() - 1) * inputs_per_output * 1e9 /
                static_cast<double>(arrivals.at_ns.back() - arrivals.at_ns.front());
  }
  std::fprintf(stderr,
               "  latency at %.0f/s: p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms "
               "(%zu samples); sent %.0f/s, arrived %.0f/s, lost %lld, publisher up to %.3f "
               "ms late\n",
               options.rate, p50, p99, p999, max, lat.size(), sent_rate, recv_rate,
               static_cast<long long>(lost), ms(max_send_lag_ns));
  std::printf(
      "{\"mode\":\"latency\",\"rate\":%.0f,\"sent_rate\":%.0f,\"recv_rate\":%.0f,"
      "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f,\"samples\":%zu,"
      "\"max_send_lag_ms\":%.3f,%s}\n",
      options.rate, sent_rate, recv_rate, p50, p99, p999, max, lat.size(), ms(max_send_lag_ns),
      common.c_str());
  return 0;
}

}  // namespace
}  // namespace wisp::bench

int main(int argc, char** argv) {
  using wisp::bench::Options;
  Options options;
  CLI::App app{"mqtt_load: MQTT pipeline load generator and meter (bench/mqtt_pipeline)"};
  app.add_option("--host", options.host, "broker host");
  app.add_option("--port", options.port, "broker port")->required();
  app.add_option("--in", options.in_topic, "topic to publish readings on")->required();
  app.add_option("--out", options.out_topic,
                 "topic the path's outputs arrive on (= --in for "
                 "one hop)")
      ->required();
  app.add_option("--mode", options.mode, "throughput | latency | probe")
      ->check(CLI::IsMember({"throughput", "latency", "probe"}));
  app.add_option("--outputs", options.outputs,
                 "all: every reading comes out; actions: only readings above the limit")
      ->check(CLI::IsMember({"all", "actions"}));
  app.add_option("--qos", options.qos, "QoS of publish and subscribe")->check(CLI::Range(0, 1));
  app.add_option("--count", options.count, "readings to send (throughput)")
      ->check(CLI::Range(std::int64_t{10}, std::int64_t{100'000'000}));
  app.add_option("--rate", options.rate, "readings per second (latency)")
      ->check(CLI::Range(1.0, 1e6));
  app.add_option("--duration", options.duration_s, "seconds of sending (latency)")
      ->check(CLI::Range(0.01, 3600.0));
  app.add_option("--action-every", options.action_every,
                 "one reading in N is above the limit (100 = 1%)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1'000'000}));
  app.add_option("--window", options.window,
                 "throughput: most readings the publisher may be ahead of the outputs")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{10'000'000}));
  app.add_option("--inflight", options.inflight, "publisher's QoS 1 in-flight limit")
      ->check(CLI::Range(1, 65535));
  app.add_option("--warmup", options.warmup,
                 "latency: fraction of readings left out at the "
                 "start")
      ->check(CLI::Range(0.0, 0.9));
  app.add_option("--timeout", options.timeout_s,
                 "seconds without progress before giving up (or draining ends)")
      ->check(CLI::Range(0.1, 3600.0));
  CLI11_PARSE(app, argc, argv);
  if (options.mode == "throughput" && options.outputs == "actions" &&
      options.window < 4 * options.action_every) {
    wisp::bench::Fail(
        "--window must be at least 4x --action-every when only actions come out "
        "(the window moves one action at a time)");
  }
  mosquitto_lib_init();
  const int rc =
      options.mode == "probe" ? wisp::bench::RunProbe(options) : wisp::bench::RunLoad(options);
  mosquitto_lib_cleanup();
  return rc;
}
