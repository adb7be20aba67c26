#include "cli/commands.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "wisp/bundle.h"

#ifndef WISP_VERSION
#define WISP_VERSION "0.0.0"
#endif

namespace wisp {
namespace {

using nlohmann::json;

constexpr std::string_view kTokenHint =
    ": pass --token or set WISP_TOKEN (`wisp token` prints the local node's token)";

std::string Seconds(std::chrono::milliseconds timeout) {
  auto ms = timeout.count();
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string Trim(std::string_view s) {
  const char* space = " \t\r\n\f\v";
  auto first = s.find_first_not_of(space);
  if (first == std::string_view::npos) return "";
  auto last = s.find_last_not_of(space);
  return std::string(s.substr(first, last - first + 1));
}

StatusCode CodeFromKind(std::string_view kind) {
  for (int i = static_cast<int>(StatusCode::kInvalidArgument);
       i <= static_cast<int>(StatusCode::kInternal); ++i) {
    if (StatusCodeName(static_cast<StatusCode>(i)) == kind) return static_cast<StatusCode>(i);
  }
  return StatusCode::kInternal;
}

StatusCode CodeFromHttpStatus(int status) {
  switch (status) {
    case 400:
      return StatusCode::kInvalidArgument;
    case 401:
      return StatusCode::kUnauthenticated;
    case 403:
      return StatusCode::kPermissionDenied;
    case 404:
      return StatusCode::kNotFound;
    case 409:
      return StatusCode::kAlreadyExists;
    case 413:
    case 429:
      return StatusCode::kResourceExhausted;
    case 503:
      return StatusCode::kUnavailable;
    case 504:
      return StatusCode::kDeadlineExceeded;
    default:
      return StatusCode::kInternal;
  }
}

struct NodeError {
  std::string kind;
  std::string message;
};

// The node's error shape {"error":{"kind":...,"message":...}}, if `body` is one.
std::optional<NodeError> ParseNodeError(std::string_view body) {
  auto parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object() || !parsed.contains("error")) return std::nullopt;
  const json& error = parsed["error"];
  if (!error.is_object() || !error.contains("kind") || !error["kind"].is_string()) {
    return std::nullopt;
  }
  NodeError out;
  out.kind = error["kind"].get<std::string>();
  if (error.contains("message") && error["message"].is_string()) {
    out.message = error["message"].get<std::string>();
  }
  return out;
}

// A body the user sees in an error, cut short so a stray HTML page does not fill the terminal.
std::string Snippet(std::string_view body) {
  std::string text = Trim(body);
  if (text.size() > 200) text = text.substr(0, 200) + "...";
  return text;
}

Result<json> ParseReply(std::string_view body) {
  auto parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return Internal("the server sent a reply that is not wisp's JSON (is it a wisp node?): " +
                    Snippet(body));
  }
  return parsed;
}

Status CheckReply(const NodeClient& client, const HttpResponse& reply, std::string_view function) {
  if (reply.status >= 200 && reply.status < 300) return Status::Ok();
  if (reply.status >= 400) return ReplyError(reply, function, !client.endpoint().token.empty());
  return Internal("unexpected HTTP " + std::to_string(reply.status) + " from " +
                  client.endpoint().url.ToString() + " (is it a wisp node?)");
}

std::string Scalar(const json& value) {
  if (value.is_string()) {
    const auto& s = value.get_ref<const std::string&>();
    return s.empty() ? "\"\"" : s;
  }
  if (value.is_null()) return "-";
  return value.dump();
}

std::string Cell(const json& object, const char* key) {
  if (!object.is_object() || !object.contains(key)) return "-";
  return Scalar(object[key]);
}

// Nested values of `describe`, YAML-like: "key: value" aligned per level, "- item" in lists.
void RenderFields(const json& object, const std::vector<std::string>& keys, int indent,
                  std::string* out);

void RenderEntry(const std::string& key, const json& value, std::size_t width, int indent,
                 std::string* out) {
  std::string pad(indent, ' ');
  std::string label = key + ":";
  label.resize(std::max(label.size(), width + 2), ' ');
  if (value.is_object() && !value.empty()) {
    *out += pad + key + ":\n";
    std::vector<std::string> keys;
    for (const auto& item : value.items()) keys.push_back(item.key());
    RenderFields(value, keys, indent + 2, out);
  } else if (value.is_array() && !value.empty()) {
    *out += pad + key + ":\n";
    for (const auto& item : value) {
      std::string line;
      if (item.is_object()) {
        for (const auto& field : item.items()) {
          if (!line.empty()) line += ", ";
          line += field.key() + ": " + Scalar(field.value());
        }
      } else {
        line = Scalar(item);
      }
      *out += pad + "  - " + line + "\n";
    }
  } else if (value.is_object() || value.is_array()) {
    *out += pad + label + "(none)\n";
  } else {
    *out += pad + label + Scalar(value) + "\n";
  }
}

void RenderFields(const json& object, const std::vector<std::string>& keys, int indent,
                  std::string* out) {
  std::size_t width = 0;
  for (const auto& key : keys) width = std::max(width, key.size());
  for (const auto& key : keys) RenderEntry(key, object.at(key), width, indent, out);
}

Result<std::string> ReadAll(std::istream& in, const std::string& what) {
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return IoError("cannot read " + what);
  return text.str();
}

void WriteBody(std::string_view body, std::ostream& out, bool out_is_terminal) {
  out << body;
  // A shell prompt glued to the end of a JSON reply is hard to read; pipes get the exact bytes.
  if (out_is_terminal && !body.empty() && body.back() != '\n') out << '\n';
  out.flush();
}

}  // namespace

