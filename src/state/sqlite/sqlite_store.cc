#include "state/sqlite/sqlite_store.h"

#include <sqlite3.h>

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "common/quote.h"

namespace wisp {
namespace {

constexpr std::size_t kMaxNamespaceBytes = 1 << 10;
constexpr std::size_t kMaxKeyBytes = 1 << 10;
constexpr std::size_t kMaxValueBytes = 1 << 20;
constexpr int kBusyTimeoutMs = 5000;
// Expired keys nobody reads again are deleted in a sweep every this many writes per store, so
// the file does not grow with dead keys; reads never see them either way.
constexpr int kWritesPerSweep = 1000;
// Bumped when the table layout changes; a newer file is refused rather than misread.
constexpr int kSchemaVersion = 1;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS kv (
  ns TEXT NOT NULL,
  key TEXT NOT NULL,
  value BLOB NOT NULL,
  expires_at INTEGER NULL,  -- unix time in ms; NULL: never
  PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expires_at ON kv (expires_at) WHERE expires_at IS NOT NULL;
)sql";

std::int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string QuoteKey(std::string_view key) { return QuoteUntrusted(key); }

// Strict decimal int64: optional '-', digits, nothing else (no spaces, no '+', no fraction).
std::optional<std::int64_t> ParseInt64(std::string_view text) {
  std::int64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

Status CheckArgs(std::string_view ns, std::string_view key) {
  if (ns.empty()) return InvalidArgument("state namespace is empty");
  if (ns.size() > kMaxNamespaceBytes) {
    return InvalidArgument(
        fmt::format("state namespace is {} bytes; the limit is {}", ns.size(), kMaxNamespaceBytes));
  }
  if (key.size() > kMaxKeyBytes) {
    return InvalidArgument(
        fmt::format("key is {} bytes; the limit is {}", key.size(), kMaxKeyBytes));
  }
  return Status::Ok();
}

Result<std::optional<std::int64_t>> ExpiryOf(Ttl ttl) {
  if (!ttl) return std::optional<std::int64_t>();
  if (ttl->count() <= 0) {
    return InvalidArgument(fmt::format("ttl must be positive, got {} ms", ttl->count()));
  }
  std::int64_t now = NowMs();
  std::int64_t at = 0;
  // A TTL so long it overflows means "effectively never"; saturate instead of wrapping.
  if (__builtin_add_overflow(now, static_cast<std::int64_t>(ttl->count()), &at)) {
    at = std::numeric_limits<std::int64_t>::max();
  }
  return std::optional<std::int64_t>(at);
}

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// BUSY after the busy timeout is transient (another shard holds the write lock for long), so it
// is Unavailable; anything else is the file or the disk failing.
Status SqlError(sqlite3* db, std::string_view what) {
  int code = sqlite3_extended_errcode(db) & 0xff;
  std::string message = fmt::format("state store: {}: {}", what, sqlite3_errmsg(db));
  if (code == SQLITE_BUSY || code == SQLITE_LOCKED) return Unavailable(std::move(message));
  return IoError(std::move(message));
}

Status Exec(sqlite3* db, const char* sql, std::string_view what) {
  if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) return SqlError(db, what);
  return Status::Ok();
}

// sqlite3_bind_* take a null pointer as SQL NULL, so an empty view must not pass one.
const char* NonNull(std::string_view s) { return s.data() != nullptr ? s.data() : ""; }

// Resets a statement when a call is done with it, so it holds no locks and no pointers into the
// caller's buffers between calls.
class StmtUse {
 public:
  explicit StmtUse(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~StmtUse() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  StmtUse(const StmtUse&) = delete;
  StmtUse& operator=(const StmtUse&) = delete;

  // Namespaces and keys are TEXT (readable in the sqlite3 shell) but bound with their exact
  // length: SQLite compares them bytewise, so any bytes work as a key.
  void Text(int i, std::string_view s) {
    sqlite3_bind_text64(stmt_, i, NonNull(s), s.size(), SQLITE_STATIC, SQLITE_UTF8);
  }
  void Blob(int i, std::string_view s) {
    sqlite3_bind_blob64(stmt_, i, NonNull(s), s.size(), SQLITE_STATIC);
  }
  void Int(int i, std::int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  void IntOrNull(int i, std::optional<std::int64_t> v) {
    if (v) {
      sqlite3_bind_int64(stmt_, i, *v);
    } else {
      sqlite3_bind_null(stmt_, i);
    }
  }
  int Step() { return sqlite3_step(stmt_); }

  std::string_view ColumnBytes(int i) {
    const void* data = sqlite3_column_blob(stmt_, i);
    int size = sqlite3_column_bytes(stmt_, i);
    if (data == nullptr || size <= 0) return {};
    return {static_cast<const char*>(data), static_cast<std::size_t>(size)};
  }
  std::optional<std::int64_t> ColumnIntOrNull(int i) {
    if (sqlite3_column_type(stmt_, i) == SQLITE_NULL) return std::nullopt;
    return sqlite3_column_int64(stmt_, i);
  }

 private:
  sqlite3_stmt* stmt_;
};

class SqliteStore final : public StateStore {
 public:
  explicit SqliteStore(DbPtr db) : db_(std::move(db)) {}

  Status Prepare() {
    RETURN_IF_ERROR(
        PrepareOne("SELECT value, expires_at FROM kv WHERE ns = ?1 AND key = ?2", &get_));
    RETURN_IF_ERROR(
        PrepareOne("INSERT INTO kv (ns, key, value, expires_at) VALUES (?1, ?2, ?3, ?4) "
                   "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, "
                   "expires_at = excluded.expires_at",
                   &put_));
    RETURN_IF_ERROR(
        PrepareOne("DELETE FROM kv WHERE ns = ?1 AND key = ?2 RETURNING expires_at", &delete_));
    // The expiry condition is repeated so that a value written again meanwhile is kept.
    RETURN_IF_ERROR(PrepareOne("DELETE FROM kv WHERE ns = ?1 AND key = ?2 AND expires_at <= ?3",
                               &delete_expired_key_));
    RETURN_IF_ERROR(PrepareOne("DELETE FROM kv WHERE ns = ?1", &drop_namespace_));
    RETURN_IF_ERROR(PrepareOne("DELETE FROM kv WHERE expires_at <= ?1", &sweep_));
    // IMMEDIATE takes the write lock up front: a deferred transaction that reads and then
    // writes can fail with BUSY at the upgrade, without the busy timeout helping.
    RETURN_IF_ERROR(PrepareOne("BEGIN IMMEDIATE", &begin_));
    RETURN_IF_ERROR(PrepareOne("COMMIT", &commit_));
    RETURN_IF_ERROR(PrepareOne("ROLLBACK", &rollback_));
    return Status::Ok();
  }

  Result<std::optional<std::string>> Get(std::string_view ns, std::string_view key) override {
    RETURN_IF_ERROR(CheckArgs(ns, key));
    std::int64_t now = NowMs();
    {
      StmtUse get(get_.get());
      get.Text(1, ns);
      get.Text(2, key);
      int rc = get.Step();
      if (rc == SQLITE_DONE) return std::optional<std::string>();
      if (rc != SQLITE_ROW) return SqlError(db_.get(), "get");
      std::optional<std::int64_t> expires_at = get.ColumnIntOrNull(1);
      if (!expires_at || *expires_at > now) {
        return std::optional<std::string>(std::string(get.ColumnBytes(0)));
      }
    }
    DeleteExpiredKey(ns, key, now);
    return std::optional<std::string>();
  }

  Status Put(std::string_view ns, std::string_view key, std::string_view value, Ttl ttl) override {
    RETURN_IF_ERROR(CheckArgs(ns, key));
    RETURN_IF_ERROR(CheckValue(value));
    ASSIGN_OR_RETURN(std::optional<std::int64_t> expires_at, ExpiryOf(ttl));
    RETURN_IF_ERROR(Write(ns, key, value, expires_at, "put"));
    CountWrite();
    return Status::Ok();
  }

  Result<bool> Delete(std::string_view ns, std::string_view key) override {
    RETURN_IF_ERROR(CheckArgs(ns, key));
    std::int64_t now = NowMs();
    bool removed_live_key = false;
    {
      StmtUse del(delete_.get());
      del.Text(1, ns);
      del.Text(2, key);
      int rc;
      while ((rc = del.Step()) == SQLITE_ROW) {
        // An expired key was already gone as far as callers can tell.
        std::optional<std::int64_t> expires_at = del.ColumnIntOrNull(0);
        removed_live_key = !expires_at || *expires_at > now;
      }
      if (rc != SQLITE_DONE) return SqlError(db_.get(), "delete");
    }
    CountWrite();
    return removed_live_key;
  }

  Result<std::int64_t> Incr(std::string_view ns, std::string_view key, std::int64_t delta,
                            Ttl ttl) override {
    RETURN_IF_ERROR(CheckArgs(ns, key));
    ASSIGN_OR_RETURN(std::optional<std::int64_t> new_expiry, ExpiryOf(ttl));
    RETURN_IF_ERROR(StepOnce(begin_.get(), "incr: begin"));
    Result<std::int64_t> result = IncrInTransaction(ns, key, delta, new_expiry);
    if (!result.ok()) {
      (void)StepOnce(rollback_.get(), "incr: rollback");  // the original error is the one to report
      return result;
    }
    Status committed = StepOnce(commit_.get(), "incr: commit");
    if (!committed.ok()) {
      (void)StepOnce(rollback_.get(), "incr: rollback");
      return committed;
    }
    CountWrite();
    return result;
  }

  Status DropNamespace(std::string_view ns) override {
    RETURN_IF_ERROR(CheckArgs(ns, ""));
    StmtUse drop(drop_namespace_.get());
    drop.Text(1, ns);
    if (drop.Step() != SQLITE_DONE) return SqlError(db_.get(), "drop namespace");
    return Status::Ok();
  }

 private:
  Status PrepareOne(const char* sql, StmtPtr* out) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v3(db_.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) !=
        SQLITE_OK) {
      return SqlError(db_.get(), "prepare");
    }
    out->reset(stmt);
    return Status::Ok();
  }

