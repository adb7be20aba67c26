// End-to-end tests of the instance lifecycle (docs/lifecycle.md) on the real wispd: a burst of
// calls on a process function scaled to zero, the bounded wait queue and its 429, and a slow
// process function that must not hold up a Lua function on the same shard.
//
// Calls that must stay in flight wait on a gate (a file the test creates), not on a sleep, so
// the outcome never depends on how fast the machine is.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <charconv>
#include <fstream>
#include <future>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness.h"

namespace wisp::testing {
namespace {

using nlohmann::json;

const HttpHeaders kJson = {{"Content-Type", "application/json"}};

constexpr const char* kManifest = R"yaml(
version: 1
functions:
  burst:
    runtime: process
    handler: ./echo.py:handle
    limits: { memory: 128Mi, timeout: 20s }
    scale: { min: 0, max: 4 }
  gated:
    runtime: process
    handler: ./gated.py:handle
    limits: { memory: 128Mi, timeout: 30s }
    scale: { min: 0, max: 1, queue: 2 }
  pong:
    runtime: lua
    handler: ./pong.lua:handle
)yaml";

constexpr const char* kEcho = R"py(
import os

def handle(event, context):
    return {"statusCode": 200, "body": {"n": event.json()["n"], "pid": os.getpid()}}
)py";

// Holds the call until the gate file exists.
constexpr const char* kGated = R"py(
import os, time

def handle(event, context):
    request = event.json()
    while not os.path.exists(request["gate"]):
        time.sleep(0.01)
    return {"statusCode": 200, "body": {"n": request["n"]}}
)py";

constexpr const char* kPong = R"lua(
local M = {}
function M.handle(event, ctx)
  return "pong"
end
return M
)lua";

class LifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Instances run as their own uids when the tests run as root: they must be able to see
    // the gate.
    ::chmod(tmp_.path().c_str(), 0755);
    gate_ = tmp_.path() + "/gate/open";
    tmp_.Write("gate/.keep", "");
    ::chmod((tmp_.path() + "/gate").c_str(), 0755);
    data_dir_ = tmp_.path() + "/data";
    node_ = std::make_unique<NodeProcess>(data_dir_, tmp_.path() + "/wispd.log");
    // One shard: every call meets the same pool and queue. The autoscaler's first tick is an
    // hour away: these tests count the instances the pool itself starts, and a scale-down after
    // the burst would race those counts (AutoscaleTest covers scaling).
    Status started = node_->Start({"--shards", "1"}, "scheduling:\n  tick: 3600s\n");
    ASSERT_TRUE(started.ok()) << started.ToString();
    tmp_.Write("fns/wisp.yaml", kManifest);
    tmp_.Write("fns/echo.py", kEcho);
    tmp_.Write("fns/gated.py", kGated);
    tmp_.Write("fns/pong.lua", kPong);
    CommandResult r = RunCli({"deploy", tmp_.path() + "/fns"}, {{"WISP_HOME", data_dir_}});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }
  void TearDown() override {
    OpenGate();  // never leave a call hanging
    if (HasFailure()) std::cerr << "---- wispd log ----\n" << node_->Log() << "\n";
  }

  void OpenGate() { std::ofstream(gate_) << "open"; }

  Result<HttpResponse> Invoke(const std::string& name, const json& body) const {
    return node_->Request("POST", "/v1/functions/" + name + "/invoke", body.dump(), kJson);
  }

  // The value of the series `name{labels...}` whose labels include `function="<function>"`.
  double Metric(const std::string& name, const std::string& function,
                const std::string& extra_label = "") {
    auto r = node_->Request("GET", "/metrics");
    EXPECT_TRUE(r.ok() && r->status == 200);
    if (!r.ok()) return -1;
    if (auto value = testing::FindMetric(r->body, name, function, extra_label)) return *value;
    ADD_FAILURE() << "no series " << name << " for " << function << " in\n" << r->body;
    return -1;
  }

  // Polls /metrics until the series has `value` (a few seconds at most); true if it did.
  bool WaitForMetric(const std::string& name, const std::string& function, const std::string& label,
                     double value) {
    for (int i = 0; i < 1000; ++i) {
      if (Metric(name, function, label) == value) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return Metric(name, function, label) == value;
  }

  TempDir tmp_;
  std::string gate_;
  std::string data_dir_;
  std::unique_ptr<NodeProcess> node_;
};

