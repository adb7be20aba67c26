// wisp process functions in C++: a header-only helper for the framed protocol of
// docs/process-protocol.md. A handler is a few lines:
//
//   #include "wisp_handler.h"
//   int main() {
//     return wisp::handler::Serve([](const wisp::handler::Event& event,
//                                    wisp::handler::Context& ctx) {
//       std::int64_t n = ctx.Incr("calls");
//       ctx.Emit("demo/calls", std::to_string(n));
//       return wisp::handler::Reply{200, "text/plain", {}, "call " + std::to_string(n)};
//     });
//   }
//
// Build it (g++ -std=c++20 -O2 main.cc -o handler), deploy the binary with
// `runtime: process` and `handler: ./handler`. Serve() answers calls until the node closes
// the channel, then returns 0. A handler that throws gives the caller a function_error with
// the exception's what(); a host call the node refuses throws HostError. Anything written to
// std::cout goes to the function's log: Serve() keeps the protocol on its own copy of fd 1.
//
// Threads: Serve() runs every call on the calling thread, one at a time; the Context is valid
// only during the call it was passed to.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wisp::handler {

namespace frame {
enum Type : std::uint8_t { kReady = 1, kInvoke, kReply, kError, kCall, kResult };
enum Tag : std::uint8_t {
  kMethod = 1,
  kPath,
  kQuery,
  kHeaderName,
  kHeaderValue,
  kContentType,
  kBody,
  kTrigger,
  kTopic,
  kId,
  kTimestamp,
  kStatus,
  kKind,
  kMessage,
  kOp,
  kKey,
  kValue,
  kTtlMs,
  kDelta,
  kLevel,
  kQos,
  kRetain
};
}  // namespace frame

struct Event {
  std::string method, path, query, topic, trigger, id, content_type, body;
  double timestamp = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // as sent
};

struct Reply {
  int status = 200;
  std::string content_type;  // empty: text/plain
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

// A host call the node refused; kind is a wisp error kind, e.g. "InvalidArgument".
struct HostError : std::runtime_error {
  HostError(std::string kind, const std::string& message)
      : std::runtime_error(kind + ": " + message), kind(std::move(kind)) {}
  std::string kind;
};

namespace detail {

using Fields = std::vector<std::pair<std::uint8_t, std::string>>;

class Channel {
 public:
  Channel(int in, int out) : in_(in), out_(out) {}

  // False at end of stream.
  bool Read(std::uint8_t* type, Fields* fields) {
    std::string head;
    if (!ReadExact(4, &head)) return false;
    std::uint32_t size = U32(head.data());
    if (size == 0 || size > (16u << 20)) return false;
    std::string body;
    if (!ReadExact(size, &body)) return false;
    *type = static_cast<std::uint8_t>(body[0]);
    fields->clear();
    for (std::size_t pos = 1; pos + 5 <= body.size();) {
      std::uint8_t tag = static_cast<std::uint8_t>(body[pos]);
      std::uint32_t len = U32(body.data() + pos + 1);
      pos += 5;
      if (len > body.size() - pos) return false;
      fields->emplace_back(tag, body.substr(pos, len));
      pos += len;
    }
    return true;
  }

  void Write(std::uint8_t type, const Fields& fields) {
    std::string body(1, static_cast<char>(type));
    for (const auto& [tag, value] : fields) {
      body.push_back(static_cast<char>(tag));
      PutU32(static_cast<std::uint32_t>(value.size()), &body);
      body += value;
    }
    std::string out;
    PutU32(static_cast<std::uint32_t>(body.size()), &out);
    out += body;
    for (std::size_t done = 0; done < out.size();) {
      ssize_t n = ::write(out_, out.data() + done, out.size() - done);
      if (n <= 0) throw std::runtime_error("wisp: the node closed the channel");
      done += static_cast<std::size_t>(n);
    }
  }

 private:
  static std::uint32_t U32(const char* p) {
    auto b = [p](int i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(p[i])); };
    return (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
  }
  static void PutU32(std::uint32_t v, std::string* out) {
    for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>(v >> shift));
  }
  bool ReadExact(std::size_t n, std::string* out) {
    out->resize(n);
    for (std::size_t done = 0; done < n;) {
      ssize_t got = ::read(in_, out->data() + done, n - done);
      if (got <= 0) return false;
      done += static_cast<std::size_t>(got);
    }
    return true;
  }
  int in_, out_;
};

}  // namespace detail

// ctx.state / log / emit for the call in progress.
class Context {
 public:
  explicit Context(detail::Channel& channel) : channel_(channel) {}

