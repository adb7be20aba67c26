// End-to-end tests of the process runtime: the real wispd runs Python functions deployed with
// the real CLI, with a real mosquitto for their emits. The isolation tests run functions that
// misbehave on purpose (crash, loop, hog memory, fork without end, write outside their
// directory, call denied syscalls) and check that the caller gets a clear error and the node
// keeps serving.
#include <dirent.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <fstream>
#include <iterator>
#include <string>

#include <nlohmann/json.hpp>

#include "broker.h"
#include "harness.h"
#include "mqtt_inbox.h"

namespace wisp::testing {
namespace {

using nlohmann::json;

const HttpHeaders kJson = {{"Content-Type", "application/json"}};

constexpr const char* kManifest = R"yaml(
version: 1
functions:
  crash:
    runtime: process
    handler: ./crash.py:handle
    limits: { memory: 128Mi, timeout: 20s }
  loop:
    runtime: process
    handler: ./loop.py:handle
    limits: { memory: 128Mi, timeout: 2s }
  hog:
    runtime: process
    handler: ./hog.py:handle
    limits: { memory: 128Mi, timeout: 20s }
  forks:
    runtime: process
    handler: ./forks.py:handle
    limits: { memory: 128Mi, timeout: 20s }
  bomb:
    runtime: process
    handler: ./bomb.py:handle
    limits: { memory: 128Mi, timeout: 3s }
    scale: { max: 1 }  # the autoscaler must not add an instance: the test counts processes
  writer:
    runtime: process
    handler: ./writer.py:handle
    limits: { memory: 128Mi, timeout: 20s }
  syscalls:
    runtime: process
    handler: ./syscalls.py:handle
    limits: { memory: 128Mi, timeout: 20s }
)yaml";

constexpr const char* kCrash = R"py(
import os

def handle(event, context):
    how = event.json().get("how")
    if how == "exit":
        os.write(2, b"giving up\n")
        os._exit(1)
    if how == "abort":
        os.abort()
    if how == "raise":
        raise ValueError("bad reading")
    return {"statusCode": 200, "body": {"pid": os.getpid()}}
)py";

constexpr const char* kLoop = R"py(
import os

def handle(event, context):
    if event.json().get("spin"):
        while True:
            pass
    return {"statusCode": 200, "body": {"pid": os.getpid()}}
)py";

constexpr const char* kHog = R"py(
def handle(event, context):
    if event.json().get("hog"):
        chunks = []
        while True:
            chunks.append(bytearray(8 << 20))
    return "fine"
)py";

// Forks until the kernel says no, then reports how far it got.
constexpr const char* kForks = R"py(
import os, time

def handle(event, context):
    forked = 0
    try:
        while forked < 10000:
            if os.fork() == 0:
                time.sleep(600)
                os._exit(0)
            forked += 1
    except OSError as e:
        return {"statusCode": 200, "body": {"forked": forked, "errno": e.errno}}
    return {"statusCode": 200, "body": {"forked": forked, "errno": 0}}
)py";

// The classic: every process forks for ever.
constexpr const char* kBomb = R"py(
import os

def handle(event, context):
    while True:
        try:
            os.fork()
        except OSError:
            pass
)py";

constexpr const char* kWriter = R"py(
import errno, os

def handle(event, context):
    results = {}
    for path in event.json()["paths"] + [os.path.join(os.environ["TMPDIR"], "scratch"), "own.txt"]:
        try:
            with open(path, "w") as f:
                f.write("x")
            results[path] = "written"
        except OSError as e:
            results[path] = errno.errorcode.get(e.errno, str(e.errno))
    return {"statusCode": 200, "body": results}
)py";

constexpr const char* kSyscalls = R"py(
import ctypes, os

def handle(event, context):
    libc = ctypes.CDLL(None, use_errno=True)
    out = {}
    for name, call in [("ptrace", lambda: libc.ptrace(0, 0, 0, 0)),
                       ("unshare", lambda: libc.unshare(0x10000000)),
                       ("mount", lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
                       ("getpid", lambda: libc.getpid())]:
        ctypes.set_errno(0)
        rc = call()
        out[name] = {"rc": rc, "errno": ctypes.get_errno()}
    return {"statusCode": 200, "body": out}
)py";

class ProcessRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(broker_.Start().ok()) << broker_.Log();
    data_dir_ = tmp_.path() + "/data";
    node_ = std::make_unique<NodeProcess>(data_dir_, tmp_.path() + "/wispd.log");
    // One shard, so that consecutive calls meet the same warm instance (pids are compared).
    Status started = node_->Start({"--shards", "1", "--broker", broker_.url()});
    ASSERT_TRUE(started.ok()) << started.ToString();
    tmp_.Write("fns/wisp.yaml", kManifest);
    tmp_.Write("fns/crash.py", kCrash);
    tmp_.Write("fns/loop.py", kLoop);
    tmp_.Write("fns/hog.py", kHog);
    tmp_.Write("fns/forks.py", kForks);
    tmp_.Write("fns/bomb.py", kBomb);
    tmp_.Write("fns/writer.py", kWriter);
    tmp_.Write("fns/syscalls.py", kSyscalls);
    Deploy(tmp_.path() + "/fns");
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "---- wispd log ----\n" << node_->Log() << "\n";
    if (client_) client_->Stop();
  }

  CommandResult Cli(std::vector<std::string> args) {
    return RunCli(args, {{"WISP_HOME", data_dir_}});
  }
  void Deploy(const std::string& dir) {
    CommandResult r = Cli({"deploy", dir});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }

  HttpResponse Invoke(const std::string& name, const std::string& body = "{}") {
    auto r = node_->Request("POST", "/v1/functions/" + name + "/invoke", body, kJson);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : HttpResponse{};
  }

  static json Error(const HttpResponse& r) {
    json body = json::parse(r.body, nullptr, false);
    return body.is_object() && body.contains("error") ? body["error"] : json::object();
  }

  // The warm instance answers with its pid; the same pid means the same process.
  int Pid(const std::string& name) {
    HttpResponse r = Invoke(name);
    EXPECT_EQ(r.status, 200) << r.body;
    json body = json::parse(r.body, nullptr, false);
    return body.is_object() ? body.value("pid", -1) : -1;
  }

  // Live processes (zombies have no command line) whose command line mentions `needle`.
  static int ProcessesRunning(const std::string& needle) {
    int count = 0;
    DIR* proc = ::opendir("/proc");
    if (!proc) return -1;
    while (dirent* e = ::readdir(proc)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      std::ifstream file(std::string("/proc/") + e->d_name + "/cmdline");
      std::string cmdline((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
      if (cmdline.find(needle) != std::string::npos) ++count;
    }
    ::closedir(proc);
    return count;
  }

  TempDir tmp_;
  Broker broker_;
  std::string data_dir_;
  std::unique_ptr<NodeProcess> node_;
  Inbox inbox_;
  std::unique_ptr<MqttConnection> client_;
};

TEST_F(ProcessRuntimeTest, PythonHelloRoundTripWithStateAndEmit) {
  auto client = ConnectTestClient(broker_.url(), "process-test", inbox_, {"py-hello/#"});
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  client_ = std::move(*client);
  Deploy(SourceDir() + "/examples/py-hello");

  HttpResponse first = Invoke("py-hello", R"({"name":"Ada"})");
  ASSERT_EQ(first.status, 200) << first.body;
  json reply = json::parse(first.body);
  EXPECT_EQ(reply["message"], "Hello, Ada!");
  EXPECT_EQ(reply["n"], 1);
  HttpResponse second = Invoke("py-hello", R"({"name":"Grace"})");
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(json::parse(second.body)["n"], 2);

  ASSERT_TRUE(inbox_.WaitFor([](const auto& ms) { return ms.size() >= 2; }));
  const auto greeted = inbox_.On("py-hello/greeted");
  ASSERT_EQ(greeted.size(), 2u);
  EXPECT_EQ(json::parse(greeted[0].payload), (json{{"name", "Ada"}, {"n", 1}}));
  EXPECT_EQ(json::parse(greeted[1].payload), (json{{"name", "Grace"}, {"n", 2}}));
  EXPECT_EQ(greeted[0].qos, 1);

  // context.log reaches the function's log.
  EXPECT_TRUE(WaitUntil([&] {
    return Cli({"logs", "py-hello"}).out.find("greeted Grace") != std::string::npos;
  }));
}

TEST_F(ProcessRuntimeTest, HandlerThatDoesNotLoadIsRefusedAtDeploy) {
  tmp_.Write("broken/wisp.yaml",
             "name: broken\nruntime: process\nhandler: ./main.py:handle\n"
             "limits: { memory: 128Mi }\n");
  tmp_.Write("broken/main.py", "def handle(event, context)\n    return 1\n");
  CommandResult r = Cli({"deploy", tmp_.path() + "/broken"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("does not load"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("SyntaxError"), std::string::npos) << r.err;

  tmp_.Write("missing/wisp.yaml",
             "name: missing\nruntime: process\nhandler: ./main.py\n"
             "command: [no-such-interpreter, main.py]\n");
  tmp_.Write("missing/main.py", "");
  r = Cli({"deploy", tmp_.path() + "/missing"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("no-such-interpreter"), std::string::npos) << r.err;
}

TEST_F(ProcessRuntimeTest, CrashGivesAClearErrorAndTheNextCallWorks) {
  HttpResponse raised = Invoke("crash", R"({"how":"raise"})");
  EXPECT_EQ(raised.status, 500);
  EXPECT_EQ(Error(raised)["kind"], "function_error");
  EXPECT_NE(Error(raised)["message"].get<std::string>().find("crash.py:12: ValueError: bad "
                                                             "reading"),
            std::string::npos)
      << raised.body;

  HttpResponse exited = Invoke("crash", R"({"how":"exit"})");
  EXPECT_EQ(exited.status, 500);
  EXPECT_EQ(Error(exited)["kind"], "function_error");
  const std::string exit_message = Error(exited)["message"];
  EXPECT_NE(exit_message.find("exited with status 1"), std::string::npos) << exit_message;
  EXPECT_NE(exit_message.find("giving up"), std::string::npos) << exit_message;
  EXPECT_GT(Pid("crash"), 0);

  HttpResponse aborted = Invoke("crash", R"({"how":"abort"})");
  EXPECT_EQ(Error(aborted)["kind"], "function_error");
  EXPECT_NE(Error(aborted)["message"].get<std::string>().find("SIGABRT"), std::string::npos)
      << aborted.body;
  EXPECT_GT(Pid("crash"), 0);
}

TEST_F(ProcessRuntimeTest, InfiniteLoopTimesOutAndTheInstanceIsReplaced) {
  const int before = Pid("loop");
  HttpResponse spun = Invoke("loop", R"({"spin":true})");
  EXPECT_EQ(Error(spun)["kind"], "timeout") << spun.body;
  EXPECT_NE(Error(spun)["message"].get<std::string>().find("exceeded its 2s timeout"),
            std::string::npos)
      << spun.body;
  // A new process answers (the looping one was killed), and other functions never stopped.
  const int after = Pid("loop");
  EXPECT_GT(after, 0);
  EXPECT_NE(after, before);
  EXPECT_GT(Pid("crash"), 0);
  EXPECT_EQ(::kill(before, 0) == 0 ? 0 : errno, ESRCH) << "the looping process still exists";
}

TEST_F(ProcessRuntimeTest, MemoryHogGetsResourceExhausted) {
  HttpResponse hog = Invoke("hog", R"({"hog":true})");
  EXPECT_EQ(Error(hog)["kind"], "resource_exhausted") << hog.body;
  EXPECT_NE(Error(hog)["message"].get<std::string>().find("memory limit of 128Mi"),
            std::string::npos)
      << hog.body;
  HttpResponse fine = Invoke("hog");
  EXPECT_EQ(fine.status, 200) << fine.body;
  EXPECT_EQ(fine.body, "fine");
}

TEST_F(ProcessRuntimeTest, ForkBombIsContained) {
  if (::geteuid() != 0) GTEST_SKIP() << "RLIMIT_NPROC is per instance only when wispd is root";
  HttpResponse forks = Invoke("forks");
  ASSERT_EQ(forks.status, 200) << forks.body;
  json counted = json::parse(forks.body);
  EXPECT_LT(counted["forked"].get<int>(), 64) << forks.body;
  EXPECT_EQ(counted["errno"], EAGAIN) << forks.body;

  // Removing the function ends its instance and every process it forked.
  EXPECT_GT(ProcessesRunning("forks.py"), 1);
  ASSERT_EQ(Cli({"rm", "forks"}).exit_code, 0);
  EXPECT_GT(Pid("crash"), 0);  // the shard notices the removal when it next serves
  EXPECT_TRUE(WaitUntil([] { return ProcessesRunning("forks.py") == 0; }))
      << ProcessesRunning("forks.py") << " processes of forks.py left";

  HttpResponse bomb = Invoke("bomb");
  EXPECT_EQ(Error(bomb)["kind"], "timeout") << bomb.body;
  // The node keeps serving, and killing the bomb's instance took every process it made (a
  // fresh warm instance may have replaced it).
  EXPECT_GT(Pid("crash"), 0);
  EXPECT_TRUE(WaitUntil([] { return ProcessesRunning("bomb.py") <= 1; }))
      << ProcessesRunning("bomb.py") << " processes of bomb.py left";
}

TEST_F(ProcessRuntimeTest, WritesOutsideItsDirectoryFail) {
  const std::string in_data = data_dir_ + "/planted.txt";
  const std::string in_etc = "/etc/wisp-process-test";
  const std::string in_tmp = "/tmp/wisp-process-test-" + std::to_string(::getpid());
  HttpResponse r = Invoke("writer", json{{"paths", {in_data, in_etc, in_tmp}}}.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  json results = json::parse(r.body);
  for (const std::string& path : {in_data, in_etc, in_tmp}) {
    EXPECT_TRUE(results[path] == "EACCES" || results[path] == "EPERM") << path << ": " << r.body;
    EXPECT_NE(::access(path.c_str(), F_OK), 0) << path << " was written";
  }
  EXPECT_NE(results["own.txt"], "written") << "the function's code is read-only to it";
  for (const auto& [path, result] : results.items()) {
    if (path.ends_with("/scratch")) {
      EXPECT_EQ(result, "written") << "its tmp dir is writable";
    }
  }
}

TEST_F(ProcessRuntimeTest, DeniedSyscallsFail) {
  HttpResponse r = Invoke("syscalls");
  ASSERT_EQ(r.status, 200) << r.body;
  json out = json::parse(r.body);
  for (const char* name : {"ptrace", "unshare", "mount"}) {
    EXPECT_EQ(out[name]["rc"], -1) << name << ": " << r.body;
    EXPECT_EQ(out[name]["errno"], EPERM) << name << ": " << r.body;
  }
  EXPECT_GT(out["getpid"]["rc"].get<int>(), 0);
}

}  // namespace
}  // namespace wisp::testing