std::string PercentEncode(std::string_view s, std::string_view also_keep) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' ||
        also_keep.find(static_cast<char>(c)) != std::string_view::npos) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string_view ClientVersion() { return WISP_VERSION; }

NodeClient::NodeClient(Endpoint endpoint, std::chrono::milliseconds timeout)
    : endpoint_(std::move(endpoint)), timeout_(timeout) {}

Result<HttpResponse> NodeClient::Send(std::string_view method, std::string_view target,
                                      std::string_view body, HttpHeaders headers) const {
  if (!endpoint_.token.empty()) headers.emplace_back("Authorization", "Bearer " + endpoint_.token);
  auto reply = HttpRequest(endpoint_.url, method, target, body, headers, timeout_);
  if (!reply.ok()) return DescribeTransportError(reply.status(), endpoint_.url, timeout_);
  return reply;
}

Status DescribeTransportError(const Status& status, const Url& url,
                              std::chrono::milliseconds timeout) {
  switch (status.code()) {
    case StatusCode::kUnavailable:
      return Unavailable("cannot reach the wisp node at " + status.message() +
                         ". Is it running? Start one with `wisp up`.");
    case StatusCode::kDeadlineExceeded:
      return DeadlineExceeded("the wisp node at " + url.ToString() + " did not answer within " +
                              Seconds(timeout) + "; pass --timeout SECONDS to wait longer");
    case StatusCode::kIoError:
      return IoError("lost the connection to the wisp node at " + status.message());
    default:
      return status;
  }
}

Status ReplyError(const HttpResponse& reply, std::string_view function, bool sent_token) {
  auto node_error = ParseNodeError(reply.body);
  if (reply.status == 401) {
    return Unauthenticated(
        std::string(sent_token ? "the node refused the token" : "the node wants a token") +
        std::string(kTokenHint));
  }
  // A handler may answer 404 itself; errors the node made carry X-Wisp-Error, so only a 404
  // marked not_found means the function is missing.
  if (reply.status == 404 && !function.empty() &&
      reply.Header("X-Wisp-Error").value_or("") == "not_found") {
    return NotFound("no function named '" + std::string(function) + "' (see `wisp ls`)");
  }
  if (node_error) {
    std::string message = node_error->kind;
    if (!node_error->message.empty()) message += ": " + node_error->message;
    return Status(CodeFromKind(node_error->kind), std::move(message));
  }
  std::string message = "HTTP " + std::to_string(reply.status);
  if (std::string body = Snippet(reply.body); !body.empty()) message += ": " + body;
  return Status(CodeFromHttpStatus(reply.status), std::move(message));
}

std::string FunctionPath(std::string_view name) { return "/v1/functions/" + PercentEncode(name); }

std::string FormatTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 3, ' ');
    }
    out += line + "\n";
  }
  return out;
}

