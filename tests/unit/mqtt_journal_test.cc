#include "node/mqtt_journal.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "node/shard.h"

namespace wisp {
namespace {

namespace fs = std::filesystem;

MqttDelivery Reading(const std::string& topic, const std::string& payload) {
  MqttDelivery d;
  d.topic = topic;
  d.payload = payload;
  d.content_type = "application/json";
  d.qos = 1;
  d.received_at = std::chrono::system_clock::time_point(std::chrono::microseconds(1234567));
  return d;
}

TEST(MqttJournalEntryTest, RoundTripsAndRefusesDamage) {
  std::string bytes;
  EncodeJournalEntry(7, Reading("plant/a/pump/1", std::string("{\"v\":1}\0\xff", 9)),
                     {"alert", "log"}, &bytes);
  const std::size_t first_end = bytes.size();
  EncodeJournalEntry(8, Reading("t", ""), {}, &bytes);

  std::uint64_t seq = 0;
  JournalEntry e;
  MqttDelivery& d = e.delivery;
  std::size_t next = 0;
  ASSERT_TRUE(DecodeJournalEntry(bytes, 0, &seq, &e, &next));
  EXPECT_EQ(e.functions, (std::vector<std::string>{"alert", "log"}));
  EXPECT_EQ(seq, 7u);
  EXPECT_EQ(d.topic, "plant/a/pump/1");
  EXPECT_EQ(d.payload, std::string("{\"v\":1}\0\xff", 9));
  EXPECT_EQ(d.content_type, "application/json");
  EXPECT_EQ(d.qos, 1);
  EXPECT_EQ(d.received_at.time_since_epoch(), std::chrono::microseconds(1234567));
  EXPECT_EQ(next, first_end);
  ASSERT_TRUE(DecodeJournalEntry(bytes, next, &seq, &e, &next));
  EXPECT_EQ(seq, 8u);
  EXPECT_TRUE(e.functions.empty());
  EXPECT_EQ(d.payload, "");
  EXPECT_FALSE(DecodeJournalEntry(bytes, next, &seq, &e, &next));  // the end

  // Every cut inside the first entry is a torn tail; a flipped byte fails the checksum.
  for (std::size_t cut = 0; cut < first_end; ++cut) {
    EXPECT_FALSE(DecodeJournalEntry(std::string_view(bytes).substr(0, cut), 0, &seq, &e, &next))
        << cut;
  }
  for (std::size_t i = 0; i < first_end; ++i) {
    std::string damaged = bytes;
    damaged[i] ^= 0x20;
    EXPECT_FALSE(DecodeJournalEntry(damaged, 0, &seq, &e, &next) && seq == 7 &&
                 d.topic == "plant/a/pump/1" && next == first_end)
        << i;
  }
}

class MqttJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("wisp-journal-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::size_t SegmentCount() {
    std::size_t n = 0;
    for (const auto& e : fs::recursive_directory_iterator(dir_)) {
      n += e.path().extension() == ".jnl";
    }
    return n;
  }

