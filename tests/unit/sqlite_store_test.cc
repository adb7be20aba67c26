#include "state/sqlite/sqlite_store.h"

#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <sqlite3.h>

namespace wisp {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

class SqliteStoreTest : public testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "wisp-sqlite-test-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    options_.data_dir = (dir_ / "data").string();  // created by the backend
    Open();
  }
  void TearDown() override {
    store_.reset();
    backend_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void Open() {
    Result<StateBackendPtr> backend = OpenSqliteStateBackend(options_);
    ASSERT_TRUE(backend.ok()) << backend.status().ToString();
    backend_ = *backend;
    Result<StateStorePtr> store = backend_->Connect();
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }

  std::optional<std::string> Get(std::string_view ns, std::string_view key) {
    Result<std::optional<std::string>> v = store_->Get(ns, key);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return v.ok() ? *v : std::nullopt;
  }

  fs::path dir_;
  StateBackendOptions options_;
  StateBackendPtr backend_;
  StateStorePtr store_;
};

TEST_F(SqliteStoreTest, PutGetDelete) {
  EXPECT_EQ(Get("fn", "k"), std::nullopt);
  ASSERT_TRUE(store_->Put("fn", "k", "v1").ok());
  EXPECT_EQ(Get("fn", "k"), "v1");
  ASSERT_TRUE(store_->Put("fn", "k", "v2").ok());
  EXPECT_EQ(Get("fn", "k"), "v2");
  Result<bool> removed = store_->Delete("fn", "k");
  ASSERT_TRUE(removed.ok());
  EXPECT_TRUE(*removed);
  EXPECT_EQ(Get("fn", "k"), std::nullopt);
  removed = store_->Delete("fn", "k");
  ASSERT_TRUE(removed.ok());
  EXPECT_FALSE(*removed);
}

TEST_F(SqliteStoreTest, ArbitraryBytes) {
  std::string key("k\0\xff\n", 4);
  std::string value("\0\x01\x02\xfe\xff", 5);
  ASSERT_TRUE(store_->Put("fn", key, value).ok());
  EXPECT_EQ(Get("fn", key), value);
  EXPECT_EQ(Get("fn", "k"), std::nullopt);  // a prefix is another key
  ASSERT_TRUE(store_->Put("fn", "", "").ok());
  EXPECT_EQ(Get("fn", ""), "");  // empty key and empty value are values, not absence
}

TEST_F(SqliteStoreTest, NamespacesAreIsolated) {
  ASSERT_TRUE(store_->Put("a", "k", "from-a").ok());
  ASSERT_TRUE(store_->Put("b", "k", "from-b").ok());
  EXPECT_EQ(Get("a", "k"), "from-a");
  EXPECT_EQ(Get("b", "k"), "from-b");
  ASSERT_TRUE(store_->Delete("a", "k").ok());
  EXPECT_EQ(Get("b", "k"), "from-b");
}

TEST_F(SqliteStoreTest, Incr) {
  Result<std::int64_t> n = store_->Incr("fn", "c");
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 1);
  n = store_->Incr("fn", "c", 41);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 42);
  n = store_->Incr("fn", "c", -50);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, -8);
  EXPECT_EQ(Get("fn", "c"), "-8");
  ASSERT_TRUE(store_->Put("fn", "d", "100").ok());
  n = store_->Incr("fn", "d");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 101);
}

