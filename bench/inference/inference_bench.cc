// bench/inference: per-call latency and throughput of (a) a direct OpenCV DNN forward in a
// tight loop, (b) the same model through wisp's backend session (ModelSession::Run) and (c)
// through wisp's in-process model-function path (the "model" runtime's Instance::Invoke on a
// decoded JSON event: field extraction, scaling, tensor, Run, argmax, JSON reply). No HTTP.
//
//   inference_bench --models DIR [--seconds S]
//
// Then the cost of decoding the event's body (JSON text or CBOR) that the node pays before any
// runtime, and micro-batching: C closed-loop clients (C = 1, 8, 64) calling the model function's
// asynchronous path on one event loop (a shard), with batching off and on
// (`batching: {max_batch: 64, max_delay: 0ms}`); calls/s, per-call latency and the mean batch.
//
// Prints tables and a last line RESULT {json}. One thread; run.sh pins nothing.
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>

#include "extensions/builtin.h"
#include "http/request.h"
#include "runtime/model/model_runtime.h"
#include "wisp/inference.h"

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

struct Figures {
  std::size_t calls = 0;
  double mean_us = 0, p50_us = 0, p99_us = 0, calls_per_s = 0;
};

// Times every call of each of `calls` in turn, `rounds` times, each for seconds/rounds (after a
// warm-up): interleaving keeps a change in the machine's load from favouring one path.
std::vector<Figures> Measure(const std::vector<std::function<void()>>& calls, double seconds,
                             int rounds = 6) {
  for (const auto& call : calls) {
    for (int i = 0; i < 200; ++i) call();
  }
  std::vector<std::vector<double>> samples(calls.size());
  std::vector<double> busy_s(calls.size(), 0.0);
  for (int round = 0; round < rounds; ++round) {
    for (std::size_t k = 0; k < calls.size(); ++k) {
      const auto start = Clock::now();
      const auto stop = start + std::chrono::duration<double>(seconds / rounds);
      auto now = start;
      while (now < stop) {
        const auto before = Clock::now();
        calls[k]();
        now = Clock::now();
        samples[k].push_back(std::chrono::duration<double, std::micro>(now - before).count());
      }
      busy_s[k] += std::chrono::duration<double>(now - start).count();
    }
  }
  std::vector<Figures> figures;
  for (std::size_t k = 0; k < calls.size(); ++k) {
    std::vector<double>& s = samples[k];
    Figures f;
    f.calls = s.size();
    double sum = 0;
    for (double v : s) sum += v;
    f.mean_us = sum / s.size();
    std::sort(s.begin(), s.end());
    f.p50_us = s[s.size() / 2];
    f.p99_us = s[std::min(s.size() - 1, s.size() * 99 / 100)];
    f.calls_per_s = s.size() / busy_s[k];
    figures.push_back(f);
  }
  return figures;
}

json ToJson(const Figures& f) {
  return {{"calls", f.calls},
          {"mean_us", f.mean_us},
          {"p50_us", f.p50_us},
          {"p99_us", f.p99_us},
          {"calls_per_s", f.calls_per_s}};
}

class NullHost final : public wisp::HostApi {
 public:
  wisp::StateStore& State() override { std::abort(); }
  std::string_view Namespace() const override { return "bench"; }
  void Log(wisp::LogLevel, std::string_view) override {}
  wisp::Status Emit(std::string_view, std::string_view, const wisp::EmitOptions&) override {
    return wisp::Status::Ok();
  }
  std::chrono::system_clock::time_point Now() const override {
    return std::chrono::system_clock::now();
  }
};

struct ConcurrentFigures {
  std::size_t calls = 0, failures = 0;
  double calls_per_s = 0, p50_us = 0, p99_us = 0, mean_batch = 0;
};

