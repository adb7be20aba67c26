#include "http/request.h"

#include <algorithm>

#include <fmt/format.h>

#include "common/cbor.h"

namespace wisp {

Route RouteTarget(std::string_view target) {
  Route route;
  if (auto q = target.find('?'); q != std::string_view::npos) {
    route.query = target.substr(q + 1);
    target = target.substr(0, q);
  }
  route.path = target;
  if (target == "/healthz") {
    route.kind = RouteKind::kHealth;
    return route;
  }
  if (target == "/metrics") {
    route.kind = RouteKind::kMetrics;
    return route;
  }
  if (target == "/v1/events") {
    route.kind = RouteKind::kEvents;
    return route;
  }
  constexpr std::string_view kModels = "/v1/models";
  if (target == kModels || target.starts_with("/v1/models/")) {
    route.kind = RouteKind::kModels;
    route.name = target.substr(std::min(target.size(), kModels.size() + 1));
    return route;
  }
  constexpr std::string_view kCalls = "/v1/calls/";
  if (target.starts_with(kCalls)) {
    route.name = target.substr(kCalls.size());
    if (!route.name.empty() && route.name.find('/') == std::string_view::npos) {
      route.kind = RouteKind::kCall;
    }
    return route;
  }
  constexpr std::string_view kFunctions = "/v1/functions";
  if (!target.starts_with(kFunctions)) return route;
  std::string_view rest = target.substr(kFunctions.size());
  if (rest.empty() || rest == "/") {
    route.kind = RouteKind::kFunctions;
    return route;
  }
  if (rest.front() != '/') return route;
  rest.remove_prefix(1);
  const auto slash = rest.find('/');
  route.name = rest.substr(0, slash);
  if (route.name.empty()) return route;
  if (slash == std::string_view::npos) {
    route.kind = RouteKind::kFunction;
    return route;
  }
  std::string_view action = rest.substr(slash + 1);
  if (action == "invoke")
    route.kind = RouteKind::kFunctionInvoke;
  else if (action == "invoke-async")
    route.kind = RouteKind::kFunctionInvokeAsync;
  else if (action == "logs")
    route.kind = RouteKind::kFunctionLogs;
  return route;
}

std::string_view BearerToken(std::string_view authorization) {
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.size() <= kBearer.size()) return {};
  for (std::size_t i = 0; i < kBearer.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) !=
        std::tolower(static_cast<unsigned char>(kBearer[i]))) {
      return {};
    }
  }
  std::string_view token = authorization.substr(kBearer.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  return token;
}

namespace {
// The media type of a Content-Type value, without parameters or trailing blanks.
std::string_view MediaType(std::string_view content_type) {
  content_type = content_type.substr(0, content_type.find(';'));
  while (!content_type.empty() && content_type.back() == ' ') content_type.remove_suffix(1);
  return content_type;
}
// Case-insensitive equality with a lower-case `b`.
bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != b[i]) return false;
  }
  return true;
}
}  // namespace

bool IsJsonContentType(std::string_view content_type) {
  content_type = MediaType(content_type);
  if (iequals(content_type, "application/json")) return true;
  return content_type.size() > 17 && iequals(content_type.substr(0, 12), "application/") &&
         iequals(content_type.substr(content_type.size() - 5), "+json");
}

bool LooksLikeJson(std::string_view payload) {
  for (char c : payload) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    return c == '{' || c == '[';
  }
  return false;
}

namespace {

// Depth of the deepest array/object, skipping brackets inside strings. Stops early past `limit`.
int JsonDepth(std::string_view text, int limit) {
  int depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"')
      in_string = true;
    else if (c == '[' || c == '{') {
      if (++depth > max_depth && (max_depth = depth) > limit) return max_depth;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return max_depth;
}

}  // namespace

Result<nlohmann::json> DecodeJsonBody(std::string_view body) {
  if (JsonDepth(body, kMaxJsonDepth) > kMaxJsonDepth) {
    return InvalidArgument(
        fmt::format("request body nests JSON deeper than {} levels", kMaxJsonDepth));
  }
  // The only exception wisp catches on the request path: nlohmann reports the position of a
  // syntax error only through its exception. A number too large for a double (1e9999) is an
  // out_of_range error rather than a parse_error, so catch the common base.
  try {
    return nlohmann::json::parse(body.begin(), body.end());
  } catch (const nlohmann::json::exception& e) {
    std::string_view what = e.what();
    if (auto pos = what.find("] "); pos != std::string_view::npos) what.remove_prefix(pos + 2);
    return InvalidArgument(fmt::format("request body is not valid JSON: {}", what));
  }
}

bool IsCborContentType(std::string_view content_type) {
  return iequals(MediaType(content_type), "application/cbor");
}

Result<std::optional<nlohmann::json>> DecodeInvokeBody(std::string_view content_type,
                                                       std::string_view body) {
  if (body.empty()) return std::optional<nlohmann::json>();
  if (IsJsonContentType(content_type)) {
    ASSIGN_OR_RETURN(nlohmann::json value, DecodeJsonBody(body));
    return std::optional<nlohmann::json>(std::move(value));
  }
  if (IsCborContentType(content_type)) {
    ASSIGN_OR_RETURN(nlohmann::json value, DecodeCbor(body, "request body"));
    return std::optional<nlohmann::json>(std::move(value));
  }
  return std::optional<nlohmann::json>();
}

std::string_view QueryParam(std::string_view query, std::string_view key) {
  while (!query.empty()) {
    const auto amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    const auto eq = pair.find('=');
    if (pair.substr(0, eq) == key) {
      return eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return {};
}

}  // namespace wisp
