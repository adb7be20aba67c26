// HTTP actions: the POSTs a node sends on behalf of functions, from a handler's ctx.http_post
// and from async invocations' callback URLs.
//
// Deny by default: a URL must match an entry of `actions.http_allow` in the node config (host,
// port and a path prefix at a '/' boundary), so a function cannot reach arbitrary hosts.
// https:// URLs are verified against `actions.tls` (its CA file, else the system's CAs) and
// present its client certificate if one is set; an http:// entry never allows https:// and the
// reverse.
//
// Delivery is asynchronous and at most `http_attempts` tries: Enqueue checks the URL and queues
// the POST; worker threads send it with the blocking client (src/http/client.h), retrying
// transport errors, 429 and 5xx with exponential backoff. A queue that is full refuses new
// POSTs (ResourceExhausted): nothing waits in memory without bound. POSTs still queued at
// shutdown are dropped and counted. Outcomes are counted in wisp_http_actions_total{result}.
//
// Threads: every method is thread-safe. Done callbacks run on a worker thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "node/node.h"
#include "wisp/status.h"

namespace wisp {

class HttpTlsContext;
class MetricsRegistry;

// One allowlist entry, parsed: http[s]://HOST[:PORT][/PATH].
struct HttpAllowEntry {
  std::string host;         // lower case
  std::uint16_t port = 80;  // 443 for https without a port
  std::string path;         // "" or "/a/b" without a trailing '/'
  bool https = false;
};
Result<HttpAllowEntry> ParseHttpAllowEntry(std::string_view entry);

// A URL a POST goes to, split for the client: http[s]://HOST[:PORT]/PATH[?QUERY].
struct HttpTarget {
  std::string host;         // lower case
  std::uint16_t port = 80;  // 443 for https without a port
  std::string target;       // "/PATH[?QUERY]", at least "/"
  bool https = false;
};
// InvalidArgument for anything but an absolute http:// or https:// URL with a host.
Result<HttpTarget> ParseHttpTarget(std::string_view url);
bool IsAllowed(const HttpTarget& target, const std::vector<HttpAllowEntry>& allow);

struct HttpPost {
  std::string url;
  std::string body;
  std::string content_type;                                  // empty: application/octet-stream
  std::vector<std::pair<std::string, std::string>> headers;  // extra request headers
  std::string origin;  // who asked (a function name), for logs
  // Called once with the outcome: OK and the HTTP status of a 2xx-4xx reply, or the last error
  // after the final attempt. May be empty.
  std::function<void(const Status&, int http_status)> done;
};

class HttpActions {
 public:
  // Starts the workers. `metrics` (may be null) gets a collector; it must outlive this object.
  HttpActions(const ActionsConfig& config, MetricsRegistry* metrics);
  ~HttpActions();  // Stop()
  HttpActions(const HttpActions&) = delete;
  HttpActions& operator=(const HttpActions&) = delete;

  // InvalidArgument for a malformed URL; PermissionDenied when no allowlist entry matches (the
  // message says which config key to change).
  Status Check(std::string_view url) const;

  // Check()s, then queues. ResourceExhausted when the queue is full; Unavailable after Stop.
  Status Enqueue(HttpPost post);

  // Stops the workers after the POSTs being sent; the queued rest are dropped (counted).
  void Stop();

  std::size_t queued() const;

 private:
  struct Queued {
    HttpPost post;
    HttpTarget target;
  };
  void Work();
  void Send(Queued& item);
  void Finish(Queued& item, const Status& status, int http_status);

  const ActionsConfig config_;
  std::vector<HttpAllowEntry> allow_;
  std::shared_ptr<HttpTlsContext> tls_;  // built when an https entry exists; else null
  Status tls_status_;                    // why tls_ is null when an https entry exists
  MetricsRegistry* metrics_;
  int collector_id_ = -1;

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Queued> queue_;  // guarded by mu_
  bool stopping_ = false;     // guarded by mu_
  std::vector<std::thread> workers_;

  std::atomic<std::uint64_t> sent_{0};      // a reply with status < 400
  std::atomic<std::uint64_t> rejected_{0};  // a 4xx reply other than 429 (not retried)
  std::atomic<std::uint64_t> failed_{0};    // every attempt failed
  std::atomic<std::uint64_t> refused_{0};   // queue full
  std::atomic<std::uint64_t> dropped_{0};   // still queued at shutdown
  std::atomic<std::uint64_t> retries_{0};
};

}  // namespace wisp
