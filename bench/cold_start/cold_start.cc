// bench/cold_start: time to the first reply from zero instances, and warm call latency, for a
// Lua function, a Python process function and a model function run by wispd, against the bare
// cost of the same program outside wisp:
//   - Lua: luaL_newstate + open the libraries + load handler.lua + the first call of its handle;
//   - Python: fork + exec of `python3 wisp_handler.py handler.py handle` on a socketpair (as
//     wispd starts it), up to its reply to the first invoke frame (docs/process-protocol.md);
//   - model: read the .onnx file + cv::dnn::readNetFromONNX + setInput + the first forward
//     (OpenCV on one thread, as in wispd); warm = setInput + forward.
// Each wisp cold repetition redeploys the function with scale.min 0 (a redeploy drops the old
// instances, and min 0 starts none), then times one POST .../invoke on an open keep-alive
// connection; the node's cold_starts counter must have gone up by one, or the run fails.
// run.sh starts wispd (one shard) and passes its URL and token.
//
// Output: one line per measurement, a table (microseconds), and a last line `RESULT {...json...}`
// (figures in microseconds, ratios wisp/bare of the p50s).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <CLI/CLI.hpp>
#include <lua.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>

#include "wisp/bundle.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

[[noreturn]] void Die(const std::string& message) {
  fmt::print(stderr, "[cold_start] error: {}\n", message);
  std::exit(1);
}

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Die("cannot read " + path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

bool ReadExact(int fd, char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::read(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// --- figures -------------------------------------------------------------------------------------

struct Summary {
  size_t n = 0;
  double p50 = 0, p90 = 0, p99 = 0, mean = 0, max = 0;
};

// Nearest-rank percentiles.
Summary Summarize(std::vector<double> ms) {
  Summary s;
  if (ms.empty()) return s;
  std::sort(ms.begin(), ms.end());
  auto rank = [&](double q) {
    size_t index = static_cast<size_t>(std::ceil(q * static_cast<double>(ms.size())));
    return ms[std::clamp<size_t>(index, 1, ms.size()) - 1];
  };
  s.n = ms.size();
  s.p50 = rank(0.50);
  s.p90 = rank(0.90);
  s.p99 = rank(0.99);
  double sum = 0;
  for (double v : ms) sum += v;
  s.mean = sum / static_cast<double>(ms.size());
  s.max = ms.back();
  return s;
}

// Microseconds with one decimal: a warm LuaJIT call takes well under one.
nlohmann::json ToJson(const Summary& s) {
  auto us = [](double ms) { return std::round(ms * 10000) / 10; };
  return {{"n", s.n},
          {"p50_us", us(s.p50)},
          {"p90_us", us(s.p90)},
          {"p99_us", us(s.p99)},
          {"mean_us", us(s.mean)},
          {"max_us", us(s.max)}};
}

// --- a minimal HTTP/1.1 client (one keep-alive connection to wispd on loopback) ----------------

struct HttpReply {
  int status = 0;
  std::string body;
};

class HttpConnection {
 public:
  HttpConnection(std::string host, int port) : host_(std::move(host)), port_(port) {}
  ~HttpConnection() { Close(); }

  HttpReply Send(const std::string& method, const std::string& path, const std::string& body,
                 const std::map<std::string, std::string>& headers = {}) {
    if (fd_ < 0) Connect();
    std::string request = fmt::format("{} {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Length: {}\r\n",
                                      method, path, host_, port_, body.size());
    for (const auto& [name, value] : headers) request += name + ": " + value + "\r\n";
    request += "\r\n";
    request += body;
    if (!WriteAll(fd_, request)) Die("cannot send to wispd");
    return ReadReply();
  }

 private:
  void Connect() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port_));
    if (::inet_pton(AF_INET, host_.c_str(), &address.sin_addr) != 1) Die("bad host " + host_);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      Die(fmt::format("cannot connect to {}:{}", host_, port_));
    }
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    buffer_.clear();
  }

  bool Fill() {
    char chunk[16384];
    ssize_t n;
    do {
      n = ::read(fd_, chunk, sizeof chunk);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  HttpReply ReadReply() {
    size_t head_end;
    while ((head_end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill()) Die("wispd closed the connection before replying");
    }
    const std::string head = buffer_.substr(0, head_end);
    buffer_.erase(0, head_end + 4);
    HttpReply reply;
    if (std::sscanf(head.c_str(), "HTTP/1.%*d %d", &reply.status) != 1) Die("bad reply: " + head);
    size_t length = 0;
    bool close = false;
    std::istringstream lines(head);
    std::string line;
    while (std::getline(lines, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      std::string lower = line;
      std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
      if (lower.starts_with("content-length:")) length = std::stoul(lower.substr(15));
      if (lower.starts_with("connection:") && lower.find("close") != std::string::npos) {
        close = true;
      }
    }
    while (buffer_.size() < length) {
      if (!Fill()) Die("wispd closed the connection inside a reply");
    }
    reply.body = buffer_.substr(0, length);
    buffer_.erase(0, length);
    if (close) Close();
    return reply;
  }

  std::string host_;
  int port_;
  int fd_ = -1;
  std::string buffer_;
};

// --- wisp ----------------------------------------------------------------------------------------

struct WispTarget {
  HttpConnection* http;
  std::string token;
};

// The request every code function gets, and what examples/hello and handler.py answer.
constexpr const char* kCodeRequest = R"({"pump":"p1"})";
constexpr const char* kHelloReply = "Hello from wisp\n";

struct FunctionUnderTest {
  std::string name;                                 // cold-lua, cold-py, cold-model
  wisp::Bundle bundle;                              // the function directory a deploy sends
  std::string request;                              // the invoke body
  std::string expected;                             // what a reply must be, for the error message
  std::function<bool(const std::string&)> accepts;  // is this reply body right?
};

// A Lua or process function: one handler file and a manifest with scale.min 0.
FunctionUnderTest CodeFunction(const std::string& name, const std::string& runtime,
                               const std::string& handler, const std::string& code,
                               const std::string& extra_yaml) {
  FunctionUnderTest f;
  f.name = name;
  f.bundle.files["wisp.yaml"] = fmt::format(
      "version: 1\nfunctions:\n  {}:\n    runtime: {}\n    handler: ./{}:handle\n"
      "    scale: {{ min: 0, max: 1 }}\n    auth: public\n{}",
      name, runtime, handler, extra_yaml);
  f.bundle.files[handler] = code;
  f.request = kCodeRequest;
  f.expected = kHelloReply;
  f.accepts = [](const std::string& body) { return body == kHelloReply; };
  return f;
}

// A counter of the function's summary (GET /v1/functions/NAME): cold_starts, instances.
int64_t SummaryField(const WispTarget& wisp, const std::string& name, const std::string& field) {
  HttpReply reply = wisp.http->Send("GET", "/v1/functions/" + name, "",
                                    {{"Authorization", "Bearer " + wisp.token}});
  if (reply.status != 200) Die(fmt::format("GET /v1/functions/{}: {}", name, reply.status));
  auto info = nlohmann::json::parse(reply.body, nullptr, false);
  if (!info.is_object() || !info.contains(field)) Die("no " + field + " in " + reply.body);
  return info[field].get<int64_t>();
}

int64_t ColdStarts(const WispTarget& wisp, const std::string& name) {
  return SummaryField(wisp, name, "cold_starts");
}

void Deploy(const WispTarget& wisp, const FunctionUnderTest& f) {
  HttpReply reply = wisp.http->Send(
      "POST", "/v1/functions", wisp::EncodeBundle(f.bundle),
      {{"Authorization", "Bearer " + wisp.token}, {"Content-Type", "application/cbor"}});
  if (reply.status != 201) Die(fmt::format("deploy {}: {} {}", f.name, reply.status, reply.body));
}

double InvokeMs(const WispTarget& wisp, const FunctionUnderTest& f) {
  const auto start = Clock::now();
  HttpReply reply = wisp.http->Send("POST", "/v1/functions/" + f.name + "/invoke", f.request,
                                    {{"Content-Type", "application/json"}});
  const double ms = MsSince(start);
  if (reply.status != 200 || !f.accepts(reply.body)) {
    Die(fmt::format("invoke {}: {} '{}' (expected 200 {})", f.name, reply.status, reply.body,
                    f.expected));
  }
  return ms;
}

// Cold: redeploy, check that nothing is warm, time the first call, check it was a cold start.
std::vector<double> WispCold(const WispTarget& wisp, const FunctionUnderTest& f, int reps,
                             int settle_ms) {
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    Deploy(wisp, f);
    // Lets the deploy's load probe (a process for runtime: process) finish dying first.
    std::this_thread::sleep_for(std::chrono::milliseconds(settle_ms));
    const int64_t before = ColdStarts(wisp, f.name);
    ms.push_back(InvokeMs(wisp, f));
    const int64_t after = ColdStarts(wisp, f.name);
    if (after != before + 1) {
      Die(fmt::format("{}: the first call after a deploy made {} cold starts, not 1", f.name,
                      after - before));
    }
  }
  return ms;
}

std::vector<double> WispWarm(const WispTarget& wisp, const FunctionUnderTest& f, int reps) {
  InvokeMs(wisp, f);  // make sure an instance exists
  const int64_t before = ColdStarts(wisp, f.name);
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) ms.push_back(InvokeMs(wisp, f));
  if (ColdStarts(wisp, f.name) != before) Die(f.name + ": a warm run had a cold start");
  return ms;
}

