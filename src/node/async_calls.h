// Async invocations: the durable record of calls accepted by
// POST /v1/functions/{name}/invoke-async and of their results (GET /v1/calls/{id}).
//
// A call is written to <data>/async.db (SQLite, WAL, synchronous=FULL) before the node answers
// 202, so an accepted call survives a crash: at start the node runs every call that has no
// result yet. Delivery is therefore at least once (a call running when the node died runs
// again). Finished results are kept for `result_ttl`, then deleted.
//
// The call id is 128 random bits in hex: it is the capability to read the result of a public
// function's call (token-protected functions' results need the token as well).
//
// Threads: every method is thread-safe (one connection behind a mutex: this is not the hot
// path, and the synchronous commit dominates anyway).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "wisp/status.h"

struct sqlite3;

namespace wisp {

// What the caller sent; owned copies, since the call runs after the HTTP exchange ended.
struct AsyncRequest {
  std::string function;
  std::string body;
  std::string content_type;
  std::string query;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string callback_url;  // X-Callback-Url; empty: none
  std::string reply_topic;   // X-Reply-Topic; empty: none
};

// What came of it: the function's reply, or the error that stopped it.
struct AsyncResult {
  bool ok = false;
  int status = 0;  // the function's HTTP status when ok; the error's HTTP status otherwise
  std::string content_type;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string error_kind;  // when !ok: "timeout", "function_error", ...
  std::string error_message;
};

struct AsyncCall {
  std::string id;
  AsyncRequest request;
  std::string state;  // "queued", "succeeded", "failed"
  std::chrono::system_clock::time_point accepted_at;
  std::optional<std::chrono::system_clock::time_point> finished_at;
  std::optional<AsyncResult> result;
};

class AsyncCalls {
 public:
  // Opens or creates <data_dir>/async.db. IoError when it cannot.
  static Result<std::unique_ptr<AsyncCalls>> Open(const std::string& data_dir, int max_pending,
                                                  std::chrono::milliseconds result_ttl);
  ~AsyncCalls();

  // Durably records a new call and returns its id. ResourceExhausted when `max_pending` calls
  // are unfinished; IoError when the write failed (nothing was accepted then).
  Result<std::string> Accept(const AsyncRequest& request);
  // Records the result (idempotent: a second Finish of one id changes nothing).
  Status Finish(const std::string& id, const AsyncResult& result);
  // NotFound for an unknown or expired id.
  Result<AsyncCall> Get(const std::string& id);
  // Calls without a result, oldest first: to run again after a restart.
  Result<std::vector<AsyncCall>> Unfinished();
  // Deletes results older than result_ttl. Called now and then by Accept too.
  Status Expire();

  std::int64_t pending() const { return pending_.load(std::memory_order_relaxed); }

 private:
  AsyncCalls(sqlite3* db, int max_pending, std::chrono::milliseconds result_ttl);
  Status ExpireLocked();

  std::mutex mu_;
  sqlite3* db_;  // guarded by mu_
  const int max_pending_;
  const std::chrono::milliseconds result_ttl_;
  std::atomic<std::int64_t> pending_{0};
  int accepts_since_expire_ = 0;  // guarded by mu_
};

}  // namespace wisp