TEST_F(SqliteStoreTest, IncrOfNonIntegerIsInvalidArgument) {
  for (const char* bad : {"abc", "", "1.5", " 1", "1 ", "+1", "99999999999999999999"}) {
    ASSERT_TRUE(store_->Put("fn", "k", bad).ok());
    Result<std::int64_t> n = store_->Incr("fn", "k");
    ASSERT_FALSE(n.ok()) << bad;
    EXPECT_EQ(n.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(n.status().message(), "value of key 'k' is not an integer");
    EXPECT_EQ(Get("fn", "k"), bad);  // unchanged
  }
  // The store is still usable: the failed transaction was rolled back.
  ASSERT_TRUE(store_->Incr("fn", "other").ok());
}

TEST_F(SqliteStoreTest, IncrOverflowIsRefused) {
  ASSERT_TRUE(
      store_->Put("fn", "k", std::to_string(std::numeric_limits<std::int64_t>::max())).ok());
  Result<std::int64_t> n = store_->Incr("fn", "k");
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(
      store_->Put("fn", "k", std::to_string(std::numeric_limits<std::int64_t>::min())).ok());
  n = store_->Incr("fn", "k", -1);
  ASSERT_FALSE(n.ok());
  n = store_->Incr("fn", "k", 1);
  ASSERT_TRUE(n.ok());
}

// Waits up to 2 s for `key` to disappear; never asserts on elapsed time, only on the outcome.
bool DisappearsWithin2s(StateStore& store, std::string_view ns, std::string_view key) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < deadline) {
    Result<std::optional<std::string>> v = store.Get(ns, key);
    if (v.ok() && !v->has_value()) return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return false;
}

TEST_F(SqliteStoreTest, TtlExpires) {
  ASSERT_TRUE(store_->Put("fn", "temp", "v", milliseconds(50)).ok());
  ASSERT_TRUE(store_->Put("fn", "kept", "v").ok());
  EXPECT_TRUE(DisappearsWithin2s(*store_, "fn", "temp"));
  EXPECT_EQ(Get("fn", "kept"), "v");
  // An expired key was already gone: deleting it removes nothing visible.
  ASSERT_TRUE(store_->Put("fn", "temp2", "v", milliseconds(1)).ok());
  EXPECT_TRUE(DisappearsWithin2s(*store_, "fn", "temp2"));
  Result<bool> removed = store_->Delete("fn", "temp2");
  ASSERT_TRUE(removed.ok());
  EXPECT_FALSE(*removed);
}

TEST_F(SqliteStoreTest, PutWithoutTtlClearsIt) {
  ASSERT_TRUE(store_->Put("fn", "k", "v", milliseconds(50)).ok());
  ASSERT_TRUE(store_->Put("fn", "k", "v2").ok());
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(Get("fn", "k"), "v2");
}

TEST_F(SqliteStoreTest, IncrWithTtlAndAfterExpiry) {
  Result<std::int64_t> n = store_->Incr("fn", "c", 5, milliseconds(50));
  ASSERT_TRUE(n.ok());
  EXPECT_TRUE(DisappearsWithin2s(*store_, "fn", "c"));
  n = store_->Incr("fn", "c");  // an expired counter starts again from 0
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1);
}

TEST_F(SqliteStoreTest, BadTtlIsRefused) {
  EXPECT_EQ(store_->Put("fn", "k", "v", milliseconds(0)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Put("fn", "k", "v", milliseconds(-5)).code(), StatusCode::kInvalidArgument);
  // A huge TTL saturates instead of wrapping into the past.
  ASSERT_TRUE(store_->Put("fn", "k", "v", milliseconds::max()).ok());
  EXPECT_EQ(Get("fn", "k"), "v");
}

TEST_F(SqliteStoreTest, SizeLimits) {
  std::string big_key(1025, 'k');
  std::string big_value((1 << 20) + 1, 'v');
  EXPECT_EQ(store_->Put("fn", big_key, "v").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Put("fn", "k", big_value).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Get("fn", big_key).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Incr("fn", big_key).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Delete("fn", big_key).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Put("", "k", "v").code(), StatusCode::kInvalidArgument);
  // Exactly at the limits is fine.
  ASSERT_TRUE(store_->Put("fn", std::string(1024, 'k'), std::string(1 << 20, 'v')).ok());
  EXPECT_EQ(Get("fn", std::string(1024, 'k'))->size(), 1u << 20);
}

TEST_F(SqliteStoreTest, DropNamespace) {
  ASSERT_TRUE(store_->Put("a", "k1", "v").ok());
  ASSERT_TRUE(store_->Put("a", "k2", "v").ok());
  ASSERT_TRUE(store_->Put("b", "k1", "v").ok());
  ASSERT_TRUE(store_->DropNamespace("a").ok());
  EXPECT_EQ(Get("a", "k1"), std::nullopt);
  EXPECT_EQ(Get("a", "k2"), std::nullopt);
  EXPECT_EQ(Get("b", "k1"), "v");
}

TEST_F(SqliteStoreTest, DurableAcrossReopen) {
  ASSERT_TRUE(store_->Put("fn", "k", "persisted").ok());
  ASSERT_TRUE(store_->Incr("fn", "c", 7).ok());
  store_.reset();
  backend_.reset();
  Open();
  EXPECT_EQ(Get("fn", "k"), "persisted");
  EXPECT_EQ(Get("fn", "c"), "7");
  EXPECT_TRUE(fs::exists(fs::path(options_.data_dir) / "state.db"));
}

TEST_F(SqliteStoreTest, SyncFullWorks) {
  store_.reset();
  backend_.reset();
  options_.sync_full = true;
  Open();
  ASSERT_TRUE(store_->Put("fn", "k", "v").ok());
  EXPECT_EQ(Get("fn", "k"), "v");
}

TEST_F(SqliteStoreTest, ConnectionsSeeEachOthersWrites) {
  Result<StateStorePtr> other = backend_->Connect();
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(store_->Put("fn", "k", "v").ok());
  Result<std::optional<std::string>> v = (*other)->Get("fn", "k");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, "v");
}

