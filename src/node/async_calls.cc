#include "node/async_calls.h"

#include <openssl/rand.h>
#include <sqlite3.h>

#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace wisp {
namespace {

using nlohmann::json;

constexpr int kBusyTimeoutMs = 5000;
constexpr int kExpireEvery = 256;  // accepts between two sweeps of old results

constexpr const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS calls (
  id TEXT PRIMARY KEY,
  function TEXT NOT NULL,
  state TEXT NOT NULL,
  request BLOB NOT NULL,
  result BLOB,
  accepted_ms INTEGER NOT NULL,
  finished_ms INTEGER
);
CREATE INDEX IF NOT EXISTS calls_unfinished ON calls(state, accepted_ms);
)";

Status SqlError(sqlite3* db, std::string_view what) {
  return IoError(fmt::format("async calls: {}: {}", what, sqlite3_errmsg(db)));
}

struct StmtDeleter {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

Result<Stmt> Prepare(sqlite3* db, const char* sql) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &raw, nullptr) != SQLITE_OK) {
    return SqlError(db, "prepare");
  }
  return Stmt(raw);
}

std::int64_t ToMs(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}
std::chrono::system_clock::time_point FromMs(std::int64_t ms) {
  return std::chrono::system_clock::time_point(std::chrono::milliseconds(ms));
}

std::vector<std::uint8_t> Encode(const json& value) { return json::to_cbor(value); }

json Headers(const std::vector<std::pair<std::string, std::string>>& headers) {
  json out = json::array();
  for (const auto& [name, value] : headers) out.push_back({name, value});
  return out;
}
std::vector<std::pair<std::string, std::string>> HeadersFrom(const json& value) {
  std::vector<std::pair<std::string, std::string>> out;
  if (!value.is_array()) return out;
  for (const auto& pair : value) {
    if (pair.is_array() && pair.size() == 2 && pair[0].is_string() && pair[1].is_string()) {
      out.emplace_back(pair[0].get<std::string>(), pair[1].get<std::string>());
    }
  }
  return out;
}

// Bodies are bytes: CBOR byte strings keep them exact.
json Bytes(const std::string& s) {
  return json::binary(std::vector<std::uint8_t>(s.begin(), s.end()));
}
std::string BytesFrom(const json& value) {
  if (value.is_binary()) {
    const auto& b = value.get_binary();
    return std::string(b.begin(), b.end());
  }
  return value.is_string() ? value.get<std::string>() : std::string();
}