// --- bare Python: fork + exec the helper, frames on a socketpair --------------------------------

// Frame and tag numbers of docs/process-protocol.md.
constexpr uint8_t kReady = 1, kInvoke = 2, kReply = 3;
constexpr uint8_t kTagMethod = 1, kTagPath = 2, kTagContentType = 6, kTagBody = 7, kTagTrigger = 8,
                  kTagId = 10, kTagTimestamp = 11;

void PutU32(std::string* out, uint32_t v) {
  const char bytes[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                         static_cast<char>(v >> 8), static_cast<char>(v)};
  out->append(bytes, 4);
}

std::string InvokeFrame() {
  std::string body(1, static_cast<char>(kInvoke));
  auto field = [&](uint8_t tag, std::string_view value) {
    body.push_back(static_cast<char>(tag));
    PutU32(&body, static_cast<uint32_t>(value.size()));
    body.append(value);
  };
  field(kTagTrigger, "http");
  field(kTagId, "1");
  field(kTagTimestamp, "1700000000.0");
  field(kTagMethod, "POST");
  field(kTagPath, "/v1/functions/cold-py/invoke");
  field(kTagContentType, "application/json");
  field(kTagBody, R"({"pump":"p1"})");
  std::string frame;
  PutU32(&frame, static_cast<uint32_t>(body.size()));
  return frame + body;
}