  std::optional<std::string> Get(std::string_view key) {
    return Call("state.get", {{frame::kKey, std::string(key)}});
  }
  void Put(std::string_view key, std::string_view value, std::int64_t ttl_ms = 0) {
    detail::Fields f = {{frame::kKey, std::string(key)}, {frame::kValue, std::string(value)}};
    if (ttl_ms > 0) f.emplace_back(frame::kTtlMs, std::to_string(ttl_ms));
    Call("state.put", std::move(f));
  }
  std::int64_t Incr(std::string_view key, std::int64_t delta = 1) {
    auto v = Call("state.incr",
                  {{frame::kKey, std::string(key)}, {frame::kDelta, std::to_string(delta)}});
    return v ? std::stoll(*v) : 0;
  }
  bool Delete(std::string_view key) {
    return Call("state.delete", {{frame::kKey, std::string(key)}}) == std::string("1");
  }
  void Log(std::string_view message, std::string_view level = "info") {
    Call("log", {{frame::kLevel, std::string(level)}, {frame::kMessage, std::string(message)}});
  }
  void Emit(std::string_view topic, std::string_view payload, int qos = 0, bool retain = false) {
    Call("emit", {{frame::kTopic, std::string(topic)},
                  {frame::kBody, std::string(payload)},
                  {frame::kQos, std::to_string(qos)},
                  {frame::kRetain, retain ? "1" : "0"}});
  }

 private:
  std::optional<std::string> Call(const char* op, detail::Fields fields) {
    fields.insert(fields.begin(), {frame::kOp, op});
    channel_.Write(frame::kCall, fields);
    std::uint8_t type = 0;
    detail::Fields reply;
    if (!channel_.Read(&type, &reply) || type != frame::kResult) {
      throw std::runtime_error("wisp: the node closed the channel");
    }
    std::optional<std::string> kind, message, value;
    for (auto& [tag, v] : reply) {
      if (tag == frame::kKind) kind = v;
      if (tag == frame::kMessage) message = v;
      if (tag == frame::kValue) value = v;
    }
    if (kind) throw HostError(*kind, message.value_or(""));
    return value;
  }
  detail::Channel& channel_;
};

using Handler = std::function<Reply(const Event&, Context&)>;

// Answers calls with `handler` until the node closes the channel; returns the exit code.
inline int Serve(const Handler& handler) {
  const int in = ::dup(0), out = ::dup(1);
  if (in < 0 || out < 0 || ::dup2(2, 1) < 0) return 1;  // stdout now goes to the log
  detail::Channel channel(in, out);
  channel.Write(frame::kReady, {});
  Context context(channel);
  std::uint8_t type = 0;
  detail::Fields fields;
  while (channel.Read(&type, &fields)) {
    if (type != frame::kInvoke) continue;
    Event event;
    std::string header_name;
    for (auto& [tag, v] : fields) {
      switch (tag) {
        case frame::kMethod:
          event.method = v;
          break;
        case frame::kPath:
          event.path = v;
          break;
        case frame::kQuery:
          event.query = v;
          break;
        case frame::kTopic:
          event.topic = v;
          break;
        case frame::kTrigger:
          event.trigger = v;
          break;
        case frame::kId:
          event.id = v;
          break;
        case frame::kContentType:
          event.content_type = v;
          break;
        case frame::kBody:
          event.body = v;
          break;
        case frame::kTimestamp:
          event.timestamp = std::strtod(v.c_str(), nullptr);
          break;
        case frame::kHeaderName:
          header_name = v;
          break;
        case frame::kHeaderValue:
          event.headers.emplace_back(header_name, v);
          break;
        default:
          break;
      }
    }
    try {
      Reply r = handler(event, context);
      detail::Fields reply = {{frame::kStatus, std::to_string(r.status)}};
      for (auto& [name, value] : r.headers) {
        reply.emplace_back(frame::kHeaderName, name);
        reply.emplace_back(frame::kHeaderValue, value);
      }
      reply.emplace_back(frame::kContentType,
                         r.content_type.empty() ? "text/plain" : r.content_type);
      reply.emplace_back(frame::kBody, std::move(r.body));
      channel.Write(frame::kReply, reply);
    } catch (const std::bad_alloc&) {
      channel.Write(frame::kError, {{frame::kKind, "memory"}, {frame::kMessage, "out of memory"}});
    } catch (const std::exception& e) {
      channel.Write(frame::kError, {{frame::kKind, "function"}, {frame::kMessage, e.what()}});
    }
  }
  return 0;
}

}  // namespace wisp::handler
