// GET /v1/events: the event archive over HTTP (docs/http-api.md). Runs on the shard that got
// the request; it reads segment files, so a large page costs that shard some milliseconds.
#include <charconv>
#include <string>

#include <fmt/format.h>
#include <boost/beast/http/status.hpp>
#include <nlohmann/json.hpp>

#include "node/shard.h"

namespace wisp {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxPage = 1000;

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX decoding; '+' stays a plus, so "+01:00" offsets may be sent as they are.
std::string PercentDecode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && HexValue(s[i + 1]) >= 0 && HexValue(s[i + 2]) >= 0) {
      out += static_cast<char>(HexValue(s[i + 1]) * 16 + HexValue(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

Status ParseCount(std::string_view name, const std::string& text, std::size_t* out) {
  std::size_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || ptr != text.data() + text.size() || n == 0 || n > kMaxPage) {
    return InvalidArgument(
        fmt::format("{}='{}' is not a number from 1 to {}", name, text.substr(0, 32), kMaxPage));
  }
  *out = n;
  return Status::Ok();
}

Result<ArchiveQuery> ParseEventsQuery(std::string_view query_string,
                                      std::chrono::system_clock::time_point now) {
  auto param = [&](std::string_view key) { return PercentDecode(QueryParam(query_string, key)); };
  ArchiveQuery query;
  query.function = param("fn");
  if (std::string since = param("since"); !since.empty()) {
    ASSIGN_OR_RETURN(query.since, ParseArchiveTime(since, now));
  }
  if (std::string until = param("until"); !until.empty()) {
    ASSIGN_OR_RETURN(query.until, ParseArchiveTime(until, now));
  }
  std::string_view kinds = QueryParam(query_string, "kind");
  while (!kinds.empty()) {
    const std::string_view one = kinds.substr(0, kinds.find(','));
    kinds.remove_prefix(std::min(kinds.size(), one.size() + 1));
    ASSIGN_OR_RETURN(ArchiveKind kind, ParseArchiveKind(PercentDecode(one)));
    query.kinds.push_back(kind);
  }
  if (std::string limit = param("limit"); !limit.empty()) {
    RETURN_IF_ERROR(ParseCount("limit", limit, &query.limit));
  }
  if (std::string tail = param("tail"); !tail.empty()) {
    RETURN_IF_ERROR(ParseCount("tail", tail, &query.tail));
  }
  query.after = param("after");
  if (query.tail > 0 && !query.after.empty()) {
    return InvalidArgument(
        "tail and after do not go together: tail starts a poll, after continues it");
  }
  return query;
}

json EntryJson(const ArchiveEntry& e) {
  const bool known_trigger = e.trigger < 3;
  const bool known_status = e.status <= static_cast<std::uint8_t>(StatusCode::kInternal);
  json out = {
      {"time", FormatArchiveTime(e.time_us)},
      {"kind", ArchiveKindName(e.kind)},
      {"function", e.function},
      {"trigger", known_trigger ? TriggerKindName(static_cast<TriggerKind>(e.trigger)) : "unknown"},
      {"event_id", fmt::format("{:016x}", e.event_id)},
      {"status", known_status ? StatusCodeName(static_cast<StatusCode>(e.status)) : "unknown"},
  };
  if (!e.target.empty()) {
    const bool http_event =
        e.kind == ArchiveKind::kEvent && e.trigger == static_cast<std::uint8_t>(TriggerKind::kHttp);
    out[http_event ? "path" : "topic"] = e.target;
  }
  if (!e.error.empty()) out["error"] = e.error;
  if (e.kind == ArchiveKind::kEvent) out["duration_ms"] = e.duration_us / 1000.0;
  if (e.kind != ArchiveKind::kEvent) out["qos"] = e.qos;
  out["payload_bytes"] = e.payload_size;
  out["preview"] = e.preview;
  return out;
}

}  // namespace

void Shard::HandleEvents(const Route& route, HttpResponse& response) {
  if (archive_ == nullptr) {
    return SetErrorResponse(
        Unavailable("the event archive is off on this node (archive.enabled: false)"), response);
  }
  auto query = ParseEventsQuery(route.query, std::chrono::system_clock::now());
  if (!query.ok()) return SetErrorResponse(query.status(), response);
  // This shard's own records are visible at once; other shards' within their flush interval.
  (void)archive_->Flush();
  auto page = services_.archive->Query(*query);
  if (!page.ok()) return SetErrorResponse(page.status(), response);
  json events = json::array();
  for (const ArchiveEntry& entry : page->records) events.push_back(EntryJson(entry));
  json body = {{"events", std::move(events)}, {"next", page->next}};
  if (page->bad_records > 0) body["bad_records"] = page->bad_records;
  response.result(boost::beast::http::status::ok);
  response.set(boost::beast::http::field::content_type, "application/json");
  // Previews are raw payload bytes: invalid UTF-8 becomes U+FFFD rather than failing the page.
  response.body() = body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace wisp