// Reads one frame; returns its type and body (type byte included), or nullopt at EOF.
std::optional<std::pair<uint8_t, std::string>> ReadFrame(int fd) {
  unsigned char size_bytes[4];
  if (!ReadExact(fd, reinterpret_cast<char*>(size_bytes), 4)) return std::nullopt;
  const uint32_t size = (uint32_t{size_bytes[0]} << 24) | (uint32_t{size_bytes[1]} << 16) |
                        (uint32_t{size_bytes[2]} << 8) | uint32_t{size_bytes[3]};
  if (size == 0 || size > (16u << 20)) return std::nullopt;
  std::string body(size, '\0');
  if (!ReadExact(fd, body.data(), size)) return std::nullopt;
  return std::make_pair(static_cast<uint8_t>(body[0]), std::move(body));
}

// The reply body of a reply frame (tag 7), empty if none.
std::string ReplyBody(const std::string& frame) {
  size_t pos = 1;
  while (pos + 5 <= frame.size()) {
    const uint8_t tag = static_cast<uint8_t>(frame[pos]);
    const uint32_t length = (uint32_t{static_cast<uint8_t>(frame[pos + 1])} << 24) |
                            (uint32_t{static_cast<uint8_t>(frame[pos + 2])} << 16) |
                            (uint32_t{static_cast<uint8_t>(frame[pos + 3])} << 8) |
                            uint32_t{static_cast<uint8_t>(frame[pos + 4])};
    pos += 5;
    if (pos + length > frame.size()) break;
    if (tag == kTagBody) return frame.substr(pos, length);
    pos += length;
  }
  return "";
}