// `concurrency` clients each call `instance` asynchronously and call again as soon as the reply
// arrives (posted, so no call starts inside another's completion), for `seconds` after a short
// warm-up. The mean batch is rows / backend runs from the function's counters.
ConcurrentFigures MeasureConcurrent(wisp::Instance& instance, wisp::HostApi& host,
                                    const wisp::Event& event, int concurrency, double seconds,
                                    const wisp::ModelFunctionMetrics& metrics) {
  boost::asio::io_context io;
  std::vector<Clock::time_point> started(static_cast<std::size_t>(concurrency));
  std::vector<double> latencies;
  std::size_t failures = 0;
  bool stopping = false;
  // A client's next request exists from the moment its reply arrived: its latency counts the
  // wait behind the other clients' calls as well as its own call (and batch).
  std::function<void(int)> issue = [&](int k) {
    instance.InvokeAsync(event, host, io, [&, k](wisp::Result<wisp::Reply> reply) {
      const auto now = Clock::now();
      latencies.push_back(std::chrono::duration<double, std::micro>(now - started[k]).count());
      if (!reply.ok() || reply->status != 200) ++failures;
      if (stopping) return;
      started[k] = now;
      boost::asio::post(io, [&issue, k] { issue(k); });
    });
  };
  auto run_for = [&](double run_seconds) {
    stopping = false;
    for (int k = 0; k < concurrency; ++k) {
      started[k] = Clock::now();
      boost::asio::post(io, [&issue, k] { issue(k); });
    }
    boost::asio::steady_timer stop(io, std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(run_seconds)));
    stop.async_wait([&](const boost::system::error_code&) { stopping = true; });
    io.restart();
    io.run();  // returns once every client's last call has ended
  };
  run_for(std::min(0.3, seconds / 4));  // warm-up
  latencies.clear();
  failures = 0;
  const auto runs_before = metrics.runs.load();
  const auto rows_before = metrics.rows.load();
  const auto start = Clock::now();
  run_for(seconds);
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  ConcurrentFigures f;
  f.calls = latencies.size();
  f.failures = failures;
  f.calls_per_s = latencies.size() / elapsed;
  std::sort(latencies.begin(), latencies.end());
  if (!latencies.empty()) {
    f.p50_us = latencies[latencies.size() / 2];
    f.p99_us = latencies[std::min(latencies.size() - 1, latencies.size() * 99 / 100)];
  }
  const auto runs = metrics.runs.load() - runs_before;
  f.mean_batch = runs == 0 ? 0 : static_cast<double>(metrics.rows.load() - rows_before) / runs;
  return f;
}

json ToJson(const ConcurrentFigures& f) {
  return {{"calls", f.calls},   {"calls_per_s", f.calls_per_s}, {"p50_us", f.p50_us},
          {"p99_us", f.p99_us}, {"mean_batch", f.mean_batch},   {"failures", f.failures}};
}

