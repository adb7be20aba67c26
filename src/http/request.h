// Decoding of what an HTTP client sent, kept apart from sockets so it can be unit-tested and
// fuzzed: routing a request target, reading a bearer token, decoding a JSON body.
//
// Thread safety: pure functions.
#pragma once

#include <optional>
#include <string_view>

#include <nlohmann/json.hpp>

#include "wisp/status.h"

namespace wisp {

enum class RouteKind {
  kNotFound,
  kHealth,               // /healthz
  kMetrics,              // /metrics
  kFunctions,            // /v1/functions
  kFunction,             // /v1/functions/{name}
  kFunctionLogs,         // /v1/functions/{name}/logs
  kFunctionInvoke,       // /v1/functions/{name}/invoke
  kFunctionInvokeAsync,  // /v1/functions/{name}/invoke-async
  kCall,                 // /v1/calls/{id}: an async invocation; `name` holds the id
  kEvents,               // /v1/events (the event archive)
  kModels,               // /v1/models[/{ref}[/run]]: `name` holds what follows /v1/models/
};

struct Route {
  RouteKind kind = RouteKind::kNotFound;
  std::string_view name;   // the function name (kFunction*) or call id (kCall); a view into target
  std::string_view path;   // target without the query
  std::string_view query;  // after '?', undecoded
};

// Maps a request target ("/v1/functions/hello/invoke?x=1") to a route. Never fails: an unknown
// path is kNotFound. The function name is not validated here (a lookup will miss).
Route RouteTarget(std::string_view target);

// The token of an "Authorization: Bearer <token>" value; empty if the value has another form.
std::string_view BearerToken(std::string_view authorization);

// True when `content_type` names JSON (application/json, application/*+json; parameters ignored).
bool IsJsonContentType(std::string_view content_type);

// True when the first non-blank byte opens a JSON object or array: how a payload without a
// content type (MQTT 3 messages, most sensors) is recognised as JSON.
bool LooksLikeJson(std::string_view payload);

// Nesting deeper than this is refused before parsing, so that no later recursive walk (into a
// Lua table, say) can run out of stack on hostile input.
inline constexpr int kMaxJsonDepth = 64;

// Parses a JSON body. InvalidArgument with the position and reason when it does not parse or
// nests too deep.
Result<nlohmann::json> DecodeJsonBody(std::string_view body);

// True when `content_type` names CBOR (application/cbor; parameters ignored).
bool IsCborContentType(std::string_view content_type);

// The decoded body of an invoke: JSON or CBOR by content type (CBOR through common/cbor.h, with
// the same depth bound), nullopt for an empty body or any other type (the function gets the
// bytes). InvalidArgument, saying what is wrong, for a body that does not decode.
Result<std::optional<nlohmann::json>> DecodeInvokeBody(std::string_view content_type,
                                                       std::string_view body);

// Value of `key` in an undecoded query string ("tail=10&x=y"); empty if absent. No
// percent-decoding: the keys and values used by the API are plain.
std::string_view QueryParam(std::string_view query, std::string_view key);

}  // namespace wisp