struct BareProcess {
  pid_t pid = -1;
  int fd = -1;
};

// Starts `python3 HELPER handler.py handle` in `dir` with a socketpair as stdin and stdout.
BareProcess SpawnPython(const std::string& python, const std::string& helper,
                        const std::string& dir) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) Die("socketpair failed");
  const char* argv[] = {"python3", helper.c_str(), "handler.py", "handle", nullptr};
  const char* envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8",
                        "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", nullptr};
  pid_t pid = ::fork();
  if (pid < 0) Die("fork failed");
  if (pid == 0) {
    ::dup2(sv[1], 0);  // dup2 clears CLOEXEC on the copies
    ::dup2(sv[1], 1);
    if (::chdir(dir.c_str()) != 0) ::_exit(126);
    ::execve(python.c_str(), const_cast<char* const*>(argv), const_cast<char* const*>(envp));
    ::_exit(127);
  }
  ::close(sv[1]);
  return {pid, sv[0]};
}

void StopProcess(BareProcess& p) {
  ::close(p.fd);  // EOF: the helper's serve loop returns
  int status = 0;
  ::waitpid(p.pid, &status, 0);
}

std::string BareCall(const BareProcess& p, const std::string& invoke) {
  if (!WriteAll(p.fd, invoke)) Die("bare python: cannot send the invoke frame");
  auto reply = ReadFrame(p.fd);
  if (!reply || reply->first != kReply) Die("bare python: no reply frame");
  return ReplyBody(reply->second);
}

double BarePythonColdOnce(const std::string& python, const std::string& helper,
                          const std::string& dir, const std::string& invoke,
                          const std::string& expected) {
  const auto start = Clock::now();
  BareProcess p = SpawnPython(python, helper, dir);
  auto ready = ReadFrame(p.fd);
  if (!ready || ready->first != kReady) Die("bare python: no ready frame");
  const std::string body = BareCall(p, invoke);
  const double ms = MsSince(start);
  if (body != expected) Die("bare python answered '" + body + "'");
  StopProcess(p);
  return ms;
}

// --- bare Lua: a fresh LuaJIT state, load, first call -------------------------------------------

struct LuaHandler {
  lua_State* L = nullptr;
  int handle_ref = LUA_NOREF;
};

LuaHandler LoadLua(const std::string& path) {
  LuaHandler h;
  h.L = luaL_newstate();
  luaL_openlibs(h.L);
  if (luaL_loadfile(h.L, path.c_str()) != 0 || lua_pcall(h.L, 0, 1, 0) != 0) {
    Die(std::string("bare lua: ") + lua_tostring(h.L, -1));
  }
  lua_getfield(h.L, -1, "handle");
  h.handle_ref = luaL_ref(h.L, LUA_REGISTRYINDEX);
  lua_pop(h.L, 1);
  return h;
}

