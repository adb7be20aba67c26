#include "cli/events_command.h"

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <thread>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "common/quote.h"

namespace wisp {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxPage = 1000;  // the node's page limit

std::string Field(const json& record, const char* key) {
  if (!record.contains(key)) return "-";
  const json& v = record[key];
  if (v.is_string()) return v.get<std::string>().empty() ? "-" : v.get<std::string>();
  return v.dump();
}

// The node's reply parsed; Internal with a snippet when it is not the events JSON.
Result<json> ParseEventsReply(std::string_view body) {
  auto reply = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!reply.is_object() || !reply.contains("events") || !reply["events"].is_array()) {
    return Internal(
        "the node's events reply has no \"events\" array (is it a wisp node of this "
        "version?): " +
        std::string(body.substr(0, 200)));
  }
  return reply;
}

std::string FormatRecord(const json& r) {
  const std::string kind = Field(r, "kind");
  std::string target = r.contains("path") ? Field(r, "path") : Field(r, "topic");
  std::string measure = "-";
  if (r.contains("duration_ms") && r["duration_ms"].is_number()) {
    measure = fmt::format("{:.2f}ms", r["duration_ms"].get<double>());
  } else if (r.contains("qos")) {
    measure = "qos=" + Field(r, "qos");
  }
  std::string status = Field(r, "status");
  if (r.contains("error") && r["error"].is_string()) {
    status += " (" + QuoteUntrusted(r["error"].get<std::string>(), 80) + ")";
  }
  const std::string preview =
      r.contains("preview") && r["preview"].is_string() ? r["preview"].get<std::string>() : "";
  // Names and topics come from publishers: quote control bytes so no record can forge a line.
  auto clean = [](const std::string& s) {
    const std::string quoted = QuoteUntrusted(s, 200);
    return quoted.substr(1, quoted.size() - 2);
  };
  return fmt::format("{}  {:<11} {}  {:<5} {}  {}  {}  {}\n", Field(r, "time"), kind,
                     clean(Field(r, "function")), Field(r, "trigger"), clean(target), status,
                     measure, QuoteUntrusted(preview, 120));
}

Status CheckEventsReply(const NodeClient& client, const HttpResponse& reply) {
  if (reply.status >= 200 && reply.status < 300) return Status::Ok();
  return ReplyError(reply, "", !client.endpoint().token.empty());
}

Result<json> FetchPage(const NodeClient& client, const std::string& target) {
  ASSIGN_OR_RETURN(HttpResponse reply, client.Send("GET", target));
  RETURN_IF_ERROR(CheckEventsReply(client, reply));
  return ParseEventsReply(reply.body);
}

void PrintRecords(const json& records, OutputFormat format, std::ostream& out) {
  for (const json& r : records) {
    if (format == OutputFormat::kJson) {
      out << r.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
    } else {
      out << FormatRecord(r);
    }
  }
  out << std::flush;
}

}  // namespace

std::string EventsTarget(const EventsOptions& options, std::size_t limit, std::size_t tail,
                         std::string_view after) {
  std::string target = "/v1/events?";
  auto add = [&](std::string_view key, std::string_view value) {
    if (value.empty()) return;
    if (target.back() != '?') target += '&';
    target += std::string(key) + "=" + PercentEncode(value, ":,");
  };
  add("fn", options.function);
  add("since", options.since);
  add("until", options.until);
  add("kind", options.kind);
  if (tail > 0) {
    add("tail", std::to_string(tail));
  } else {
    add("limit", std::to_string(limit));
  }
  add("after", after);
  if (target.back() == '?') target.pop_back();
  return target;
}

Result<std::string> FormatEvents(std::string_view body, std::string* next) {
  ASSIGN_OR_RETURN(json reply, ParseEventsReply(body));
  if (next)
    *next =
        reply.contains("next") && reply["next"].is_string() ? reply["next"].get<std::string>() : "";
  std::string out;
  for (const json& r : reply["events"]) out += FormatRecord(r);
  return out;
}

