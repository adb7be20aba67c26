// `wisp events tail|query`: the node's event archive (GET /v1/events, docs/http-api.md).
//
// Like the other verbs, each Run* writes its result to `out` and returns OK or a Status whose
// message is the whole sentence for the user. Formatting is a pure function of the node's
// reply, testable without a node.
//
// Thread safety: none needed; a verb runs once per process.
#pragma once

#include <chrono>
#include <functional>
#include <iosfwd>
#include <string>
#include <string_view>

#include "cli/client_config.h"
#include "cli/commands.h"
#include "wisp/status.h"

namespace CLI {
class App;
}

namespace wisp {

struct EventsOptions {
  std::string function;      // --fn; empty: every function
  std::string since, until;  // as the user wrote them; the node parses them (RFC 3339 or "5m")
  std::string kind;          // event, action, dead_letter, or a comma-separated list
  std::size_t limit = 100;   // query: how many records at most
  std::size_t lines = 20;    // tail: how many of the newest records
  bool follow = false;       // tail -f
  OutputFormat format = OutputFormat::kText;
};

// The request target for one page: "/v1/events?fn=...&limit=N" with values percent-encoded.
// `tail` > 0 asks for the newest records; `after` continues from a cursor.
std::string EventsTarget(const EventsOptions& options, std::size_t limit, std::size_t tail,
                         std::string_view after);

// One line per record of a /v1/events reply: time, kind, function, trigger, topic or path,
// status, duration (events) or qos (actions, dead letters), preview quoted. *next gets the
// reply's cursor. Fails only when the body is not the node's events JSON.
Result<std::string> FormatEvents(std::string_view body, std::string* next);

// Prints the newest options.lines records, then with options.follow polls every
// `poll_interval` until `keep_going` returns false (nullptr: for ever, until the process is
// interrupted).
Status RunEventsTail(const NodeClient& client, const EventsOptions& options, std::ostream& out,
                     std::chrono::milliseconds poll_interval = std::chrono::seconds(1),
                     const std::function<bool()>& keep_going = nullptr);
// Prints up to options.limit records from options.since, oldest first, fetching pages of at
// most 1000.
Status RunEventsQuery(const NodeClient& client, const EventsOptions& options, std::ostream& out);

// Adds `events` with its `tail` and `query` subcommands to the CLI. They run from CLI11's
// callback once parsing is done: on failure the error is printed and CLI::RuntimeError(1)
// thrown, which CLI11_PARSE turns into the exit code. `inputs` and `timeout_s` are the global
// flags' storage, read when the callback runs.
void AddEventsCommand(CLI::App& app, ClientInputs& inputs, int& timeout_s);

}  // namespace wisp
