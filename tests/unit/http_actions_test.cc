#include "node/http_actions.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "node/async_calls.h"

namespace wisp {
namespace {

TEST(HttpTargetTest, SplitsAbsoluteHttpUrls) {
  auto t = ParseHttpTarget("http://SCADA.local:8080/hooks/a?x=1#frag");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->host, "scada.local");
  EXPECT_EQ(t->port, 8080);
  EXPECT_EQ(t->target, "/hooks/a?x=1");

  t = ParseHttpTarget("http://10.0.0.5");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->port, 80);
  EXPECT_EQ(t->target, "/");

  t = ParseHttpTarget("http://[::1]:9000?q");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->host, "::1");
  EXPECT_EQ(t->port, 9000);
  EXPECT_EQ(t->target, "/?q");
}

TEST(HttpTargetTest, RefusesWhatItCannotSend) {
  for (const char* url :
       {"", "ftp://x/", "https://", "http://", "http:///path", "http://user@host/",
        "http://host:0/", "http://host:65536/", "http://host:80x/", "http://ho st/",
        "http://host/a b", "http://[::1/", "http://bad_host!/", "http://host/\r\nX: y"}) {
    auto t = ParseHttpTarget(url);
    EXPECT_FALSE(t.ok()) << url;
    if (!t.ok()) EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument) << url;
  }
  EXPECT_NE(ParseHttpTarget("ftp://x/").status().message().find("https://"), std::string::npos);
}

TEST(HttpTargetTest, HttpsDefaultsToPort443AndNeedsAnHttpsEntry) {
  auto t = ParseHttpTarget("HTTPS://Cloud.Example/alerts?x=1");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_TRUE(t->https);
  EXPECT_EQ(t->host, "cloud.example");
  EXPECT_EQ(t->port, 443);
  EXPECT_EQ(t->target, "/alerts?x=1");

  std::vector<HttpAllowEntry> allow = {*ParseHttpAllowEntry("https://cloud.example/alerts")};
  EXPECT_TRUE(allow[0].https);
  EXPECT_TRUE(IsAllowed(*t, allow));
  EXPECT_TRUE(IsAllowed(*ParseHttpTarget("https://cloud.example:443/alerts"), allow));
  // The scheme is part of the entry: plain http to the same host and port is not allowed.
  EXPECT_FALSE(IsAllowed(*ParseHttpTarget("http://cloud.example:443/alerts"), allow));
  std::vector<HttpAllowEntry> plain = {*ParseHttpAllowEntry("http://cloud.example:443/alerts")};
  EXPECT_FALSE(IsAllowed(*t, plain));
}

TEST(HttpAllowTest, MatchesHostPortAndPathPrefixAtASegmentBoundary) {
  std::vector<HttpAllowEntry> allow;
  for (const char* entry : {"http://scada.local:8080/hooks/", "http://10.0.0.5"}) {
    auto parsed = ParseHttpAllowEntry(entry);
    ASSERT_TRUE(parsed.ok()) << entry;
    allow.push_back(*parsed);
  }
  EXPECT_EQ(allow[0].path, "/hooks");
  EXPECT_EQ(allow[1].path, "");
  auto allowed = [&](const char* url) {
    auto t = ParseHttpTarget(url);
    return t.ok() && IsAllowed(*t, allow);
  };
  EXPECT_TRUE(allowed("http://scada.local:8080/hooks"));
  EXPECT_TRUE(allowed("http://scada.local:8080/hooks/pump?x=1"));
  EXPECT_TRUE(allowed("http://SCADA.LOCAL:8080/hooks/a/b"));
  EXPECT_TRUE(allowed("http://10.0.0.5/anything"));
  EXPECT_FALSE(allowed("http://scada.local:8080/hooksX"));
  EXPECT_FALSE(allowed("http://scada.local:8080/"));
  EXPECT_FALSE(allowed("http://scada.local/hooks"));  // port 80, not 8080
  EXPECT_FALSE(allowed("http://scada.local:8080/hooks/../admin"));
  EXPECT_FALSE(allowed("http://scada.local:8080/hooks/./x"));
  EXPECT_FALSE(allowed("http://10.0.0.6/"));
  EXPECT_FALSE(IsAllowed(*ParseHttpTarget("http://10.0.0.5/"), {}));
  EXPECT_FALSE(ParseHttpAllowEntry("http://x/a?q=1").ok());
}

