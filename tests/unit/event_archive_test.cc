// The event archive: record format, writer (batching, rotation, retention, write errors),
// reader (torn and corrupt tails, cross-shard merge, cursors), config, CLI formatting.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include <boost/asio/post.hpp>

#include <nlohmann/json.hpp>

#include "archive/archive_format.h"
#include "archive/event_archive.h"
#include "cli/events_command.h"
#include "node/node.h"

namespace wisp {
namespace {

namespace fs = std::filesystem;
using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::system_clock;

class ArchiveDir {
 public:
  ArchiveDir() {
    char tmpl[] = "/tmp/wisp-archive-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~ArchiveDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A clock the test moves by hand.
struct FakeClock {
  Clock::time_point now = Clock::time_point(std::chrono::seconds(1'800'000'000));
  std::function<Clock::time_point()> Fn() {
    return [this] { return now; };
  }
};

class EventArchiveTest : public ::testing::Test {
 protected:
  ArchiveOptions Options() {
    ArchiveOptions o;
    o.dir = dir_.path();
    o.clock = clock_.Fn();
    return o;
  }
  std::unique_ptr<ShardArchive> Writer(const ArchiveOptions& o, int shard = 0, int shards = 1,
                                       ArchiveShardMetrics* metrics = nullptr) {
    auto w = std::make_unique<ShardArchive>(shard, shards, o, metrics);
    EXPECT_TRUE(w->Open().ok());
    return w;
  }
  // An action record named by `n`, stamped by the fake clock.
  static void AppendNumbered(ShardArchive& w, int n, std::string_view function = "fn") {
    w.RecordAction(nullptr, function, "out/" + std::to_string(n), "payload-" + std::to_string(n), 1,
                   Status::Ok());
  }
  ArchivePage Query(ArchiveQuery q = {}) {
    q.limit = q.limit == 100 ? 100000 : q.limit;
    auto page = QueryArchive(dir_.path(), q);
    EXPECT_TRUE(page.ok()) << page.status().ToString();
    return page.ok() ? *page : ArchivePage{};
  }
  std::vector<std::string> Targets(const ArchivePage& page) {
    std::vector<std::string> out;
    for (const auto& r : page.records) out.push_back(r.target);
    return out;
  }
  std::vector<fs::path> Segments(int shard = 0) {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(dir_.path() + "/shard-" + std::to_string(shard))) {
      out.push_back(e.path());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  ArchiveDir dir_;
  FakeClock clock_;
};

TEST(ArchiveFormatTest, RecordRoundTripsAndCrcCatchesAFlippedBit) {
  ArchiveRecord r;
  r.time_us = 1'800'000'000'123'456;
  r.kind = ArchiveKind::kDeadLetter;
  r.trigger = 1;
  r.status = static_cast<std::uint8_t>(StatusCode::kInvalidArgument);
  r.qos = 1;
  r.event_id = 0xabcdef;
  r.duration_us = 42;
  r.payload_size = 9;
  r.function = "vibration";
  r.target = "plant/a/pump/1";
  r.error = "payload is not valid JSON";
  const std::string preview("{bad\0json", 9);
  r.preview = preview;
  std::string segment(kSegmentMagic);
  EncodeRecord(r, &segment);

  ArchiveRecord back;
  std::size_t next = 0;
  ASSERT_EQ(DecodeRecord(segment, kSegmentMagic.size(), &back, &next), DecodeOutcome::kRecord);
  EXPECT_EQ(next, segment.size());
  EXPECT_EQ(back.time_us, r.time_us);
  EXPECT_EQ(back.kind, ArchiveKind::kDeadLetter);
  EXPECT_EQ(back.event_id, 0xabcdefu);
  EXPECT_EQ(back.function, "vibration");
  EXPECT_EQ(back.target, "plant/a/pump/1");
  EXPECT_EQ(back.error, "payload is not valid JSON");
  EXPECT_EQ(back.preview, r.preview);

  for (std::size_t cut = kSegmentMagic.size() + 1; cut < segment.size(); cut += 7) {
    EXPECT_EQ(DecodeRecord(segment.substr(0, cut), kSegmentMagic.size(), &back, &next),
              DecodeOutcome::kTruncated)
        << cut;
  }
  std::string flipped = segment;
  flipped[segment.size() - 3] ^= 0x10;
  EXPECT_EQ(DecodeRecord(flipped, kSegmentMagic.size(), &back, &next), DecodeOutcome::kCorrupt);
  std::string huge_length = segment;
  huge_length[kSegmentMagic.size() + 3] = '\x7f';
  EXPECT_EQ(DecodeRecord(huge_length, kSegmentMagic.size(), &back, &next), DecodeOutcome::kCorrupt);
}

TEST(ArchiveFormatTest, Crc32cKnownValue) {
  // The check value of CRC-32C for "123456789".
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
}

TEST(ArchiveFormatTest, ScanRefusesAFileWithoutTheHeader) {
  int visits = 0;
  auto count = [&](const ArchiveRecord&, std::size_t) { return ++visits > 0; };
  EXPECT_EQ(ScanSegment("not a segment at all", 0, count).stopped_by, DecodeOutcome::kCorrupt);
  EXPECT_EQ(ScanSegment("WIS", 0, count).stopped_by, DecodeOutcome::kTruncated);
  EXPECT_EQ(ScanSegment(kSegmentMagic, 0, count).stopped_by, DecodeOutcome::kEnd);
  EXPECT_EQ(visits, 0);
}

TEST(ArchiveFormatTest, TimesInRfc3339AndAgoForms) {
  const Clock::time_point now = Clock::time_point(seconds(1'800'000'000));
  auto at = [&](std::string_view text) {
    auto t = ParseArchiveTime(text, now);
    EXPECT_TRUE(t.ok()) << text << ": " << t.status().ToString();
    return t.ok() ? std::chrono::duration_cast<milliseconds>(t->time_since_epoch()).count() : -1;
  };
  EXPECT_EQ(at("2026-11-29T17:00:00Z"), 1'795'971'600'000);
  EXPECT_EQ(at("2026-11-29T17:00:00.250Z"), 1'795'971'600'250);
  EXPECT_EQ(at("2026-11-29T18:00:00+01:00"), 1'795'971'600'000);
  EXPECT_EQ(at("2026-11-29t16:30:00-00:30"), 1'795'971'600'000);
  EXPECT_EQ(at("5m"), 1'800'000'000'000 - 300'000);
  EXPECT_EQ(at("-1h"), 1'800'000'000'000 - 3'600'000);
  EXPECT_EQ(at("2d"), 1'800'000'000'000 - 2 * 86'400'000);
  EXPECT_EQ(at("now"), 1'800'000'000'000);
  for (std::string_view bad : {"", "yesterday", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z",
                               "2026-11-29T17:00:00", "2026-11-29T25:00:00Z", "5 minutes", "1e3s",
                               "2026-11-29T17:00:00+1:00", "2326-11-29T17:00:00Z", "9337383373"}) {
    auto t = ParseArchiveTime(bad, now);
    EXPECT_FALSE(t.ok()) << bad;
    if (!t.ok()) {
      EXPECT_NE(t.status().message().find("RFC 3339"), std::string::npos);
    }
  }
  EXPECT_EQ(FormatArchiveTime(1'795'971'600'250'000), "2026-11-29T17:00:00.250Z");
}

TEST_F(EventArchiveTest, AppendAndReadBack) {
  MetricsRegistry metrics(1);
  auto options = Options();
  options.payload_preview_bytes = 8;
  auto w = Writer(options, 0, 1, &metrics.archive(0));
  Event event;
  event.trigger = TriggerKind::kHttp;
  event.id = 7;
  event.path = "/v1/functions/hello/invoke";
  event.body = R"({"name":"plant operator"})";
  w->RecordEvent(event, "hello", Status::Ok(), milliseconds(3));
  clock_.now += milliseconds(1);
  w->RecordAction(&event, "hello", "alerts/x", "hot!", 1, Unavailable("broker down"));
  clock_.now += milliseconds(1);
  w->RecordDeadLetter("hello", "plant/a", "{oops", 0, InvalidArgument("not JSON"));
  EXPECT_TRUE(Query().records.empty()) << "nothing is written before a flush";
  ASSERT_TRUE(w->Flush().ok());

  const ArchivePage page = Query();
  ASSERT_EQ(page.records.size(), 3u);
  const ArchiveEntry& e = page.records[0];
  EXPECT_EQ(e.kind, ArchiveKind::kEvent);
  EXPECT_EQ(e.function, "hello");
  EXPECT_EQ(e.target, "/v1/functions/hello/invoke");
  EXPECT_EQ(e.event_id, 7u);
  EXPECT_EQ(e.duration_us, 3000u);
  EXPECT_EQ(e.status, 0);
  EXPECT_EQ(e.preview, R"({"name":)") << "cut to payload_preview_bytes";
  EXPECT_EQ(e.payload_size, event.body.size());
  EXPECT_EQ(e.time_us, std::chrono::duration_cast<std::chrono::microseconds>(
                           (clock_.now - milliseconds(2)).time_since_epoch())
                           .count());
  const ArchiveEntry& a = page.records[1];
  EXPECT_EQ(a.kind, ArchiveKind::kAction);
  EXPECT_EQ(a.event_id, 7u) << "an action names the event that caused it";
  EXPECT_EQ(a.target, "alerts/x");
  EXPECT_EQ(a.qos, 1);
  EXPECT_EQ(a.status, static_cast<int>(StatusCode::kUnavailable));
  EXPECT_EQ(a.error, "broker down");
  const ArchiveEntry& d = page.records[2];
  EXPECT_EQ(d.kind, ArchiveKind::kDeadLetter);
  EXPECT_EQ(d.error, "not JSON");
  EXPECT_EQ(d.preview, "{oops");

  EXPECT_EQ(metrics.archive(0).records.Get(), 3u);
  EXPECT_EQ(metrics.archive(0).bytes.Get(), w->bytes_on_disk() - kSegmentMagic.size());
  const std::string text = metrics.RenderPrometheus("v", "c");
  EXPECT_NE(text.find("wisp_archive_records_total 3\n"), std::string::npos);
  EXPECT_NE(text.find("wisp_archive_write_errors_total 0\n"), std::string::npos);
}

TEST_F(EventArchiveTest, BufferIsWrittenWhenItPassesFlushBytes) {
  auto options = Options();
  options.flush_bytes = 1024;
  auto w = Writer(options);
  int n = 0;
  while (Query().records.empty() && n < 1000) AppendNumbered(*w, n++);
  EXPECT_GT(n, 5) << "a batch holds several records";
  EXPECT_LT(n, 100) << "a full buffer is written without waiting for the timer";
}

TEST_F(EventArchiveTest, SegmentsRotateBySize) {
  auto options = Options();
  options.segment_bytes = 4096;
  auto w = Writer(options);
  for (int i = 0; i < 200; ++i) {
    AppendNumbered(*w, i);
    if (i % 10 == 9) {
      ASSERT_TRUE(w->Flush().ok());
    }
  }
  ASSERT_TRUE(w->Flush().ok());
  const auto files = Segments();
  EXPECT_GE(files.size(), 3u);
  for (std::size_t i = 0; i + 1 < files.size(); ++i) {
    // A segment closes at the first batch that takes it past the size.
    EXPECT_LT(fs::file_size(files[i]), 4096u + 1024u) << files[i];
  }
  const auto targets = Targets(Query());
  ASSERT_EQ(targets.size(), 200u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(targets[i], "out/" + std::to_string(i));
}

TEST_F(EventArchiveTest, SegmentsRotateByAge) {
  auto options = Options();
  options.segment_age = hours(1);
  auto w = Writer(options);
  AppendNumbered(*w, 0);
  ASSERT_TRUE(w->Flush().ok());
  clock_.now += std::chrono::minutes(59);
  AppendNumbered(*w, 1);
  ASSERT_TRUE(w->Flush().ok());
  EXPECT_EQ(Segments().size(), 1u);
  clock_.now += std::chrono::minutes(2);
  ASSERT_TRUE(w->Flush().ok());  // the timer's flush closes the old segment
  EXPECT_EQ(Segments().size(), 1u) << "a new segment starts only with a new record";
  AppendNumbered(*w, 2);
  ASSERT_TRUE(w->Flush().ok());
  EXPECT_EQ(Segments().size(), 2u);
  EXPECT_EQ(Targets(Query()), (std::vector<std::string>{"out/0", "out/1", "out/2"}));
}

TEST_F(EventArchiveTest, RetentionBySizeDeletesTheOldestFirst) {
  auto options = Options();
  options.segment_bytes = 4096;
  options.retention_bytes = 3 * 4096;
  auto w = Writer(options);
  for (int i = 0; i < 400; ++i) {
    AppendNumbered(*w, i);
    if (i % 10 == 9) {
      ASSERT_TRUE(w->Flush().ok());
    }
  }
  std::uint64_t total = 0;
  for (const auto& f : Segments()) total += fs::file_size(f);
  EXPECT_LE(total, options.retention_bytes);
  EXPECT_EQ(total, w->bytes_on_disk());
  const auto targets = Targets(Query());
  ASSERT_FALSE(targets.empty());
  EXPECT_EQ(targets.back(), "out/399") << "the newest records stay";
  EXPECT_NE(targets.front(), "out/0") << "the oldest went";
  // What is left is a contiguous run up to the newest: whole segments were deleted, in order.
  const int first = std::stoi(targets.front().substr(4));
  EXPECT_EQ(targets.size(), static_cast<std::size_t>(400 - first));
}

TEST_F(EventArchiveTest, RetentionBySizeIsSplitBetweenShards) {
  auto options = Options();
  options.segment_bytes = 4096;
  options.retention_bytes = 4 * 4096;
  auto w = Writer(options, 1, 2);
  for (int i = 0; i < 400; ++i) {
    AppendNumbered(*w, i);
    if (i % 10 == 9) {
      ASSERT_TRUE(w->Flush().ok());
    }
  }
  EXPECT_LE(w->bytes_on_disk(), options.retention_bytes / 2);
}

TEST_F(EventArchiveTest, RetentionByAgeDeletesSegmentsOnceTheirSuccessorIsOld) {
  auto options = Options();
  options.segment_age = hours(1);
  options.retention_age = hours(24 * 7);
  auto w = Writer(options);
  for (int day = 0; day < 10; ++day) {
    AppendNumbered(*w, day);
    ASSERT_TRUE(w->Flush().ok());
    clock_.now += hours(24);
    ASSERT_TRUE(w->Flush().ok());  // closes the day's segment
  }
  // Now is day 10; a segment of day d goes once day d+1's segment is more than 7 days old.
  EXPECT_EQ(Targets(Query()), (std::vector<std::string>{"out/2", "out/3", "out/4", "out/5", "out/6",
                                                        "out/7", "out/8", "out/9"}));
  clock_.now += hours(24 * 30);
  ASSERT_TRUE(w->Flush().ok());
  EXPECT_EQ(Targets(Query()), (std::vector<std::string>{"out/9"}))
      << "the newest segment stays until a newer one exists";
}

TEST_F(EventArchiveTest, ANewRunStartsANewSegmentAndKeepsTheOld) {
  {
    auto w = Writer(Options());
    AppendNumbered(*w, 0);
  }  // the destructor writes the buffer
  clock_.now += seconds(1);
  auto w = Writer(Options());
  AppendNumbered(*w, 1);
  ASSERT_TRUE(w->Flush().ok());
  EXPECT_EQ(Segments().size(), 2u);
  EXPECT_EQ(Targets(Query()), (std::vector<std::string>{"out/0", "out/1"}));
}

TEST_F(EventArchiveTest, TornTailIsToleratedAndCounted) {
  {
    auto w = Writer(Options());
    for (int i = 0; i < 5; ++i) AppendNumbered(*w, i);
  }
  const fs::path torn = Segments().at(0);
  fs::resize_file(torn, fs::file_size(torn) - 5);  // a crash in the middle of the last record

  ArchivePage page = Query();
  EXPECT_EQ(Targets(page), (std::vector<std::string>{"out/0", "out/1", "out/2", "out/3"}));
  EXPECT_EQ(page.bad_records, 0u) << "the newest segment may still be being written";

  clock_.now += seconds(1);
  auto w = Writer(Options());
  AppendNumbered(*w, 5);
  ASSERT_TRUE(w->Flush().ok());
  page = Query();
  EXPECT_EQ(Targets(page), (std::vector<std::string>{"out/0", "out/1", "out/2", "out/3", "out/5"}));
  EXPECT_EQ(page.bad_records, 1u);
}

TEST_F(EventArchiveTest, CorruptRecordStopsItsSegmentOnly) {
  {
    auto w = Writer(Options());
    for (int i = 0; i < 5; ++i) AppendNumbered(*w, i);
  }
  clock_.now += seconds(1);
  {
    auto w = Writer(Options());
    AppendNumbered(*w, 5);
  }
  // Flip a byte inside the third record of the first segment.
  const fs::path first = Segments().at(0);
  std::string bytes;
  {
    std::ifstream in(first, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::size_t offset = kSegmentMagic.size();
  for (int i = 0; i < 2; ++i) {
    ArchiveRecord r;
    ASSERT_EQ(DecodeRecord(bytes, offset, &r, &offset), DecodeOutcome::kRecord);
  }
  bytes[offset + kFrameHeaderBytes + 3] ^= 0x40;
  std::ofstream(first, std::ios::binary | std::ios::trunc) << bytes;

  const ArchivePage page = Query();
  EXPECT_EQ(Targets(page), (std::vector<std::string>{"out/0", "out/1", "out/5"}));
  EXPECT_EQ(page.bad_records, 1u);

  // Garbage where a segment should be is skipped too, and counted.
  std::ofstream(dir_.path() + "/shard-0/000000000000-1.seg") << "garbage, not a segment";
  EXPECT_EQ(Query().bad_records, 2u);
}

TEST_F(EventArchiveTest, ShardsAreMergedByTime) {
  auto w0 = Writer(Options(), 0, 2);
  auto w1 = Writer(Options(), 1, 2);
  for (int i = 0; i < 10; ++i) {
    AppendNumbered(i % 3 == 0 ? *w1 : *w0, i);
    clock_.now += milliseconds(1);
  }
  ASSERT_TRUE(w1->Flush().ok());
  ASSERT_TRUE(w0->Flush().ok());
  const ArchivePage page = Query();
  std::vector<std::string> expected;
  for (int i = 0; i < 10; ++i) expected.push_back("out/" + std::to_string(i));
  EXPECT_EQ(Targets(page), expected);
  EXPECT_EQ(page.records[0].shard, 1);
  EXPECT_EQ(page.records[1].shard, 0);
}

TEST_F(EventArchiveTest, FiltersByFunctionKindAndTime) {
  auto w = Writer(Options());
  const auto start = clock_.now;
  for (int i = 0; i < 6; ++i) {
    AppendNumbered(*w, i, i % 2 ? "odd" : "even");
    clock_.now += seconds(10);
  }
  Event event;
  w->RecordEvent(event, "odd", FunctionError("boom"), milliseconds(1));
  ASSERT_TRUE(w->Flush().ok());

  ArchiveQuery q;
  q.function = "odd";
  EXPECT_EQ(Query(q).records.size(), 4u);
  q.kinds = {ArchiveKind::kAction};
  EXPECT_EQ(Targets(Query(q)), (std::vector<std::string>{"out/1", "out/3", "out/5"}));
  q.since = start + seconds(15);
  q.until = start + seconds(40);
  EXPECT_EQ(Targets(Query(q)), (std::vector<std::string>{"out/3"}));
  q = {};
  q.kinds = {ArchiveKind::kEvent};
  const ArchivePage events = Query(q);
  ASSERT_EQ(events.records.size(), 1u);
  EXPECT_EQ(events.records[0].status, static_cast<int>(StatusCode::kFunctionError));
  EXPECT_EQ(events.records[0].error, "boom");
}

TEST_F(EventArchiveTest, CursorPagesSeeEveryRecordOnce) {
  auto options = Options();
  options.segment_bytes = 4096;  // pages cross segment boundaries too
  auto w0 = Writer(options, 0, 2);
  auto w1 = Writer(options, 1, 2);
  for (int i = 0; i < 125; ++i) {
    AppendNumbered(i % 2 ? *w1 : *w0, i);
    clock_.now += milliseconds(1);
    if (i % 10 == 0) {
      ASSERT_TRUE(w0->Flush().ok());
      ASSERT_TRUE(w1->Flush().ok());
    }
  }
  ASSERT_TRUE(w0->Flush().ok());
  ASSERT_TRUE(w1->Flush().ok());

  std::vector<std::string> seen;
  ArchiveQuery q;
  q.limit = 20;
  std::vector<std::size_t> sizes;
  for (int page_number = 0; page_number < 20; ++page_number) {
    auto page = QueryArchive(dir_.path(), q);
    ASSERT_TRUE(page.ok());
    sizes.push_back(page->records.size());
    for (const auto& r : page->records) seen.push_back(r.target);
    q.after = page->next;
    if (page->records.empty()) break;
  }
  EXPECT_EQ(sizes, (std::vector<std::size_t>{20, 20, 20, 20, 20, 20, 5, 0}));
  ASSERT_EQ(seen.size(), 125u);
  for (int i = 0; i < 125; ++i) EXPECT_EQ(seen[i], "out/" + std::to_string(i));

  // Polling with the last cursor finds only what came since, even a record stamped earlier
  // than ones already returned that its shard flushed late.
  clock_.now -= milliseconds(500);
  AppendNumbered(*w1, 1000);
  ASSERT_TRUE(w1->Flush().ok());
  auto page = QueryArchive(dir_.path(), q);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(Targets(*page), (std::vector<std::string>{"out/1000"}));
}

TEST_F(EventArchiveTest, TailGivesTheNewestAndACursorAtTheEnd) {
  auto w0 = Writer(Options(), 0, 2);
  auto w1 = Writer(Options(), 1, 2);
  for (int i = 0; i < 30; ++i) {
    AppendNumbered(i % 3 ? *w0 : *w1, i);
    clock_.now += milliseconds(1);
  }
  ASSERT_TRUE(w0->Flush().ok());
  ASSERT_TRUE(w1->Flush().ok());
  ArchiveQuery q;
  q.tail = 4;
  auto page = QueryArchive(dir_.path(), q);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(Targets(*page), (std::vector<std::string>{"out/26", "out/27", "out/28", "out/29"}));

  ArchiveQuery poll;
  poll.after = page->next;
  auto empty = QueryArchive(dir_.path(), poll);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->records.empty());
  AppendNumbered(*w0, 30);
  ASSERT_TRUE(w0->Flush().ok());
  auto more = QueryArchive(dir_.path(), poll);
  ASSERT_TRUE(more.ok());
  EXPECT_EQ(Targets(*more), (std::vector<std::string>{"out/30"}));
}

TEST_F(EventArchiveTest, BadCursorIsAClearError) {
  for (std::string cursor : {"x", "c1_", "c1_0-1", "c1_a-b-c", "c1_0-1-2x"}) {
    ArchiveQuery q;
    q.after = cursor;
    auto page = QueryArchive(dir_.path(), q);
    ASSERT_FALSE(page.ok()) << cursor;
    EXPECT_EQ(page.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(page.status().message().find("cursor"), std::string::npos);
  }
  auto missing = QueryArchive(dir_.path() + "/nowhere", {});
  ASSERT_TRUE(missing.ok());
  EXPECT_TRUE(missing->records.empty());
}

TEST_F(EventArchiveTest, TimerFlushesAndStopLetsTheLoopRunDry) {
  // Stop() may run after a flush wait has completed but before its handler ran (a shard busy
  // in a long call when the drain arrives); the handler must then not re-arm. Each round's
  // io.run() returns only once no timer is left.
  auto options = Options();
  options.flush_interval = milliseconds(1);
  for (int round = 0; round < 20; ++round) {
    boost::asio::io_context io;
    auto w = Writer(options);
    AppendNumbered(*w, round);
    w->Start(io);
    boost::asio::post(io, [&] {
      std::this_thread::sleep_for(milliseconds(3));  // lets the wait complete meanwhile
      boost::asio::post(io, [&] { w->Stop(); });
    });
    io.run();
    EXPECT_EQ(Query().records.size(), static_cast<std::size_t>(round + 1));
  }
}

TEST_F(EventArchiveTest, WriteErrorsAreCountedAndTheWriterRecovers) {
  MetricsRegistry metrics(1);
  auto w = Writer(Options(), 0, 1, &metrics.archive(0));
  // The shard's directory replaced by a file: no segment can be created in it.
  fs::remove_all(dir_.path() + "/shard-0");
  std::ofstream(dir_.path() + "/shard-0") << "in the way";
  AppendNumbered(*w, 0);
  const Status failed = w->Flush();
  EXPECT_EQ(failed.code(), StatusCode::kIoError);
  EXPECT_NE(failed.message().find("shard-0"), std::string::npos);
  EXPECT_EQ(metrics.archive(0).write_errors.Get(), 1u);

  fs::remove(dir_.path() + "/shard-0");
  fs::create_directories(dir_.path() + "/shard-0");
  AppendNumbered(*w, 1);
  ASSERT_TRUE(w->Flush().ok());
  EXPECT_EQ(Targets(Query()), (std::vector<std::string>{"out/1"}));
}

TEST(ArchiveConfigTest, DefaultsAndSettings) {
  auto defaults = ParseNodeConfig("", "node.yaml");
  ASSERT_TRUE(defaults.ok());
  EXPECT_TRUE(defaults->archive.enabled);
  EXPECT_EQ(defaults->archive.segment_bytes, 16u << 20);
  EXPECT_EQ(defaults->archive.retention_age, hours(24 * 7));
  EXPECT_EQ(defaults->archive.payload_preview_bytes, 256u);

  auto config = ParseNodeConfig(R"(
archive:
  enabled: false
  segment_bytes: 1Mi
  segment_age: 30m
  retention_bytes: 64Mi
  retention_age: 2d
  payload_preview_bytes: 0
)",
                                "node.yaml");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_FALSE(config->archive.enabled);
  EXPECT_EQ(config->archive.segment_bytes, 1u << 20);
  EXPECT_EQ(config->archive.segment_age, std::chrono::minutes(30));
  EXPECT_EQ(config->archive.retention_bytes, 64u << 20);
  EXPECT_EQ(config->archive.retention_age, hours(48));
  EXPECT_EQ(config->archive.payload_preview_bytes, 0u);
}

TEST(ArchiveConfigTest, ErrorsNameTheKey) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"archive: {enabled: maybe}", "archive.enabled: 'maybe' is not true or false"},
      {"archive: {segment_bytes: 1Ki}", "archive.segment_bytes: must be at least 4Ki"},
      {"archive: {segment_age: soon}", "archive.segment_age: 'soon' is not a duration"},
      {"archive: {retention_bytes: 1Mi}",
       "archive.retention_bytes: must be at least segment_bytes"},
      {"archive: {payload_preview_bytes: 1Mi}", "archive.payload_preview_bytes:"},
      {"archive: {retention: 1d}", "archive.retention: unknown key"},
  };
  for (const auto& [yaml, expected] : cases) {
    auto config = ParseNodeConfig(yaml, "node.yaml");
    ASSERT_FALSE(config.ok()) << yaml;
    EXPECT_NE(config.status().message().find(expected), std::string::npos)
        << config.status().message();
  }
}

TEST(EventsCommandTest, TargetEncodesValues) {
  EventsOptions options;
  options.function = "pump alert";
  options.since = "2026-11-29T17:00:00+01:00";
  options.kind = "event,action";
  EXPECT_EQ(EventsTarget(options, 50, 0, ""),
            "/v1/events?fn=pump%20alert&since=2026-11-29T17:00:00%2B01:00&kind=event,action&"
            "limit=50");
  EXPECT_EQ(EventsTarget({}, 0, 20, ""), "/v1/events?tail=20");
  EXPECT_EQ(EventsTarget({}, 10, 0, "c1_0-1-8"), "/v1/events?limit=10&after=c1_0-1-8");
}

TEST(EventsCommandTest, OneLinePerRecord) {
  const std::string body = R"({"events":[
    {"time":"2026-11-29T17:00:00.000Z","kind":"event","function":"vibration","trigger":"mqtt",
     "event_id":"0000000000000001","status":"ok","topic":"plant/a/pump/1","duration_ms":0.25,
     "payload_bytes":17,"preview":"{\"vibration\":9.5}"},
    {"time":"2026-11-29T17:00:00.001Z","kind":"action","function":"vibration","trigger":"mqtt",
     "event_id":"0000000000000001","status":"unavailable","error":"not connected",
     "topic":"alerts/plant/a","qos":1,"payload_bytes":4,"preview":"hot\n"}],
    "next":"c1_0-1-100"})";
  std::string next;
  auto text = FormatEvents(body, &next);
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_EQ(next, "c1_0-1-100");
  EXPECT_EQ(*text,
            "2026-11-29T17:00:00.000Z  event       vibration  mqtt  plant/a/pump/1  ok  0.25ms  "
            "'{\"vibration\":9.5}'\n"
            "2026-11-29T17:00:00.001Z  action      vibration  mqtt  alerts/plant/a  unavailable "
            "('not connected')  qos=1  'hot\\x0a'\n");
  EXPECT_FALSE(FormatEvents("<html>", &next).ok());
}

}  // namespace
}  // namespace wisp