TEST_F(SqliteStoreTest, ConcurrentIncrIsAtomic) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 1000;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      Result<StateStorePtr> store = backend_->Connect();  // one connection per thread
      if (!store.ok()) {
        ++failures;
        return;
      }
      for (int i = 0; i < kPerThread; ++i) {
        if (!(*store)->Incr("fn", "counter").ok()) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(Get("fn", "counter"), std::to_string(kThreads * kPerThread));
}

TEST_F(SqliteStoreTest, ManyWritesWithSweep) {
  // Crosses the sweep interval with expiring keys around; live keys must survive it.
  for (int i = 0; i < 1100; ++i) {
    ASSERT_TRUE(store_->Put("fn", "t" + std::to_string(i), "v", milliseconds(1)).ok());
  }
  ASSERT_TRUE(store_->Put("fn", "live", "v").ok());
  std::this_thread::sleep_for(milliseconds(5));
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(store_->Incr("fn", "n").ok());
  EXPECT_EQ(Get("fn", "live"), "v");
  EXPECT_EQ(Get("fn", "t5"), std::nullopt);

  // The sweep deleted the expired rows themselves, not just hid them from reads.
  sqlite3* db = nullptr;
  std::string path = (fs::path(options_.data_dir) / "state.db").string();
  ASSERT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* count = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT count(*) FROM kv WHERE expires_at IS NOT NULL", -1,
                               &count, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(count), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(count, 0), 0);
  sqlite3_finalize(count);
  sqlite3_close(db);
}

TEST(SqliteBackendTest, RegistersAsSqlite) {
  RegisterSqliteStateBackend();
  ASSERT_NE(StateBackendRegistry::Get().Find("sqlite"), nullptr);
  std::string tmpl = (fs::temp_directory_path() / "wisp-sqlite-test-XXXXXX").string();
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  StateBackendOptions options;
  options.data_dir = tmpl;
  Result<StateBackendPtr> backend = OpenStateBackend("sqlite", options);
  EXPECT_TRUE(backend.ok()) << backend.status().ToString();
  Result<StateBackendPtr> missing = OpenStateBackend("nope", options);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("sqlite"), std::string::npos);
  std::error_code ec;
  fs::remove_all(tmpl, ec);
}

TEST(SqliteBackendTest, UnwritableDirectoryIsIoError) {
  StateBackendOptions options;
  options.data_dir = "/proc/wisp-cannot-exist";
  Result<StateBackendPtr> backend = OpenSqliteStateBackend(options);
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), StatusCode::kIoError);
}

}  // namespace
}  // namespace wisp