Status RunEventsTail(const NodeClient& client, const EventsOptions& options, std::ostream& out,
                     std::chrono::milliseconds poll_interval,
                     const std::function<bool()>& keep_going) {
  ASSIGN_OR_RETURN(
      json page,
      FetchPage(client,
                EventsTarget(options, 0, std::clamp<std::size_t>(options.lines, 1, kMaxPage), "")));
  PrintRecords(page["events"], options.format, out);
  std::string cursor = page.value("next", "");
  while (options.follow && (!keep_going || keep_going())) {
    std::this_thread::sleep_for(poll_interval);
    ASSIGN_OR_RETURN(page, FetchPage(client, EventsTarget(options, kMaxPage, 0, cursor)));
    PrintRecords(page["events"], options.format, out);
    cursor = page.value("next", cursor);
  }
  return Status::Ok();
}

Status RunEventsQuery(const NodeClient& client, const EventsOptions& options, std::ostream& out) {
  json all = json::array();
  std::string cursor;
  while (all.size() < options.limit) {
    const std::size_t want = std::min(options.limit - all.size(), kMaxPage);
    ASSIGN_OR_RETURN(json page, FetchPage(client, EventsTarget(options, want, 0, cursor)));
    const json& records = page["events"];
    for (const json& r : records) all.push_back(r);
    cursor = page.value("next", "");
    if (records.size() < want || cursor.empty()) break;
  }
  if (options.format == OutputFormat::kJson) {
    out << json{{"events", all}, {"next", cursor}}.dump(-1, ' ', false,
                                                        json::error_handler_t::replace)
        << "\n"
        << std::flush;
    return Status::Ok();
  }
  PrintRecords(all, options.format, out);
  return Status::Ok();
}

void AddEventsCommand(CLI::App& app, ClientInputs& inputs, int& timeout_s) {
  auto* events =
      app.add_subcommand("events", "Read the node's event archive (runs, actions, dead letters)");
  events->require_subcommand(1);
  // Owned by the callbacks, which outlive this function.
  auto options = std::make_shared<EventsOptions>();
  auto output = std::make_shared<std::string>("text");

  auto run = [&inputs, &timeout_s, options, output](bool tail) {
    ClientInputs resolved = inputs;
    if (const char* url = std::getenv("WISP_URL")) resolved.env_url = url;
    if (const char* token = std::getenv("WISP_TOKEN")) resolved.env_token = token;
    options->format = *output == "json" ? OutputFormat::kJson : OutputFormat::kText;
    Status status;
    auto endpoint = ResolveEndpoint(resolved);
    if (!endpoint.ok()) {
      status = endpoint.status();
    } else {
      NodeClient client(*endpoint, std::chrono::seconds(timeout_s));
      status = tail ? RunEventsTail(client, *options, std::cout)
                    : RunEventsQuery(client, *options, std::cout);
    }
    if (!status.ok()) {
      std::cerr << "error: " << status.message() << "\n";
      throw CLI::RuntimeError(1);
    }
  };

  auto* tail =
      events->add_subcommand("tail", "Print the newest records; -f keeps printing new ones");
  tail->add_option("--fn", options->function, "Only this function's records");
  tail->add_option("-n,--lines", options->lines, "How many of the newest records")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  tail->add_option("--kind", options->kind, "event, action or dead_letter (comma-separated)");
  tail->add_flag("-f,--follow", options->follow, "Keep polling for new records (Ctrl-C stops)");
  tail->add_option("-o,--output", *output, "text (one line per record) or json (one per line)")
      ->check(CLI::IsMember({"text", "table", "json"}));
  tail->callback([run] { run(true); });

  auto* query = events->add_subcommand("query", "Print records from a time on, oldest first");
  query->add_option("--fn", options->function, "Function name")->required();
  query
      ->add_option("--since", options->since,
                   "From: RFC 3339 (2026-11-29T17:00:00Z) or a duration ago (15m, 1h, 7d)")
      ->required();
  query->add_option("--until", options->until, "Up to (same forms; default now)");
  query->add_option("--kind", options->kind, "event, action or dead_letter (comma-separated)");
  query->add_option("--limit", options->limit, "How many records at most")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  query->add_option("-o,--output", *output, "table (one line per record) or json")
      ->check(CLI::IsMember({"text", "table", "json"}));
  query->callback([run] { run(false); });
}

}  // namespace wisp