TEST_F(LifecycleTest, BurstFromZeroFailsNothing) {
  constexpr int kCalls = 64;
  ASSERT_EQ(Metric("wisp_function_instances", "burst"), 0);  // scale.min 0: nothing warm
  std::vector<std::future<Result<HttpResponse>>> calls;
  for (int i = 0; i < kCalls; ++i) {
    calls.push_back(std::async(std::launch::async, [this, i] {
      return Invoke("burst", {{"n", i}});
    }));
  }
  int cold_replies = 0;
  std::set<int> pids;
  for (int i = 0; i < kCalls; ++i) {
    Result<HttpResponse> r = calls[i].get();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->status, 200) << r->body;
    json body = json::parse(r->body, nullptr, false);
    ASSERT_TRUE(body.is_object()) << r->body;
    EXPECT_EQ(body.value("n", -1), i);
    pids.insert(body.value("pid", -1));
    if (r->Header("X-Wisp-Cold-Start") == "1") ++cold_replies;
  }
  // Instances started for the burst may still be coming up after the others served it; once
  // they are up, every instance started is warm and idle.
  EXPECT_TRUE(WaitForMetric("wisp_function_instances_by_state", "burst", "state=\"starting\"", 0));
  const double cold_starts = Metric("wisp_function_cold_starts_total", "burst");
  EXPECT_GE(cold_starts, 1);
  EXPECT_LE(cold_starts, 4);  // scale.max per shard, one shard
  EXPECT_LE(pids.size(), static_cast<std::size_t>(cold_starts));
  EXPECT_EQ(cold_replies, static_cast<int>(pids.size()));  // each new instance's first call
  EXPECT_EQ(Metric("wisp_function_warm_starts_total", "burst"), kCalls - cold_replies);
  EXPECT_EQ(Metric("wisp_function_rejected_total", "burst"), 0);
  EXPECT_EQ(Metric("wisp_function_queue_depth", "burst"), 0);
  EXPECT_EQ(Metric("wisp_function_instances_by_state", "burst", "state=\"idle\""), cold_starts);
}

TEST_F(LifecycleTest, FullQueueGives429WithRetryAfterAndTheRestSucceed) {
  // Warm the one instance first (a gate that is already open: "/"), so what follows does not
  // depend on when it finishes starting: with max 1 instance and queue 2, of 8 calls held at
  // the gate exactly 1 runs and 2 wait; the other 5 are refused.
  Result<HttpResponse> warm = Invoke("gated", {{"n", -1}, {"gate", "/"}});
  ASSERT_TRUE(warm.ok() && warm->status == 200) << (warm.ok() ? warm->body : "");
  constexpr int kCalls = 8;
  std::vector<std::future<Result<HttpResponse>>> calls;
  for (int i = 0; i < kCalls; ++i) {
    calls.push_back(std::async(std::launch::async, [this, i] {
      return Invoke("gated", {{"n", i}, {"gate", gate_}});
    }));
  }
  // The refusals come back while the gate is still shut; the accepted calls cannot.
  std::vector<bool> answered(kCalls, false);
  int refused = 0;
  while (refused < kCalls - 3) {
    for (int i = 0; i < kCalls; ++i) {
      if (answered[i] ||
          calls[i].wait_for(std::chrono::milliseconds(20)) != std::future_status::ready) {
        continue;
      }
      answered[i] = true;
      Result<HttpResponse> r = calls[i].get();
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      ASSERT_EQ(r->status, 429) << "call " << i << " answered before the gate opened: " << r->body;
      auto retry_after = r->Header("Retry-After");
      ASSERT_TRUE(retry_after.has_value());
      int seconds = 0;
      auto [p, ec] =
          std::from_chars(retry_after->data(), retry_after->data() + retry_after->size(), seconds);
      EXPECT_TRUE(ec == std::errc() && seconds >= 1 && seconds <= 60) << *retry_after;
      EXPECT_EQ(r->Header("X-Wisp-Error"), "resource_exhausted");
      ++refused;
    }
  }
  EXPECT_EQ(Metric("wisp_function_rejected_total", "gated"), kCalls - 3);
  EXPECT_EQ(Metric("wisp_function_queue_depth", "gated"), 2);
  OpenGate();
  int ok = 0;
  for (int i = 0; i < kCalls; ++i) {
    if (answered[i]) continue;
    Result<HttpResponse> r = calls[i].get();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 200) << r->body;
    json body = json::parse(r->body, nullptr, false);
    EXPECT_TRUE(body.is_object() && body.value("n", -1) == i) << r->body;
    ++ok;
  }
  EXPECT_EQ(ok, 3);
  EXPECT_EQ(Metric("wisp_function_cold_starts_total", "gated"), 1);
}