  Status StepOnce(sqlite3_stmt* stmt, std::string_view what) {
    StmtUse use(stmt);
    if (use.Step() != SQLITE_DONE) return SqlError(db_.get(), what);
    return Status::Ok();
  }

  static Status CheckValue(std::string_view value) {
    if (value.size() > kMaxValueBytes) {
      return InvalidArgument(
          fmt::format("value is {} bytes; the limit is {}", value.size(), kMaxValueBytes));
    }
    return Status::Ok();
  }

  Status Write(std::string_view ns, std::string_view key, std::string_view value,
               std::optional<std::int64_t> expires_at, std::string_view what) {
    StmtUse put(put_.get());
    put.Text(1, ns);
    put.Text(2, key);
    put.Blob(3, value);
    put.IntOrNull(4, expires_at);
    if (put.Step() != SQLITE_DONE) return SqlError(db_.get(), what);
    return Status::Ok();
  }

  // Runs between BEGIN IMMEDIATE and COMMIT: no other connection can write meanwhile.
  Result<std::int64_t> IncrInTransaction(std::string_view ns, std::string_view key,
                                         std::int64_t delta,
                                         std::optional<std::int64_t> new_expiry) {
    std::int64_t now = NowMs();
    std::int64_t current = 0;
    std::optional<std::int64_t> expires_at;
    {
      StmtUse get(get_.get());
      get.Text(1, ns);
      get.Text(2, key);
      int rc = get.Step();
      if (rc == SQLITE_ROW) {
        std::optional<std::int64_t> old_expiry = get.ColumnIntOrNull(1);
        if (!old_expiry || *old_expiry > now) {  // an expired key counts as absent
          std::optional<std::int64_t> parsed = ParseInt64(get.ColumnBytes(0));
          if (!parsed) {
            return InvalidArgument(fmt::format("value of key {} is not an integer", QuoteKey(key)));
          }
          current = *parsed;
          expires_at = old_expiry;  // like Redis INCR: a key's TTL survives increments
        }
      } else if (rc != SQLITE_DONE) {
        return SqlError(db_.get(), "incr: read");
      }
    }
    std::int64_t next = 0;
    if (__builtin_add_overflow(current, delta, &next)) {
      return InvalidArgument(
          fmt::format("incrementing key {} ({}) by {} overflows a 64-bit "
                      "integer",
                      QuoteKey(key), current, delta));
    }
    if (new_expiry) expires_at = new_expiry;
    std::string text = std::to_string(next);
    RETURN_IF_ERROR(Write(ns, key, text, expires_at, "incr: write"));
    return next;
  }

