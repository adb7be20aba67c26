// The `wisp` client verbs (deploy, ls, describe, invoke, logs, rm, token, health) and the
// formatting of their output. wisp_main.cc only parses flags and calls these.
//
// Every verb writes its result to `out` and returns OK, or returns a Status whose message is
// the whole, actionable sentence for the user; the caller prints it to stderr and exits 1.
// Formatting is split out as pure functions of the node's JSON replies so it can be tested
// without a node.
//
// Thread safety: none needed; a verb runs once per process.
#pragma once

#include <chrono>
#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

#include "cli/client_config.h"
#include "cli/http_client.h"
#include "wisp/status.h"

namespace wisp {

// The version the CLI was built as, e.g. "0.1.0".
std::string_view ClientVersion();

// Talks to one node on behalf of a verb: adds the token, and turns transport failures into
// sentences that say what to do ("Is it running? Start one with `wisp up`.").
class NodeClient {
 public:
  NodeClient(Endpoint endpoint, std::chrono::milliseconds timeout);

  Result<HttpResponse> Send(std::string_view method, std::string_view target,
                            std::string_view body = {}, HttpHeaders headers = {}) const;

  const Endpoint& endpoint() const { return endpoint_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

 private:
  Endpoint endpoint_;
  std::chrono::milliseconds timeout_;
};

// The sentence for a transport failure of HttpRequest against `url`.
Status DescribeTransportError(const Status& status, const Url& url,
                              std::chrono::milliseconds timeout);

// The error a node reply with status >= 400 stands for. `function` names the function the call
// was about ("" when none) so that a 404 can say which one is missing; `sent_token` picks the
// wording of a 401.
Status ReplyError(const HttpResponse& reply, std::string_view function, bool sent_token);

// "/v1/functions/" + the name percent-encoded, so no name can reach another route.
std::string FunctionPath(std::string_view name);

// Columns padded to the widest cell plus three spaces; the last column is not padded.
// rows[0] is the header.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows);

// Bodies of the node's replies (docs/http-api.md) rendered for people. They fail only when the
// body is not the JSON the node sends.
Result<std::string> FormatFunctionList(std::string_view body, bool names_only);
Result<std::string> FormatFunctionDetails(std::string_view body);
Result<std::string> FormatLogs(std::string_view body);
Result<std::string> FormatDeployed(std::string_view body);
Result<std::string> FormatHealth(std::string_view body);

enum class OutputFormat { kText, kJson };

// Percent-encodes all but RFC 3986 unreserved characters and those in `also_keep`.
std::string PercentEncode(std::string_view s, std::string_view also_keep = "");

struct InvokeOptions {
  std::string name;
  std::string data;          // --data: literal text, "@FILE", or "@-" for stdin
  bool has_data = false;     // --data given (it may be empty on purpose)
  std::string content_type;  // --content-type; "" picks the default
  std::string method = "POST";
  std::vector<std::string> headers;  // -H "Name: value"
  bool read_stdin = false;           // no --data and stdin is not a terminal
  bool async = false;                // --async: invoke-async, print the call id
  std::string callback_url;          // --callback-url (with --async)
  std::string reply_topic;           // --reply-topic (with --async)
};

// Each returns the process exit code's reason: OK, or what to print on stderr.
Status RunDeploy(const NodeClient& client, const std::vector<std::string>& dirs, std::ostream& out);
Status RunList(const NodeClient& client, OutputFormat format, bool names_only, std::ostream& out);
Status RunDescribe(const NodeClient& client, std::string_view name, OutputFormat format,
                   std::ostream& out);
// Writes the reply body to `out` unless it is the node's error shape; any status >= 400 is an
// error, also one the function chose, so scripts can rely on the exit code. With `async`, the
// call is queued (POST .../invoke-async) and its id is written instead.
Status RunInvoke(const NodeClient& client, const InvokeOptions& options, std::ostream& out,
                 bool out_is_terminal);
Status RunLogs(const NodeClient& client, std::string_view name, int tail, OutputFormat format,
               std::ostream& out);
Status RunRemove(const NodeClient& client, std::string_view name, std::ostream& out);
// An async call's result: its reply body (exit 0 below HTTP 400), "queued", or the error; with
// `wait`, polls until the call has run.
Status RunCall(const NodeClient& client, const std::string& id, bool wait, OutputFormat format,
               std::ostream& out);
Status RunHealth(const NodeClient& client, OutputFormat format, std::ostream& out);
Status RunToken(const std::string& data_dir, std::ostream& out);

}  // namespace wisp