struct Case {
  std::string name;        // "mlp"
  std::string file;        // in the models dir
  std::string model_yaml;  // the function's settings
  json event;              // what the function gets
  std::vector<int> shape;  // the model input's shape
  std::vector<float> input;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"wisp inference benchmark"};
  std::string models_dir;
  double seconds = 2.0;
  app.add_option("--models", models_dir, "Directory with mlp.onnx and cnn1d_medium.onnx")
      ->required();
  app.add_option("--seconds", seconds, "Seconds per measurement");
  CLI11_PARSE(app, argc, argv);
  wisp::RegisterBuiltinExtensions();  // also sets OpenCV to one thread, for (a) as well

  std::vector<Case> cases;
  {
    Case mlp{"mlp",
             "mlp.onnx",
             "file: ./model.onnx\ninput: {fields: [a, b, c, d]}\n"
             "output: {kind: argmax}\n",
             {},
             {},
             {}};
    mlp.event = {{"a", 0.5}, {"b", -1.0}, {"c", 0.25}, {"d", 2.0}};
    mlp.shape = {1, 4};
    mlp.input = {0.5f, -1.0f, 0.25f, 2.0f};
    cases.push_back(mlp);
    Case cnn{"cnn1d_medium",
             "cnn1d_medium.onnx",
             "file: ./model.onnx\ninput: {field: x}\noutput: {kind: argmax}\n",
             {},
             {},
             {}};
    cnn.shape = {1, 8, 128};
    for (int i = 0; i < 8 * 128; ++i) cnn.input.push_back(std::sin(i * 0.1f));
    cnn.event = {{"x", cnn.input}};
    cases.push_back(cnn);
  }

  json result = json::object();
  std::printf("%-14s %-22s %10s %10s %10s %12s\n", "model", "path", "mean_us", "p50_us", "p99_us",
              "calls/s");
  for (Case& c : cases) {
    const std::string bytes = ReadFile(models_dir + "/" + c.file);
    if (bytes.empty()) {
      std::fprintf(stderr, "missing model %s/%s (tools/models/make_models.py writes it)\n",
                   models_dir.c_str(), c.file.c_str());
      return 2;
    }
    // (a) direct OpenCV DNN.
    cv::dnn::Net net = cv::dnn::readNetFromONNX(bytes.data(), bytes.size());
    net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
    cv::Mat blob(static_cast<int>(c.shape.size()), c.shape.data(), CV_32F, c.input.data());
    cv::Mat out;
    auto direct_call = [&] {
      net.setInput(blob, "x");
      out = net.forward("y");
    };

    // (b) wisp's backend session.
    auto backend = (*wisp::InferenceBackendRegistry::Get().Find("opencv"))();
    auto session = backend->Load(bytes);
    if (!session.ok()) {
      std::fprintf(stderr, "%s\n", session.status().ToString().c_str());
      return 1;
    }
    wisp::Tensor tensor;
    tensor.shape.assign(c.shape.begin(), c.shape.end());
    tensor.data = c.input;
    wisp::NamedTensors inputs = {{"x", tensor}};
    auto session_call = [&] { (void)(*session)->Run(inputs); };

    // (c) the model function's Instance, as a shard calls it.
    const std::string dir = std::filesystem::temp_directory_path() / ("wisp-bench-" + c.name);
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/model.onnx", std::ios::binary) << bytes;
    std::ofstream(dir + "/model.yaml") << c.model_yaml;
    auto spec = std::make_shared<wisp::FunctionSpec>();
    spec->name = "bench-" + c.name;
    spec->runtime = "model";
    spec->handler_file = "model.yaml";
    auto instance = wisp::MakeModelRuntime(nullptr)->CreateInstance(spec, dir);
    if (!instance.ok()) {
      std::fprintf(stderr, "%s\n", instance.status().ToString().c_str());
      return 1;
    }
    const std::string body = c.event.dump();
    wisp::Event event;
    event.body = body;
    event.json = &c.event;
    NullHost host;
    std::size_t failures = 0;
    auto function_call = [&] {
      auto reply = (*instance)->Invoke(event, host);
      if (!reply.ok() || reply->status != 200) ++failures;
    };
    const std::vector<Figures> figures =
        Measure({direct_call, session_call, function_call}, seconds);
    const Figures& direct = figures[0];
    const Figures& backend_run = figures[1];
    const Figures& function = figures[2];
    if (failures > 0) {
      std::fprintf(stderr, "%zu model-function calls failed\n", failures);
      return 1;
    }

    for (const auto& [label, f] :
         {std::pair{"opencv_direct", direct}, std::pair{"wisp_session_run", backend_run},
          std::pair{"wisp_model_function", function}}) {
      std::printf("%-14s %-22s %10.2f %10.2f %10.2f %12.0f\n", c.name.c_str(), label, f.mean_us,
                  f.p50_us, f.p99_us, f.calls_per_s);
    }
    // Medians as well as means: on a shared machine preemption inflates the means.
    const double ratio = function.mean_us / direct.mean_us;
    const double added = function.mean_us - direct.mean_us;
    const double ratio_p50 = function.p50_us / direct.p50_us;
    const double added_p50 = function.p50_us - direct.p50_us;
    std::printf(
        "%-14s function/direct: mean %.3fx (+%.2f us), p50 %.3fx (+%.2f us) "
        "(goal: <= 1.05x or <= 5 us)\n",
        c.name.c_str(), ratio, added, ratio_p50, added_p50);
    result[c.name] = {{"opencv_direct", ToJson(direct)},
                      {"wisp_session_run", ToJson(backend_run)},
                      {"wisp_model_function", ToJson(function)},
                      {"function_over_direct", ratio},
                      {"added_us", added},
                      {"goal_met", ratio <= 1.05 || added <= 5.0},
                      {"function_over_direct_p50", ratio_p50},
                      {"added_p50_us", added_p50},
                      {"goal_met_p50", ratio_p50 <= 1.05 || added_p50 <= 5.0}};

    // What the node does with the event's bytes before any runtime: decode the body, as JSON
    // text or as CBOR (the same event).
    std::string cbor;
    json::to_cbor(c.event, cbor);
    auto decode_json = [&] {
      if (!wisp::DecodeInvokeBody("application/json", body).ok()) ++failures;
    };
    auto decode_cbor = [&] {
      if (!wisp::DecodeInvokeBody("application/cbor", cbor).ok()) ++failures;
    };
    const std::vector<Figures> decoding = Measure({decode_json, decode_cbor}, seconds / 2);
    std::printf("%-14s event decode: JSON %zu bytes p50 %.2f us, CBOR %zu bytes p50 %.2f us\n",
                c.name.c_str(), body.size(), decoding[0].p50_us, cbor.size(), decoding[1].p50_us);
    result[c.name]["event_decode"] = {{"json_bytes", body.size()},
                                      {"json", ToJson(decoding[0])},
                                      {"cbor_bytes", cbor.size()},
                                      {"cbor", ToJson(decoding[1])}};

    // Micro-batching: the same function with batching off and on, at 1, 8 and 64 clients.
    std::ofstream(dir + "/model.yaml")
        << c.model_yaml << "batching: {max_batch: 64, max_delay: 0ms}\n";
    auto batching_spec = std::make_shared<wisp::FunctionSpec>(*spec);
    batching_spec->name = "bench-batched-" + c.name;
    batching_spec->concurrency_max = 64;
    auto batched = wisp::MakeModelRuntime(nullptr)->CreateInstance(batching_spec, dir);
    std::filesystem::remove_all(dir);
    if (!batched.ok()) {
      std::fprintf(stderr, "%s\n", batched.status().ToString().c_str());
      return 1;
    }
    const auto unbatched_metrics = wisp::ModelFunctionMetricsFor(spec->name);
    const auto batched_metrics = wisp::ModelFunctionMetricsFor(batching_spec->name);
    std::printf("%-14s %-12s %6s %12s %10s %10s %10s %8s\n", c.name.c_str(), "batching", "conc",
                "calls/s", "p50_us", "p99_us", "batch", "gain");
    json batching = json::object();
    for (int concurrency : {1, 8, 64}) {
      const ConcurrentFigures off =
          MeasureConcurrent(**instance, host, event, concurrency, seconds / 2, *unbatched_metrics);
      const ConcurrentFigures on =
          MeasureConcurrent(**batched, host, event, concurrency, seconds / 2, *batched_metrics);
      if (off.failures + on.failures > 0) {
        std::fprintf(stderr, "%zu concurrent calls failed\n", off.failures + on.failures);
        return 1;
      }
      const double gain = on.calls_per_s / off.calls_per_s;
      for (const auto& [label, f] : {std::pair{"off", off}, std::pair{"on", on}}) {
        std::printf("%-14s %-12s %6d %12.0f %10.2f %10.2f %10.2f %8s\n", c.name.c_str(), label,
                    concurrency, f.calls_per_s, f.p50_us, f.p99_us, f.mean_batch,
                    std::string_view(label) == "on" ? fmt::format("{:.2f}x", gain).c_str() : "");
      }
      batching[fmt::format("c{}", concurrency)] = {
          {"off", ToJson(off)}, {"on", ToJson(on)}, {"throughput_gain", gain}};
    }
    result[c.name]["batching"] = batching;
  }
  std::printf("RESULT %s\n", result.dump().c_str());
  return 0;
}