// One call as a host would make it: a fresh event table and ctx, the result as a string.
std::string CallLua(const LuaHandler& h) {
  lua_State* L = h.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, h.handle_ref);
  lua_createtable(L, 0, 4);
  lua_pushliteral(L, "POST");
  lua_setfield(L, -2, "method");
  lua_pushliteral(L, "/v1/functions/cold-lua/invoke");
  lua_setfield(L, -2, "path");
  lua_pushliteral(L, R"({"pump":"p1"})");
  lua_setfield(L, -2, "body");
  lua_pushliteral(L, "http");
  lua_setfield(L, -2, "trigger");
  lua_createtable(L, 0, 0);
  if (lua_pcall(L, 2, 1, 0) != 0) Die(std::string("bare lua: ") + lua_tostring(L, -1));
  size_t size = 0;
  const char* text = lua_tolstring(L, -1, &size);
  std::string out = text ? std::string(text, size) : "";
  lua_pop(L, 1);
  return out;
}

// --- bare model: OpenCV DNN on the model file -------------------------------------------------

// The first numpy case of a model's expectation file (tests/data/models/NAME.expected.json):
// its first input and first output.
struct ModelCase {
  std::string input_name, output_name;
  std::vector<int> shape;
  nlohmann::json input_json;  // the input's numbers, as the file has them
  std::vector<float> input;
  std::vector<float> expected;
  double tolerance = 0;
  int expected_class = 0;  // argmax of `expected`
};

ModelCase LoadModelCase(const std::string& path) {
  auto doc = nlohmann::json::parse(ReadFile(path), nullptr, false);
  if (!doc.is_object() || !doc.contains("cases") || doc["cases"].empty()) {
    Die(path + ": no cases");
  }
  const nlohmann::json& first = doc["cases"][0];
  if (first["inputs"].empty() || first["outputs"].empty()) Die(path + ": a case without tensors");
  ModelCase c;
  c.input_name = first["inputs"].begin().key();
  c.output_name = first["outputs"].begin().key();
  const nlohmann::json& input = first["inputs"].begin().value();
  c.shape = input["shape"].get<std::vector<int>>();
  c.input_json = input["data"];
  c.input = input["data"].get<std::vector<float>>();
  c.expected = first["outputs"].begin().value()["data"].get<std::vector<float>>();
  if (c.expected.empty()) Die(path + ": an empty output");
  c.tolerance = doc.value("tolerance", 1e-3);
  c.expected_class =
      static_cast<int>(std::max_element(c.expected.begin(), c.expected.end()) - c.expected.begin());
  return c;
}

cv::dnn::Net BareLoadModel(const std::string& bytes) {
  cv::dnn::Net net = cv::dnn::readNetFromONNX(bytes.data(), bytes.size());
  if (net.empty()) Die("bare model: OpenCV read an empty network");
  net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
  net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
  return net;
}

// setInput + forward. The returned Mat may share the network's output buffer.
cv::Mat BareForward(cv::dnn::Net& net, ModelCase& c) {
  cv::Mat blob(static_cast<int>(c.shape.size()), c.shape.data(), CV_32F, c.input.data());
  net.setInput(blob, c.input_name);
  return net.forward(c.output_name);
}

