// RunNode: start-up, the shard threads, and graceful shutdown.
#include <fcntl.h>
#include <openssl/rand.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "archive/event_archive.h"
#include "extensions/builtin.h"
#include "models/model_store.h"
#include "node/model_upstream.h"
#include "node/mqtt_triggers.h"
#include "node/node.h"
#include "node/shard.h"
#include "runtime/model/model_runtime.h"

namespace wisp {
namespace fs = std::filesystem;

namespace {

// Reads the control token, creating it (mode 0600, 256 random bits) on first start.
Result<std::string> LoadOrCreateToken(const std::string& data_dir) {
  const std::string path = TokenPath(data_dir);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd >= 0) {
    unsigned char random[32];
    if (RAND_bytes(random, sizeof(random)) != 1) {
      ::close(fd);
      ::unlink(path.c_str());
      return Internal("cannot get random bytes for the node token");
    }
    std::string token;
    for (unsigned char b : random) token += fmt::format("{:02x}", b);
    const std::string line = token + "\n";
    const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    ::fsync(fd);
    ::close(fd);
    if (!written) return IoError(fmt::format("cannot write the node token to {}", path));
    return token;
  }
  if (errno != EEXIST) {
    return IoError(fmt::format("cannot create the node token {}: {}", path, std::strerror(errno)));
  }
  std::ifstream in(path);
  std::string token;
  in >> token;
  if (token.empty()) {
    return IoError(
        fmt::format("the node token file {} is empty; delete it to make a new one", path));
  }
  return token;
}

// Holds an exclusive lock on <data>/lock for the life of the process, so two nodes never share
// one data directory (they would fight over functions and state).
Result<int> LockDataDir(const std::string& data_dir) {
  const std::string path = (fs::path(data_dir) / "lock").string();
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return IoError(fmt::format("cannot open {}: {}", path, std::strerror(errno)));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return Unavailable(fmt::format(
        "another wisp node is using the data directory {}; stop it or pass --data", data_dir));
  }
  return fd;
}

spdlog::level::level_enum LevelFromName(const std::string& name) {
  if (name == "debug") return spdlog::level::debug;
  if (name == "warn") return spdlog::level::warn;
  if (name == "error") return spdlog::level::err;
  return spdlog::level::info;
}

}  // namespace