std::string Text(const json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

json EncodeRequest(const AsyncRequest& r) {
  return {{"body", Bytes(r.body)},
          {"content_type", r.content_type},
          {"query", r.query},
          {"headers", Headers(r.headers)},
          {"callback_url", r.callback_url},
          {"reply_topic", r.reply_topic}};
}
AsyncRequest DecodeRequest(const json& j, std::string function) {
  AsyncRequest r;
  r.function = std::move(function);
  if (!j.is_object()) return r;
  r.body = BytesFrom(j.value("body", json()));
  r.content_type = Text(j, "content_type");
  r.query = Text(j, "query");
  r.headers = HeadersFrom(j.value("headers", json()));
  r.callback_url = Text(j, "callback_url");
  r.reply_topic = Text(j, "reply_topic");
  return r;
}

json EncodeResult(const AsyncResult& r) {
  return {{"ok", r.ok},
          {"status", r.status},
          {"content_type", r.content_type},
          {"headers", Headers(r.headers)},
          {"body", Bytes(r.body)},
          {"error_kind", r.error_kind},
          {"error_message", r.error_message}};
}
AsyncResult DecodeResult(const json& j) {
  AsyncResult r;
  if (!j.is_object()) return r;
  r.ok = j.value("ok", false);
  r.status = j.value("status", 0);
  r.content_type = Text(j, "content_type");
  r.headers = HeadersFrom(j.value("headers", json()));
  r.body = BytesFrom(j.value("body", json()));
  r.error_kind = Text(j, "error_kind");
  r.error_message = Text(j, "error_message");
  return r;
}

json DecodeBlob(sqlite3_stmt* stmt, int column) {
  const auto* data = static_cast<const std::uint8_t*>(sqlite3_column_blob(stmt, column));
  const int size = sqlite3_column_bytes(stmt, column);
  if (data == nullptr || size <= 0) return json();
  return json::from_cbor(data, data + size, /*strict=*/true, /*allow_exceptions=*/false);
}

std::string ColumnText(sqlite3_stmt* stmt, int column) {
  const auto* text = sqlite3_column_text(stmt, column);
  return text ? reinterpret_cast<const char*>(text) : "";
}

// Columns: id, function, state, request, result, accepted_ms, finished_ms.
AsyncCall ReadCall(sqlite3_stmt* stmt) {
  AsyncCall call;
  call.id = ColumnText(stmt, 0);
  call.request = DecodeRequest(DecodeBlob(stmt, 3), ColumnText(stmt, 1));
  call.state = ColumnText(stmt, 2);
  if (sqlite3_column_type(stmt, 4) != SQLITE_NULL) call.result = DecodeResult(DecodeBlob(stmt, 4));
  call.accepted_at = FromMs(sqlite3_column_int64(stmt, 5));
  if (sqlite3_column_type(stmt, 6) != SQLITE_NULL) {
    call.finished_at = FromMs(sqlite3_column_int64(stmt, 6));
  }
  return call;
}

Result<std::string> NewId() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) return Internal("no random bytes for a call id");
  std::string id;
  id.reserve(32);
  for (unsigned char b : bytes) id += fmt::format("{:02x}", b);
  return id;
}

}  // namespace

Result<std::unique_ptr<AsyncCalls>> AsyncCalls::Open(const std::string& data_dir, int max_pending,
                                                     std::chrono::milliseconds result_ttl) {
  const std::string path = (std::filesystem::path(data_dir) / "async.db").string();
  sqlite3* db = nullptr;
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX;
  if (sqlite3_open_v2(path.c_str(), &db, flags, nullptr) != SQLITE_OK) {
    Status error = IoError(fmt::format("async calls: cannot open {}: {}", path,
                                       db ? sqlite3_errmsg(db) : "out of memory"));
    sqlite3_close(db);
    return error;
  }
  std::unique_ptr<AsyncCalls> calls(new AsyncCalls(db, max_pending, result_ttl));
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  // FULL: a 202 promises the call survives a power cut, as acknowledged state does.
  for (const char* sql : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", kSchema}) {
    if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
      return SqlError(db, "set up");
    }
  }
  ASSIGN_OR_RETURN(Stmt count, Prepare(db, "SELECT COUNT(*) FROM calls WHERE state = 'queued'"));
  if (sqlite3_step(count.get()) == SQLITE_ROW) {
    calls->pending_ = sqlite3_column_int64(count.get(), 0);
  }
  return calls;
}

AsyncCalls::AsyncCalls(sqlite3* db, int max_pending, std::chrono::milliseconds result_ttl)
    : db_(db), max_pending_(max_pending), result_ttl_(result_ttl) {}

AsyncCalls::~AsyncCalls() { sqlite3_close(db_); }