void CheckBareOutput(const cv::Mat& out, const ModelCase& c) {
  if (out.type() != CV_32F || out.total() != c.expected.size()) {
    Die(fmt::format("bare model: {} outputs, numpy has {}", out.total(), c.expected.size()));
  }
  const float* got = out.ptr<float>();
  for (size_t i = 0; i < c.expected.size(); ++i) {
    if (std::abs(got[i] - c.expected[i]) > c.tolerance) {
      Die(fmt::format("bare model: output {} is {}, numpy says {}", i, got[i], c.expected[i]));
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench/cold_start: cold and warm call latency, wisp against bare programs"};
  std::string url, token, root, python = "/usr/bin/python3";
  int cold_reps = 30, warm_reps = 2000, settle_ms = 100, idle_check_s = 5;
  std::string targets = "lua python model";
  std::string model_dir, model_expected, model_label = "model";
  app.add_option("--url", url, "wispd, e.g. http://127.0.0.1:8080 (empty: bare runs only)");
  app.add_option("--token", token, "wispd's control token");
  app.add_option("--root", root, "the wisp repository")->required();
  app.add_option("--cold", cold_reps, "cold repetitions");
  app.add_option("--warm", warm_reps, "warm repetitions");
  app.add_option("--settle-ms", settle_ms, "pause after each deploy, before timing");
  app.add_option("--idle-check-s", idle_check_s,
                 "after the warm run, wait this long and record the instances left");
  app.add_option("--python", python, "the Python interpreter");
  app.add_option("--targets", targets, "\"lua python model\" or some of them");
  app.add_option("--model-dir", model_dir,
                 "model target: a function directory deploying function cold-model "
                 "(runtime: model, handler ./model.yaml, file ./model.onnx, input {field: NAME}, "
                 "output {kind: argmax}, scale.min 0)");
  app.add_option("--model-expected", model_expected,
                 "model target: the model's numpy expectation file (its first case is the input)");
  app.add_option("--model-label", model_label, "model target: the model's name, for the output");
  CLI11_PARSE(app, argc, argv);
  ::signal(SIGPIPE, SIG_IGN);

  const std::string lua_path = root + "/examples/hello/handler.lua";
  const std::string py_path = root + "/bench/cold_start/handler.py";
  const std::string helper = root + "/sdk/python/wisp_handler.py";
  const std::string expected = kHelloReply;

  std::optional<HttpConnection> http;
  std::optional<WispTarget> wisp;
  if (!url.empty()) {
    const std::string prefix = "http://";
    if (!url.starts_with(prefix)) Die("--url must be http://HOST:PORT");
    const std::string host_port = url.substr(prefix.size());
    const size_t colon = host_port.rfind(':');
    if (colon == std::string::npos) Die("--url must be http://HOST:PORT");
    http.emplace(host_port.substr(0, colon), std::stoi(host_port.substr(colon + 1)));
    wisp = WispTarget{&*http, token};
  }

  nlohmann::json result;
  std::map<std::string, Summary> summaries;
  std::vector<std::string> table;
  auto report = [&](const std::string& key, const std::string& label,
                    const std::vector<double>& ms) {
    const Summary s = Summarize(ms);
    summaries[key] = s;
    result[key] = ToJson(s);
    table.push_back(fmt::format("{:<40} {:>6} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f}", label, s.n,
                                s.p50 * 1000, s.p90 * 1000, s.p99 * 1000, s.mean * 1000));
    fmt::print(stderr, "[cold_start] {}: n={} p50={:.1f} us p90={:.1f} us p99={:.1f} us\n", label,
               s.n, s.p50 * 1000, s.p90 * 1000, s.p99 * 1000);
  };
  auto ratio = [&](const std::string& a, const std::string& b) -> nlohmann::json {
    if (!summaries.contains(a) || !summaries.contains(b)) return nullptr;
    const double denominator = summaries[b].p50;
    if (denominator <= 0) return nullptr;
    return std::round(summaries[a].p50 / denominator * 100) / 100;
  };

  if (targets.find("lua") != std::string::npos) {
    fmt::print(stderr, "[cold_start] lua: bare cold x{}, warm x{}\n", cold_reps, warm_reps);
    std::vector<double> cold, warm;
    for (int i = 0; i < cold_reps; ++i) {
      const auto start = Clock::now();
      LuaHandler h = LoadLua(lua_path);
      const std::string body = CallLua(h);
      cold.push_back(MsSince(start));
      if (body != expected) Die("bare lua answered '" + body + "'");
      lua_close(h.L);
    }
    LuaHandler h = LoadLua(lua_path);
    for (int i = 0; i < warm_reps; ++i) {
      const auto start = Clock::now();
      const std::string body = CallLua(h);
      warm.push_back(MsSince(start));
      if (body != expected) Die("bare lua answered '" + body + "'");
    }
    lua_close(h.L);
    report("bare_lua_cold", "bare lua cold (newstate+load+call)", cold);
    report("bare_lua_warm", "bare lua warm (call)", warm);
    if (wisp) {
      FunctionUnderTest f = CodeFunction("cold-lua", "lua", "handler.lua", ReadFile(lua_path), "");
      fmt::print(stderr, "[cold_start] lua: wisp cold x{}, warm x{}\n", cold_reps, warm_reps);
      report("wisp_lua_cold", "wisp lua cold (deploy, 1st invoke)",
             WispCold(*wisp, f, cold_reps, settle_ms));
      report("wisp_lua_warm", "wisp lua warm (invoke)", WispWarm(*wisp, f, warm_reps));
      // Does a min-0 function ever go back to zero on its own? (Recorded, not asserted.)
      std::this_thread::sleep_for(std::chrono::seconds(idle_check_s));
      result["wisp_lua_instances_after_idle"] = SummaryField(*wisp, f.name, "instances");
    }
  }

  if (targets.find("python") != std::string::npos) {
    // The bare program runs from a copy of the function's directory, as wispd runs its copy.
    const fs::path dir = fs::temp_directory_path() / fmt::format("wisp-cold-{}", ::getpid());
    fs::create_directories(dir);
    fs::copy_file(py_path, dir / "handler.py", fs::copy_options::overwrite_existing);
    const std::string invoke = InvokeFrame();
    fmt::print(stderr, "[cold_start] python: bare cold x{}, warm x{}\n", cold_reps, warm_reps);
    std::vector<double> cold, warm;
    for (int i = 0; i < cold_reps; ++i) {
      cold.push_back(BarePythonColdOnce(python, helper, dir.string(), invoke, expected));
    }
    BareProcess p = SpawnPython(python, helper, dir.string());
    auto ready = ReadFrame(p.fd);
    if (!ready || ready->first != kReady) Die("bare python: no ready frame");
    for (int i = 0; i < warm_reps; ++i) {
      const auto start = Clock::now();
      const std::string body = BareCall(p, invoke);
      warm.push_back(MsSince(start));
      if (body != expected) Die("bare python answered '" + body + "'");
    }
    StopProcess(p);
    fs::remove_all(dir);
    report("bare_python_cold", "bare python cold (fork+exec+reply)", cold);
    report("bare_python_warm", "bare python warm (frame round trip)", warm);
    if (wisp) {
      FunctionUnderTest f = CodeFunction("cold-py", "process", "handler.py", ReadFile(py_path),
                                         "    limits: { memory: 128Mi, timeout: 5s }\n");
      fmt::print(stderr, "[cold_start] python: wisp cold x{}, warm x{}\n", cold_reps, warm_reps);
      report("wisp_python_cold", "wisp python cold (deploy, 1st invoke)",
             WispCold(*wisp, f, cold_reps, settle_ms));
      report("wisp_python_warm", "wisp python warm (invoke)", WispWarm(*wisp, f, warm_reps));
      // Does a min-0 function ever go back to zero on its own? (Recorded, not asserted.)
      std::this_thread::sleep_for(std::chrono::seconds(idle_check_s));
      result["wisp_python_instances_after_idle"] = SummaryField(*wisp, f.name, "instances");
    }
  }

  if (targets.find("model") != std::string::npos) {
    if (model_dir.empty() || model_expected.empty()) {
      Die("the model target needs --model-dir and --model-expected (run.sh passes them)");
    }
    const std::string model_path = model_dir + "/model.onnx";
    ModelCase c = LoadModelCase(model_expected);
    cv::setNumThreads(1);  // as wispd's OpenCV backend
    fmt::print(stderr,
               "[cold_start] model: {} ({} bytes, input {} [{}]), bare cold x{}, warm x{}\n",
               model_label, fs::file_size(model_path), c.input_name, fmt::join(c.shape, "x"),
               cold_reps, warm_reps);
    std::vector<double> cold, warm;
    for (int i = 0; i < cold_reps; ++i) {
      const auto start = Clock::now();
      cv::dnn::Net net = BareLoadModel(ReadFile(model_path));
      const cv::Mat out = BareForward(net, c);
      cold.push_back(MsSince(start));
      CheckBareOutput(out, c);
    }
    cv::dnn::Net net = BareLoadModel(ReadFile(model_path));
    for (int i = 0; i < warm_reps; ++i) {
      const auto start = Clock::now();
      const cv::Mat out = BareForward(net, c);
      warm.push_back(MsSince(start));
      if (i == 0) CheckBareOutput(out, c);
    }
    report("bare_model_cold", "bare model cold (read+readNet+forward)", cold);
    report("bare_model_warm", "bare model warm (setInput+forward)", warm);
    result["model"] = model_label;
    if (wisp) {
      FunctionUnderTest f;
      f.name = "cold-model";
      auto bundle = wisp::ReadBundleFromDirectory(model_dir);
      if (!bundle.ok()) Die(model_dir + ": " + bundle.status().ToString());
      f.bundle = std::move(*bundle);
      f.request = nlohmann::json{{c.input_name, c.input_json}}.dump();
      f.expected = fmt::format("an argmax reply with class {} (numpy)", c.expected_class);
      f.accepts = [want = c.expected_class](const std::string& body) {
        auto reply = nlohmann::json::parse(body, nullptr, false);
        return reply.is_object() && reply.contains("class") && reply["class"] == want;
      };
      fmt::print(stderr, "[cold_start] model: wisp cold x{}, warm x{}\n", cold_reps, warm_reps);
      report("wisp_model_cold", "wisp model cold (deploy, 1st invoke)",
             WispCold(*wisp, f, cold_reps, settle_ms));
      report("wisp_model_warm", "wisp model warm (invoke)", WispWarm(*wisp, f, warm_reps));
      std::this_thread::sleep_for(std::chrono::seconds(idle_check_s));
      result["wisp_model_instances_after_idle"] = SummaryField(*wisp, f.name, "instances");
      // What the request path alone costs with this body: the node decodes a JSON body for any
      // runtime before the call; the hello Lua handler then ignores it.
      FunctionUnderTest control =
          CodeFunction("cold-lua-body", "lua", "handler.lua", ReadFile(lua_path), "");
      control.request = f.request;
      Deploy(*wisp, control);
      report("wisp_lua_warm_model_body", "wisp lua warm, the model's request body",
             WispWarm(*wisp, control, warm_reps));
    }
  }

  result["ratio_lua_cold_p50"] = ratio("wisp_lua_cold", "bare_lua_cold");
  result["ratio_lua_warm_p50"] = ratio("wisp_lua_warm", "bare_lua_warm");
  result["ratio_python_cold_p50"] = ratio("wisp_python_cold", "bare_python_cold");
  result["ratio_python_warm_p50"] = ratio("wisp_python_warm", "bare_python_warm");
  result["ratio_model_cold_p50"] = ratio("wisp_model_cold", "bare_model_cold");
  result["ratio_model_warm_p50"] = ratio("wisp_model_warm", "bare_model_warm");
  result["cold_reps"] = cold_reps;
  result["idle_check_s"] = idle_check_s;
  result["warm_reps"] = warm_reps;

  fmt::print("{:<40} {:>6} {:>10} {:>10} {:>10} {:>10}\n", "MEASUREMENT (microseconds)", "N", "P50",
             "P90", "P99", "MEAN");
  for (const std::string& line : table) fmt::print("{}\n", line);
  fmt::print(
      "\nwisp/bare at p50: lua cold {}, lua warm {}, python cold {}, python warm {}, model ({}) "
      "cold {}, model warm {}\n",
      result["ratio_lua_cold_p50"].dump(), result["ratio_lua_warm_p50"].dump(),
      result["ratio_python_cold_p50"].dump(), result["ratio_python_warm_p50"].dump(), model_label,
      result["ratio_model_cold_p50"].dump(), result["ratio_model_warm_p50"].dump());
  fmt::print("RESULT {}\n", result.dump());
  return 0;
}
