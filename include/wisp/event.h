// Event and Reply: what a trigger hands to a function, and what the function gives back.
//
// An Event *borrows* its bytes: the trigger that built it (the HTTP session, later the MQTT
// client) owns the storage and keeps it alive until Instance::Invoke returns. Nothing may keep
// an Event, or a view into it, after the call; copy what must outlive it. This keeps the
// request path free of copies: the HTTP body is handed to the function where it lies.
//
// Thread safety: an Event is used by one shard thread at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace wisp {

enum class TriggerKind { kHttp, kMqtt, kTimer };
std::string_view TriggerKindName(TriggerKind kind);  // "http", "mqtt", "timer"

struct HeaderView {
  std::string_view name;  // as received; names are case-insensitive (runtimes lower-case them)
  std::string_view value;
};

struct Event {
  TriggerKind trigger = TriggerKind::kHttp;
  std::uint64_t id = 0;  // unique within a node run; shown to handlers as hex text
  std::chrono::system_clock::time_point timestamp;
  std::string_view method;  // HTTP only
  std::string_view path;    // HTTP: request target without the query
  std::string_view query;   // HTTP: the part after '?', undecoded
  std::string_view topic;   // MQTT only
  std::string_view content_type;
  std::span<const HeaderView> headers;
  std::string_view body;
  // The body decoded once by the trigger when its content type is JSON (or CBOR, later);
  // null when the body is not structured. Never null for a JSON content type: a body that does
  // not parse is refused before the function runs.
  const nlohmann::json* json = nullptr;
};

// What a function answered. Owned by the caller of Invoke.
struct Reply {
  int status = 200;
  std::string content_type;  // empty: the trigger picks (text/plain for HTTP)
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

}  // namespace wisp