Result<std::string> AsyncCalls::Accept(const AsyncRequest& request) {
  std::lock_guard lock(mu_);
  if (pending_.load(std::memory_order_relaxed) >= max_pending_) {
    return ResourceExhausted(fmt::format(
        "{} async calls are already waiting (async.max_pending); retry later", max_pending_));
  }
  ASSIGN_OR_RETURN(std::string id, NewId());
  ASSIGN_OR_RETURN(Stmt insert,
                   Prepare(db_,
                           "INSERT INTO calls (id, function, state, request, accepted_ms) "
                           "VALUES (?, ?, 'queued', ?, ?)"));
  const std::vector<std::uint8_t> blob = Encode(EncodeRequest(request));
  sqlite3_bind_text(insert.get(), 1, id.data(), static_cast<int>(id.size()), SQLITE_STATIC);
  sqlite3_bind_text(insert.get(), 2, request.function.data(),
                    static_cast<int>(request.function.size()), SQLITE_STATIC);
  sqlite3_bind_blob(insert.get(), 3, blob.data(), static_cast<int>(blob.size()), SQLITE_STATIC);
  sqlite3_bind_int64(insert.get(), 4, ToMs(std::chrono::system_clock::now()));
  if (sqlite3_step(insert.get()) != SQLITE_DONE) return SqlError(db_, "record the call");
  pending_.fetch_add(1, std::memory_order_relaxed);
  if (++accepts_since_expire_ >= kExpireEvery) {
    accepts_since_expire_ = 0;
    (void)ExpireLocked();  // best effort; the next sweep retries
  }
  return id;
}

Status AsyncCalls::Finish(const std::string& id, const AsyncResult& result) {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(Stmt update, Prepare(db_,
                                        "UPDATE calls SET state = ?, result = ?, finished_ms = ? "
                                        "WHERE id = ? AND state = 'queued'"));
  const std::vector<std::uint8_t> blob = Encode(EncodeResult(result));
  const char* state = result.ok ? "succeeded" : "failed";
  sqlite3_bind_text(update.get(), 1, state, -1, SQLITE_STATIC);
  sqlite3_bind_blob(update.get(), 2, blob.data(), static_cast<int>(blob.size()), SQLITE_STATIC);
  sqlite3_bind_int64(update.get(), 3, ToMs(std::chrono::system_clock::now()));
  sqlite3_bind_text(update.get(), 4, id.data(), static_cast<int>(id.size()), SQLITE_STATIC);
  if (sqlite3_step(update.get()) != SQLITE_DONE) return SqlError(db_, "record the result");
  if (sqlite3_changes(db_) > 0) pending_.fetch_sub(1, std::memory_order_relaxed);
  return Status::Ok();
}

Result<AsyncCall> AsyncCalls::Get(const std::string& id) {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(Stmt select, Prepare(db_,
                                        "SELECT id, function, state, request, result, "
                                        "accepted_ms, finished_ms FROM calls WHERE id = ?"));
  sqlite3_bind_text(select.get(), 1, id.data(), static_cast<int>(id.size()), SQLITE_STATIC);
  const int rc = sqlite3_step(select.get());
  if (rc == SQLITE_DONE) {
    return NotFound(fmt::format("no async call '{}' (results are kept for {} s)", id.substr(0, 64),
                                result_ttl_.count() / 1000));
  }
  if (rc != SQLITE_ROW) return SqlError(db_, "read the call");
  return ReadCall(select.get());
}

Result<std::vector<AsyncCall>> AsyncCalls::Unfinished() {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(Stmt select, Prepare(db_,
                                        "SELECT id, function, state, request, result, "
                                        "accepted_ms, finished_ms FROM calls "
                                        "WHERE state = 'queued' ORDER BY accepted_ms"));
  std::vector<AsyncCall> calls;
  int rc;
  while ((rc = sqlite3_step(select.get())) == SQLITE_ROW) calls.push_back(ReadCall(select.get()));
  if (rc != SQLITE_DONE) return SqlError(db_, "list unfinished calls");
  return calls;
}

Status AsyncCalls::Expire() {
  std::lock_guard lock(mu_);
  return ExpireLocked();
}

Status AsyncCalls::ExpireLocked() {
  ASSIGN_OR_RETURN(Stmt del, Prepare(db_,
                                     "DELETE FROM calls WHERE state != 'queued' AND "
                                     "finished_ms < ?"));
  sqlite3_bind_int64(del.get(), 1, ToMs(std::chrono::system_clock::now()) - result_ttl_.count());
  if (sqlite3_step(del.get()) != SQLITE_DONE) return SqlError(db_, "expire results");
  return Status::Ok();
}

}  // namespace wisp