Result<std::string> FormatFunctionList(std::string_view body, bool names_only) {
  ASSIGN_OR_RETURN(json reply, ParseReply(body));
  if (!reply.contains("functions") || !reply["functions"].is_array()) {
    return Internal("the node's function list has no \"functions\" array: " + Snippet(body));
  }
  const json& functions = reply["functions"];
  std::string out;
  if (names_only) {
    for (const auto& f : functions) out += Cell(f, "name") + "\n";
    return out;
  }
  if (functions.empty()) {
    return std::string("no functions deployed; deploy one with `wisp deploy DIR`\n");
  }
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "RUNTIME", "VERSION", "INVOCATIONS", "ERRORS", "INSTANCES", "AUTH"}};
  for (const auto& f : functions) {
    rows.push_back({Cell(f, "name"), Cell(f, "runtime"), Cell(f, "version"), Cell(f, "invocations"),
                    Cell(f, "errors"), Cell(f, "instances"), Cell(f, "auth")});
  }
  return FormatTable(rows);
}

Result<std::string> FormatFunctionDetails(std::string_view body) {
  ASSIGN_OR_RETURN(json reply, ParseReply(body));
  // Identity first, then counters, then whatever else the node adds, alphabetically.
  static const std::vector<std::string> kOrder = {"name",
                                                  "runtime",
                                                  "version",
                                                  "handler",
                                                  "auth",
                                                  "deployed_at",
                                                  "invocations",
                                                  "errors",
                                                  "cold_starts",
                                                  "instances",
                                                  "avg_duration_ms",
                                                  "limits",
                                                  "environment",
                                                  "labels",
                                                  "files"};
  std::vector<std::string> keys;
  for (const auto& key : kOrder) {
    if (reply.contains(key)) keys.push_back(key);
  }
  std::vector<std::string> rest;
  for (const auto& item : reply.items()) {
    if (std::find(kOrder.begin(), kOrder.end(), item.key()) == kOrder.end()) {
      rest.push_back(item.key());
    }
  }
  std::sort(rest.begin(), rest.end());
  keys.insert(keys.end(), rest.begin(), rest.end());
  std::string out;
  RenderFields(reply, keys, 0, &out);
  return out;
}

Result<std::string> FormatLogs(std::string_view body) {
  ASSIGN_OR_RETURN(json reply, ParseReply(body));
  if (!reply.contains("logs") || !reply["logs"].is_array()) {
    return Internal("the node's log reply has no \"logs\" array: " + Snippet(body));
  }
  std::string out;
  for (const auto& entry : reply["logs"]) {
    std::string level = Cell(entry, "level");
    level.resize(std::max<std::size_t>(level.size(), 5), ' ');
    std::string message =
        entry.is_object() && entry.contains("message") && entry["message"].is_string()
            ? entry["message"].get<std::string>()
            : Cell(entry, "message");
    while (!message.empty() && message.back() == '\n') message.pop_back();
    // Continuation lines are indented so each entry still starts a line with its time.
    std::string indented;
    for (char c : message) {
      indented += c;
      if (c == '\n') indented += "    ";
    }
    out += Cell(entry, "time") + " " + level + " " + indented + "\n";
  }
  return out;
}

Result<std::string> FormatDeployed(std::string_view body) {
  ASSIGN_OR_RETURN(json reply, ParseReply(body));
  if (!reply.contains("deployed") || !reply["deployed"].is_array()) {
    return Internal("the node's deploy reply has no \"deployed\" array: " + Snippet(body));
  }
  std::string out;
  for (const auto& f : reply["deployed"]) {
    out += "deployed " + Cell(f, "name") + " (runtime " + Cell(f, "runtime") + ", version " +
           Cell(f, "version") + ")\n";
  }
  return out;
}

Result<std::string> FormatHealth(std::string_view body) {
  ASSIGN_OR_RETURN(json reply, ParseReply(body));
  return Cell(reply, "status") + ": wisp " + Cell(reply, "version") + ", " + Cell(reply, "shards") +
         " shards, " + Cell(reply, "functions") + " functions\n";
}

Status RunDeploy(const NodeClient& client, const std::vector<std::string>& dirs,
                 std::ostream& out) {
  namespace fs = std::filesystem;
  for (const auto& dir : dirs) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
      return InvalidArgument("cannot deploy '" + dir + "': " +
                             (fs::exists(dir, ec) ? "not a directory" : "no such directory") +
                             "; pass the folder that holds wisp.yaml");
    }
    if (!fs::is_regular_file(fs::path(dir) / "wisp.yaml", ec)) {
      return InvalidArgument("cannot deploy '" + dir +
                             "': it has no wisp.yaml (a function directory needs a manifest; "
                             "see docs/manifest.md)");
    }
    auto bundle = ReadBundleFromDirectory(dir);
    if (!bundle.ok()) return bundle.status().WithContext("cannot deploy '" + dir + "'");
    auto reply = client.Send("POST", "/v1/functions", EncodeBundle(*bundle),
                             {{"Content-Type", "application/cbor"}});
    if (!reply.ok()) return reply.status();
    if (Status s = CheckReply(client, *reply, ""); !s.ok()) {
      return s.WithContext("cannot deploy '" + dir + "'");
    }
    ASSIGN_OR_RETURN(std::string text, FormatDeployed(reply->body));
    out << text << std::flush;
  }
  return Status::Ok();
}