  fs::path dir_;
};

TEST_F(MqttJournalTest, UnfinishedMessagesComeBackAfterARestart) {
  {
    auto journal = MqttJournal::Open(dir_.string(), 2, false);
    ASSERT_TRUE(journal.ok()) << journal.status().ToString();
    EXPECT_TRUE((*journal)->Recover().empty());
    auto a = (*journal)->Append(0, Reading("a", "1"), {"f"});
    auto b = (*journal)->Append(1, Reading("b", "2"), {"f"});
    auto c = (*journal)->Append(0, Reading("c", "3"), {"f"});
    auto d = (*journal)->Append(1, Reading("d", "4"), {"f"});
    ASSERT_TRUE(a.ok() && b.ok() && c.ok() && d.ok());
    EXPECT_LT(*a, *b);
    EXPECT_EQ((*journal)->backlog(), 4);
    EXPECT_TRUE((*journal)->MarkDone(0, *a));  // shard 0 ran "a"; shard 1 ran "b"
    (*journal)->FlushDone(0);
    EXPECT_TRUE((*journal)->MarkDone(1, *b));
    (*journal)->FlushDone(1);
    EXPECT_EQ((*journal)->backlog(), 2);
  }  // the node dies here: "c" and "d" were acknowledged and never ran
  std::vector<JournalEntry> again;
  {
    auto journal = MqttJournal::Open(dir_.string(), 2, false);
    ASSERT_TRUE(journal.ok());
    again = (*journal)->Recover();
    ASSERT_EQ(again.size(), 2u);
    EXPECT_EQ(again[0].delivery.topic, "c");
    EXPECT_EQ(again[1].delivery.topic, "d");
    EXPECT_EQ(again[1].delivery.payload, "4");
    // Journaled again before the old files go, then the replay crashes before running them.
    for (const auto& m : again) ASSERT_TRUE((*journal)->Append(0, m.delivery, m.functions).ok());
    (*journal)->DropRecovered();
  }
  auto journal = MqttJournal::Open(dir_.string(), 2, false);
  ASSERT_TRUE(journal.ok());
  auto third = (*journal)->Recover();
  ASSERT_EQ(third.size(), 2u);
  EXPECT_EQ(third[0].delivery.topic, "c");
  EXPECT_EQ(third[1].delivery.topic, "d");
}

TEST_F(MqttJournalTest, DoneSegmentsAreDeletedAndFewerShardsStillRecoverAll) {
  {
    // Tiny segments: every entry rolls a new one.
    auto journal = MqttJournal::Open(dir_.string(), 3, false, /*segment_bytes=*/64);
    ASSERT_TRUE(journal.ok());
    std::uint64_t last = 0;
    for (int i = 0; i < 10; ++i) {
      auto seq = (*journal)->Append(0, Reading("x", std::string(40, 'a' + i)), {"f"});
      ASSERT_TRUE(seq.ok());
      last = *seq;
    }
    EXPECT_EQ(SegmentCount(), 10u);
    EXPECT_TRUE((*journal)->MarkDone(0, last));
    EXPECT_FALSE((*journal)->MarkDone(0, last)) << "a flush is already due";
    ASSERT_TRUE(
        (*journal)->Append(0, Reading("y", "after"), {"f"}).ok());  // rolls, deletes done ones
    EXPECT_EQ(SegmentCount(), 1u);
    ASSERT_TRUE((*journal)->Append(2, Reading("z", "on shard 2"), {"f"}).ok());
  }
  // The node comes back with one shard: shard 2's entries are not lost.
  auto journal = MqttJournal::Open(dir_.string(), 1, false);
  ASSERT_TRUE(journal.ok());
  auto again = (*journal)->Recover();
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(again[0].delivery.payload, "after");
  EXPECT_EQ(again[1].delivery.payload, "on shard 2");
  (*journal)->DropRecovered();
  EXPECT_FALSE(fs::exists(dir_ / "shard-2"));
  EXPECT_EQ(SegmentCount(), 0u);
}

TEST_F(MqttJournalTest, ATornTailLosesOnlyTheTornEntry) {
  std::uint64_t first = 0;
  {
    auto journal = MqttJournal::Open(dir_.string(), 1, true);
    ASSERT_TRUE(journal.ok());
    first = *(*journal)->Append(0, Reading("a", "whole"), {"f"});
    ASSERT_TRUE((*journal)->Append(0, Reading("b", "torn"), {"f"}).ok());
  }
  fs::path segment;
  for (const auto& e : fs::directory_iterator(dir_ / "shard-0")) {
    if (e.path().extension() == ".jnl") segment = e.path();
  }
  ASSERT_FALSE(segment.empty());
  fs::resize_file(segment, fs::file_size(segment) - 3);
  auto journal = MqttJournal::Open(dir_.string(), 1, false);
  ASSERT_TRUE(journal.ok());
  auto again = (*journal)->Recover();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].delivery.payload, "whole");
  // Sequence numbers go on after the earlier run's.
  auto next = (*journal)->Append(0, Reading("c", "new"), {"f"});
  ASSERT_TRUE(next.ok());
  EXPECT_GT(*next, first);
}

}  // namespace
}  // namespace wisp