TEST_F(LifecycleTest, SlowProcessFunctionDoesNotBlockLuaOnTheSameShard) {
  auto slow = std::async(std::launch::async, [this] {
    return Invoke("gated", {{"n", 7}, {"gate", gate_}});
  });
  // Wait until the slow call holds the instance (busy), so the shard is really mid-call.
  ASSERT_TRUE(WaitForMetric("wisp_function_instances_by_state", "gated", "state=\"busy\"", 1));
  for (int i = 0; i < 3; ++i) {
    Result<HttpResponse> pong = Invoke("pong", json::object());
    ASSERT_TRUE(pong.ok()) << pong.status().ToString();
    EXPECT_EQ(pong->status, 200);
    EXPECT_EQ(pong->body, "pong");
  }
  EXPECT_NE(slow.wait_for(std::chrono::seconds(0)), std::future_status::ready);  // still held
  OpenGate();
  Result<HttpResponse> r = slow.get();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200) << r->body;
}

TEST_F(LifecycleTest, RedeployDrainsTheOldInstanceAfterItsCall) {
  auto old_call = std::async(std::launch::async, [this] {
    return Invoke("gated", {{"n", 1}, {"gate", gate_}});
  });
  ASSERT_TRUE(WaitForMetric("wisp_function_instances_by_state", "gated", "state=\"busy\"", 1));

  // Version 2 answers with a marker. The deploy is served on the same (only) shard while the
  // old call is still running.
  tmp_.Write("fns/gated.py",
             std::string(kGated).replace(std::string(kGated).find("{\"n\": request[\"n\"]}"),
                                         std::string("{\"n\": request[\"n\"]}").size(),
                                         "{\"n\": request[\"n\"], \"v\": 2}"));
  CommandResult r = RunCli({"deploy", tmp_.path() + "/fns"}, {{"WISP_HOME", data_dir_}});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(WaitForMetric("wisp_function_instances_by_state", "gated", "state=\"draining\"", 1));

  Result<HttpResponse> fresh = Invoke("gated", {{"n", 2}, {"gate", "/"}});
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  ASSERT_EQ(fresh->status, 200) << fresh->body;
  EXPECT_EQ(json::parse(fresh->body, nullptr, false).value("v", 0), 2) << fresh->body;
  EXPECT_NE(old_call.wait_for(std::chrono::seconds(0)), std::future_status::ready);

  OpenGate();
  Result<HttpResponse> old = old_call.get();
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  ASSERT_EQ(old->status, 200) << old->body;
  json body = json::parse(old->body, nullptr, false);
  EXPECT_EQ(body.value("n", -1), 1);
  EXPECT_FALSE(body.contains("v")) << "the call that was running finished on version 1";
  EXPECT_TRUE(WaitForMetric("wisp_function_instances_by_state", "gated", "state=\"draining\"", 0));
}

}  // namespace
}  // namespace wisp::testing