Status RunList(const NodeClient& client, OutputFormat format, bool names_only, std::ostream& out) {
  ASSIGN_OR_RETURN(HttpResponse reply, client.Send("GET", "/v1/functions"));
  RETURN_IF_ERROR(CheckReply(client, reply, ""));
  if (format == OutputFormat::kJson) {
    WriteBody(reply.body, out, /*out_is_terminal=*/true);
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(std::string text, FormatFunctionList(reply.body, names_only));
  out << text << std::flush;
  return Status::Ok();
}

Status RunDescribe(const NodeClient& client, std::string_view name, OutputFormat format,
                   std::ostream& out) {
  ASSIGN_OR_RETURN(HttpResponse reply, client.Send("GET", FunctionPath(name)));
  RETURN_IF_ERROR(CheckReply(client, reply, name));
  if (format == OutputFormat::kJson) {
    WriteBody(reply.body, out, /*out_is_terminal=*/true);
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(std::string text, FormatFunctionDetails(reply.body));
  out << text << std::flush;
  return Status::Ok();
}

Status RunInvoke(const NodeClient& client, const InvokeOptions& options, std::ostream& out,
                 bool out_is_terminal) {
  std::string body;
  bool has_body = false;
  if (options.has_data) {
    has_body = true;
    if (options.data == "@-") {
      ASSIGN_OR_RETURN(body, ReadAll(std::cin, "stdin"));
    } else if (!options.data.empty() && options.data.front() == '@') {
      const std::string path = options.data.substr(1);
      std::ifstream file(path, std::ios::binary);
      if (!file) {
        return InvalidArgument("--data " + options.data + ": cannot open '" + path +
                               "' (use @FILE for a file, @- for stdin, or the text itself)");
      }
      ASSIGN_OR_RETURN(body, ReadAll(file, path));
    } else {
      body = options.data;
    }
  } else if (options.read_stdin) {
    ASSIGN_OR_RETURN(body, ReadAll(std::cin, "stdin"));
    // Scripts and cron run with stdin on /dev/null: nothing there means "no body", not an
    // empty JSON document.
    has_body = !body.empty();
  }

  HttpHeaders headers;
  bool has_content_type = false;
  for (const auto& header : options.headers) {
    auto colon = header.find(':');
    std::string name = Trim(std::string_view(header).substr(0, colon));
    if (colon == std::string::npos || name.empty()) {
      return InvalidArgument("-H '" + header + "': expected 'Name: value'");
    }
    std::string lower = name;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (lower == "content-type") has_content_type = true;
    headers.emplace_back(name, Trim(std::string_view(header).substr(colon + 1)));
  }
  bool defaulted_json = false;
  if (!options.content_type.empty()) {
    headers.emplace_back("Content-Type", options.content_type);
  } else if (has_body && !has_content_type) {
    headers.emplace_back("Content-Type", "application/json");
    defaulted_json = true;
  }

  if (options.async) {
    if (!options.callback_url.empty()) headers.emplace_back("X-Callback-Url", options.callback_url);
    if (!options.reply_topic.empty()) headers.emplace_back("X-Reply-Topic", options.reply_topic);
  } else if (!options.callback_url.empty() || !options.reply_topic.empty()) {
    return InvalidArgument("--callback-url and --reply-topic go with --async");
  }
  ASSIGN_OR_RETURN(
      HttpResponse reply,
      client.Send(options.async ? "POST" : options.method,
                  FunctionPath(options.name) + (options.async ? "/invoke-async" : "/invoke"), body,
                  std::move(headers)));
  if (options.async && reply.status == 202) {
    const json accepted = json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
    if (!accepted.is_object() || !accepted.contains("id") || !accepted["id"].is_string()) {
      return IoError("the node accepted the call but sent no id: " + reply.body.substr(0, 200));
    }
    out << accepted["id"].get<std::string>() << "\n";
    return Status::Ok();
  }
  if (reply.status < 400) {
    WriteBody(reply.body, out, out_is_terminal);
    return Status::Ok();
  }
  Status error = ReplyError(reply, options.name, !client.endpoint().token.empty());
  if (!ParseNodeError(reply.body)) {
    // The function chose this status and body: the body is its answer, so it goes to stdout.
    WriteBody(reply.body, out, out_is_terminal);
    if (error.code() != StatusCode::kNotFound && error.code() != StatusCode::kUnauthenticated) {
      return Status(error.code(), "function '" + options.name + "' answered HTTP " +
                                      std::to_string(reply.status));
    }
  }
  if (defaulted_json && reply.status == 400 && !json::accept(body)) {
    return InvalidArgument(error.message() +
                           " (the body was sent as application/json; pass --content-type "
                           "text/plain to send other text)");
  }
  return error;
}

Status RunLogs(const NodeClient& client, std::string_view name, int tail, OutputFormat format,
               std::ostream& out) {
  ASSIGN_OR_RETURN(HttpResponse reply,
                   client.Send("GET", FunctionPath(name) + "/logs?tail=" + std::to_string(tail)));
  RETURN_IF_ERROR(CheckReply(client, reply, name));
  if (format == OutputFormat::kJson) {
    WriteBody(reply.body, out, /*out_is_terminal=*/true);
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(std::string text, FormatLogs(reply.body));
  out << text << std::flush;
  return Status::Ok();
}

Status RunRemove(const NodeClient& client, std::string_view name, std::ostream& out) {
  ASSIGN_OR_RETURN(HttpResponse reply, client.Send("DELETE", FunctionPath(name)));
  RETURN_IF_ERROR(CheckReply(client, reply, name));
  out << "removed " << name << "\n" << std::flush;
  return Status::Ok();
}

Status RunCall(const NodeClient& client, const std::string& id, bool wait, OutputFormat format,
               std::ostream& out) {
  if (id.empty() || id.find_first_of("/?#") != std::string::npos) {
    return InvalidArgument("'" + id + "' is not a call id (`wisp invoke --async` prints one)");
  }
  HttpResponse reply;
  json call;
  for (;;) {
    ASSIGN_OR_RETURN(reply, client.Send("GET", "/v1/calls/" + id));
    RETURN_IF_ERROR(CheckReply(client, reply, ""));
    call = json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
    if (!call.is_object()) return IoError("not a call record: " + reply.body.substr(0, 200));
    if (!wait || call.value("state", "") != "queued") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (format == OutputFormat::kJson) {
    WriteBody(reply.body, out, /*out_is_terminal=*/true);
    return Status::Ok();
  }
  const std::string state = call.value("state", "");
  if (state == "queued") {
    out << "queued (accepted " << call.value("accepted_at", "") << ")\n";
    return Status::Ok();
  }
  if (state == "failed") {
    const json& error = call.contains("error") ? call["error"] : json::object();
    return Status(StatusCode::kFunctionError,
                  "the call failed: " + error.value("kind", std::string("?")) + ": " +
                      error.value("message", std::string()));
  }
  const json& result = call.contains("result") ? call["result"] : json::object();
  if (result.contains("body") && result["body"].is_string()) {
    WriteBody(result["body"].get<std::string>(), out, /*out_is_terminal=*/true);
  } else if (result.contains("body_base64")) {
    out << "(binary body, base64) " << result["body_base64"].get<std::string>() << "\n";
  }
  const int status = result.value("status", 0);
  if (status >= 400) return FunctionError("the function answered HTTP " + std::to_string(status));
  return Status::Ok();
}

Status RunHealth(const NodeClient& client, OutputFormat format, std::ostream& out) {
  ASSIGN_OR_RETURN(HttpResponse reply, client.Send("GET", "/healthz"));
  if (reply.status == 503) {
    return Unavailable("the wisp node at " + client.endpoint().url.ToString() +
                       " is draining (shutting down)");
  }
  RETURN_IF_ERROR(CheckReply(client, reply, ""));
  if (format == OutputFormat::kJson) {
    WriteBody(reply.body, out, /*out_is_terminal=*/true);
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(std::string text, FormatHealth(reply.body));
  out << text << std::flush;
  return Status::Ok();
}

Status RunToken(const std::string& data_dir, std::ostream& out) {
  ASSIGN_OR_RETURN(std::string token, ReadLocalToken(data_dir));
  out << token << "\n" << std::flush;
  return Status::Ok();
}

}  // namespace wisp