TEST(HttpActionsTest, RefusesDisallowedUrlsAndAFullQueue) {
  ActionsConfig config;
  config.http_allow = {"http://127.0.0.1:9/sink"};  // discard port: nothing answers
  config.http_queue = 1;
  config.http_workers = 1;
  config.http_attempts = 1;
  config.http_timeout = std::chrono::milliseconds(200);
  HttpActions actions(config, nullptr);
  EXPECT_EQ(actions.Check("http://127.0.0.1:9/other").code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(actions.Check("nonsense").code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(actions.Check("http://127.0.0.1:9/sink/x").ok());

  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  Status last;
  auto post = [&] {
    HttpPost p;
    p.url = "http://127.0.0.1:9/sink";
    p.done = [&](const Status& s, int) {
      std::lock_guard lock(mu);
      last = s;
      ++done;
      cv.notify_all();
    };
    return p;
  };
  // Each POST fails (nothing listens); with one queue slot, some enqueues are refused while
  // one waits, and every accepted one reports its failure through `done`.
  int accepted = 0, refused = 0;
  for (int i = 0; i < 20; ++i) {
    Status s = actions.Enqueue(post());
    if (s.ok()) {
      ++accepted;
    } else {
      EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
      ++refused;
    }
  }
  EXPECT_GE(accepted, 1);
  EXPECT_GE(refused, 1);
  std::unique_lock lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return done == accepted; }));
  EXPECT_FALSE(last.ok());
}

class AsyncCallsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("wisp-async-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(AsyncCallsTest, RecordsCallsAndResultsDurably) {
  AsyncRequest request;
  request.function = "add";
  request.body = std::string("\x00\xff{\"a\":1}", 9);  // bytes survive exactly
  request.content_type = "application/json";
  request.headers = {{"X-Trace", "t1"}};
  request.callback_url = "http://h/cb";
  request.reply_topic = "r/1";
  std::string first, second;
  {
    auto calls = AsyncCalls::Open(dir_.string(), 2, std::chrono::hours(1));
    ASSERT_TRUE(calls.ok()) << calls.status().ToString();
    auto id = (*calls)->Accept(request);
    ASSERT_TRUE(id.ok());
    first = *id;
    id = (*calls)->Accept(request);
    ASSERT_TRUE(id.ok());
    second = *id;
    EXPECT_NE(first, second);
    EXPECT_EQ((*calls)->pending(), 2);
    EXPECT_EQ((*calls)->Accept(request).status().code(), StatusCode::kResourceExhausted);

    AsyncResult result;
    result.ok = true;
    result.status = 201;
    result.body = "done";
    result.headers = {{"X-A", "b"}};
    ASSERT_TRUE((*calls)->Finish(first, result).ok());
    ASSERT_TRUE((*calls)->Finish(first, result).ok());  // idempotent
    EXPECT_EQ((*calls)->pending(), 1);
  }
  // Reopened, as after a restart: the unfinished call is there to run again.
  auto calls = AsyncCalls::Open(dir_.string(), 2, std::chrono::hours(1));
  ASSERT_TRUE(calls.ok());
  EXPECT_EQ((*calls)->pending(), 1);
  auto unfinished = (*calls)->Unfinished();
  ASSERT_TRUE(unfinished.ok());
  ASSERT_EQ(unfinished->size(), 1u);
  const AsyncCall& again = unfinished->front();
  EXPECT_EQ(again.id, second);
  EXPECT_EQ(again.request.function, "add");
  EXPECT_EQ(again.request.body, request.body);
  EXPECT_EQ(again.request.headers, request.headers);
  EXPECT_EQ(again.request.callback_url, "http://h/cb");
  EXPECT_EQ(again.request.reply_topic, "r/1");

  auto done = (*calls)->Get(first);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state, "succeeded");
  ASSERT_TRUE(done->result.has_value());
  EXPECT_EQ(done->result->status, 201);
  EXPECT_EQ(done->result->body, "done");
  EXPECT_TRUE(done->finished_at.has_value());
  EXPECT_EQ((*calls)->Get("nope").status().code(), StatusCode::kNotFound);
}

TEST_F(AsyncCallsTest, ExpiresFinishedResultsOnly) {
  auto calls = AsyncCalls::Open(dir_.string(), 10, std::chrono::milliseconds(0));
  ASSERT_TRUE(calls.ok());
  AsyncRequest request;
  request.function = "f";
  auto finished = (*calls)->Accept(request);
  auto queued = (*calls)->Accept(request);
  ASSERT_TRUE(finished.ok() && queued.ok());
  AsyncResult failed;
  failed.error_kind = "timeout";
  ASSERT_TRUE((*calls)->Finish(*finished, failed).ok());
  EXPECT_EQ((*calls)->Get(*finished)->state, "failed");
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // past the zero TTL
  ASSERT_TRUE((*calls)->Expire().ok());
  EXPECT_EQ((*calls)->Get(*finished).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE((*calls)->Get(*queued).ok());  // unfinished calls never expire
}

}  // namespace
}  // namespace wisp