  // Best effort, and without waiting for the write lock: a read must not stall behind another
  // shard's write just to tidy up; the sweep catches what this misses.
  void DeleteExpiredKey(std::string_view ns, std::string_view key, std::int64_t now) {
    sqlite3_busy_timeout(db_.get(), 0);
    {
      StmtUse del(delete_expired_key_.get());
      del.Text(1, ns);
      del.Text(2, key);
      del.Int(3, now);
      del.Step();
    }
    sqlite3_busy_timeout(db_.get(), kBusyTimeoutMs);
  }

  void CountWrite() {
    if (++writes_since_sweep_ < kWritesPerSweep) return;
    writes_since_sweep_ = 0;
    sqlite3_busy_timeout(db_.get(), 0);  // best effort too: the next sweep retries
    {
      StmtUse sweep(sweep_.get());
      sweep.Int(1, NowMs());
      sweep.Step();
    }
    sqlite3_busy_timeout(db_.get(), kBusyTimeoutMs);
  }

  // Declared first so it is destroyed last, after the statements.
  DbPtr db_;
  StmtPtr get_, put_, delete_, delete_expired_key_, drop_namespace_, sweep_;
  StmtPtr begin_, commit_, rollback_;
  int writes_since_sweep_ = 0;
};

Result<DbPtr> OpenConnection(const std::string& path, bool create, bool sync_full) {
  sqlite3* raw = nullptr;
  // NOMUTEX: each connection is used by one thread only (see state_store.h), so SQLite's own
  // per-connection mutex would be pure overhead.
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  DbPtr db(raw);
  if (rc != SQLITE_OK) {
    return IoError(fmt::format("state store: cannot open {}: {}", path,
                               raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  }
  sqlite3_extended_result_codes(db.get(), 1);
  sqlite3_busy_timeout(db.get(), kBusyTimeoutMs);
  // synchronous is per connection; journal_mode=WAL is stored in the file (set at open below).
  RETURN_IF_ERROR(Exec(db.get(),
                       sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                       "set synchronous"));
  return db;
}

Status SetUpDatabase(sqlite3* db, const std::string& path) {
  std::string mode;
  auto read_mode = [](void* out, int columns, char** values, char**) {
    if (columns > 0 && values[0] != nullptr) *static_cast<std::string*>(out) = values[0];
    return 0;
  };
  if (sqlite3_exec(db, "PRAGMA journal_mode=WAL", read_mode, &mode, nullptr) != SQLITE_OK) {
    return SqlError(db, "set journal mode");
  }
  // Without WAL every write would block all readers; refuse to run slow silently.
  if (mode != "wal") {
    return IoError(
        fmt::format("state store: {} cannot use WAL mode (journal mode is '{}'); "
                    "is the data directory on a network filesystem?",
                    path, mode));
  }
  int version = 0;
  auto read_int = [](void* out, int columns, char** values, char**) {
    if (columns > 0 && values[0] != nullptr) *static_cast<int*>(out) = std::atoi(values[0]);
    return 0;
  };
  if (sqlite3_exec(db, "PRAGMA user_version", read_int, &version, nullptr) != SQLITE_OK) {
    return SqlError(db, "read schema version");
  }
  if (version > kSchemaVersion) {
    return IoError(
        fmt::format("state store: {} has schema version {}, newer than this wisp "
                    "understands ({}); upgrade wisp",
                    path, version, kSchemaVersion));
  }
  RETURN_IF_ERROR(Exec(db, kSchema, "create schema"));
  if (version < kSchemaVersion) {
    RETURN_IF_ERROR(
        Exec(db, fmt::format("PRAGMA user_version={}", kSchemaVersion).c_str(), "set schema"));
  }
  return Status::Ok();
}

class SqliteStateBackend final : public StateBackend {
 public:
  SqliteStateBackend(std::string path, bool sync_full)
      : path_(std::move(path)), sync_full_(sync_full) {}

  // Thread-safe: reads only immutable members; each call opens its own connection.
  Result<StateStorePtr> Connect() override {
    ASSIGN_OR_RETURN(DbPtr db, OpenConnection(path_, /*create=*/false, sync_full_));
    auto store = std::make_unique<SqliteStore>(std::move(db));
    RETURN_IF_ERROR(store->Prepare());
    return StateStorePtr(std::move(store));
  }

 private:
  const std::string path_;
  const bool sync_full_;
};

}  // namespace

Result<StateBackendPtr> OpenSqliteStateBackend(const StateBackendOptions& options) {
  if (options.data_dir.empty()) return InvalidArgument("state store: data_dir is empty");
  std::error_code ec;
  std::filesystem::create_directories(options.data_dir, ec);
  if (ec) {
    return IoError(
        fmt::format("state store: cannot create {}: {}", options.data_dir, ec.message()));
  }
  std::string path = (std::filesystem::path(options.data_dir) / "state.db").string();
  ASSIGN_OR_RETURN(DbPtr db, OpenConnection(path, /*create=*/true, options.sync_full));
  RETURN_IF_ERROR(SetUpDatabase(db.get(), path));
  return StateBackendPtr(std::make_shared<SqliteStateBackend>(std::move(path), options.sync_full));
}

void RegisterSqliteStateBackend() {
  StateBackendRegistry::Get().Register(
      "sqlite", [](const StateBackendOptions& options) { return OpenSqliteStateBackend(options); });
}

}  // namespace wisp