int RunNode(const NodeConfig& input_config) {
  NodeConfig config = input_config;
  spdlog::set_level(LevelFromName(config.log_level));
  if (config.data_dir.empty()) config.data_dir = DefaultDataDir();
  auto fail = [](const Status& status) {
    spdlog::error("cannot start: {}", status.message());
    return 1;
  };

  std::error_code ec;
  fs::create_directories(config.data_dir, ec);
  if (ec) {
    return fail(
        IoError(fmt::format("cannot create data directory {}: {}", config.data_dir, ec.message())));
  }
  ::chmod(config.data_dir.c_str(), 0700);
  auto lock_fd = LockDataDir(config.data_dir);
  if (!lock_fd.ok()) return fail(lock_fd.status());

  RegisterBuiltinExtensions();
  auto token = LoadOrCreateToken(config.data_dir);
  if (!token.ok()) return fail(token.status());

  const int shard_count = config.shards > 0
                              ? config.shards
                              : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  MetricsRegistry metrics(shard_count);
  StateBackendOptions state_options;
  state_options.data_dir = config.data_dir;
  state_options.sync_full = config.state_sync_full;
  auto backend = OpenStateBackend(config.state_backend, state_options);
  if (!backend.ok()) return fail(backend.status().WithContext("state backend"));

  FunctionCatalog catalog(config.data_dir, &metrics);
  ModelStore models(config.data_dir);
  SetModelRuntimeStore(&models);
  if (Status s = InstallModelUpstreamCaller(config.actions.tls); !s.ok()) return fail(s);
  catalog.LoadFromDisk();

  std::unique_ptr<EventArchive> archive;
  if (config.archive.enabled) {
    ArchiveOptions options;
    options.dir = (fs::path(config.data_dir) / "archive").string();
    options.segment_bytes = config.archive.segment_bytes;
    options.segment_age = config.archive.segment_age;
    options.retention_bytes = config.archive.retention_bytes;
    options.retention_age = config.archive.retention_age;
    options.payload_preview_bytes = config.archive.payload_preview_bytes;
    auto opened = EventArchive::Open(options, shard_count, &metrics);
    if (!opened.ok()) return fail(opened.status().WithContext("event archive"));
    archive = std::move(*opened);
  }

  NodeServices services;
  services.archive = archive.get();
  services.config = &config;
  services.catalog = &catalog;
  services.models = &models;
  services.metrics = &metrics;
  services.state_backend = backend->get();
  services.token = *token;
  services.shard_count = shard_count;
  HttpActions http_actions(config.actions, &metrics);
  services.http_actions = &http_actions;
  auto async_calls =
      AsyncCalls::Open(config.data_dir, config.async.max_pending, config.async.result_ttl);
  if (!async_calls.ok()) return fail(async_calls.status());
  services.async_calls = async_calls->get();
  const int async_collector = metrics.AddCollector([calls = async_calls->get()](std::string& out) {
    AppendMetricFamily(out, "wisp_async_calls_pending", "gauge",
                       "Async invocations accepted and not finished.");
    fmt::format_to(std::back_inserter(out), "wisp_async_calls_pending {}\n", calls->pending());
  });

  std::vector<std::unique_ptr<Shard>> shards;
  std::uint16_t port = config.listen_port;
  for (int i = 0; i < shard_count; ++i) {
    auto shard = std::make_unique<Shard>(i, services);
    if (Status s = shard->Init(port); !s.ok()) return fail(s);
    port = shard->port();  // with port 0 the first shard picks; the others join it
    shards.push_back(std::move(shard));
  }
  std::unique_ptr<MqttTriggers> mqtt;
  if (!config.mqtt.broker.empty()) {
    std::vector<Shard*> shard_pointers;
    for (auto& shard : shards) shard_pointers.push_back(shard.get());
    auto created = MqttTriggers::Create(config.mqtt, services, shard_pointers);
    if (!created.ok()) return fail(created.status().WithContext("mqtt"));
    mqtt = std::move(*created);
    services.publish = [m = mqtt.get()](std::string_view topic, std::string_view payload,
                                        const EmitOptions& options) {
      return m->Publish(topic, payload, options);
    };
    services.dead_letter = [m = mqtt.get()](const std::string& function,
                                            const MqttDelivery& delivery, const Status& why) {
      m->PublishDeadLetter(function, delivery, why);
    };
  }
  services.on_catalog_changed = [&shards, m = mqtt.get()] {
    for (auto& shard : shards) {
      boost::asio::post(shard->io(), [s = shard.get()] { s->Prewarm(); });
    }
    if (m) m->Sync();
  };

  for (const std::string& dir : config.deploy_dirs) {
    auto bundle = ReadBundleFromDirectory(dir);
    auto deployed = bundle.ok() ? catalog.Deploy(*bundle)
                                : Result<std::vector<DeployedFunctionPtr>>(bundle.status());
    if (!deployed.ok()) return fail(deployed.status().WithContext("deploying " + dir));
    for (const auto& fn : *deployed) {
      spdlog::info("deployed {} from {} (runtime {}, version {})", fn->spec->name, dir,
                   fn->spec->runtime, fn->spec->version);
    }
  }
  services.on_catalog_changed();
  if (mqtt) {
    if (Status started = mqtt->Start(); !started.ok()) return fail(started.WithContext("mqtt"));
    spdlog::info("mqtt: using broker {}", config.mqtt.broker);
  }

  const std::string url =
      fmt::format("http://{}:{}",
                  config.listen_host.find(':') != std::string::npos ? "[" + config.listen_host + "]"
                                                                    : config.listen_host,
                  port);
  {
    std::ofstream info(NodeInfoPath(config.data_dir), std::ios::trunc);
    info << nlohmann::json{{"url", url}, {"pid", ::getpid()}}.dump() << "\n";
  }

  // Calls accepted by an earlier run and never finished run again now (at least once).
  if (auto unfinished = (*async_calls)->Unfinished(); !unfinished.ok()) {
    spdlog::error("async calls: {}", unfinished.status().message());
  } else if (!unfinished->empty()) {
    spdlog::info("async calls: running {} call(s) left unfinished by the last run",
                 unfinished->size());
    for (AsyncCall& call : *unfinished) {
      Shard* shard = shards[std::hash<std::string>{}(call.id) % shards.size()].get();
      boost::asio::post(shard->io(), [shard, call = std::move(call)] { shard->RunAsync(call); });
    }
  }

  // Signals go to the main thread only: block them before the shard threads inherit the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  std::mutex done_mu;
  std::condition_variable done_cv;
  int running = shard_count;
  std::vector<std::thread> threads;
  for (auto& shard : shards) {
    threads.emplace_back([&, s = shard.get()] {
      s->Run();
      std::lock_guard lock(done_mu);
      --running;
      done_cv.notify_all();
    });
  }
  spdlog::info("wispd {} listening on {} ({} shards, data {})", WISP_VERSION, url, shard_count,
               config.data_dir);

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  spdlog::info("received {}, draining in-flight requests (up to {} ms)",
               signal_number == SIGTERM ? "SIGTERM" : "SIGINT", config.drain_timeout.count());
  services.draining = true;
  // MQTT first: a QoS 1 message being run finishes (and is acknowledged) while the shards still
  // run; nothing new arrives after.
  if (mqtt) mqtt->Stop(config.drain_timeout);
  for (auto& shard : shards) {
    boost::asio::post(shard->io(), [s = shard.get()] { s->Drain(); });
  }
  {
    std::unique_lock lock(done_mu);
    if (!done_cv.wait_for(lock, config.drain_timeout, [&] { return running == 0; })) {
      spdlog::warn("drain timeout reached with {} shard(s) still busy; stopping them", running);
      for (auto& shard : shards) shard->io().stop();
    }
  }
  for (auto& thread : threads) thread.join();
  shards.clear();
  http_actions.Stop();  // callbacks still queued are dropped; their results stay readable
  metrics.RemoveCollector(async_collector);
  fs::remove(NodeInfoPath(config.data_dir), ec);
  ::close(*lock_fd);
  spdlog::info("stopped");
  return 0;
}

}  // namespace wisp
