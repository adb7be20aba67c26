#include "node/action_outbox.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "node/framed_log.h"
#include "node/outbox_format.h"

namespace wisp {
namespace {

namespace fs = std::filesystem;

OutboxMessage Message(std::uint64_t seq, std::string topic, std::string payload, int qos = 1) {
  OutboxMessage m;
  m.seq = seq;
  m.topic = std::move(topic);
  m.payload = std::move(payload);
  m.content_type = "application/json";
  m.qos = qos;
  m.retain = seq % 2 == 0;
  m.emitted_at_us = 1700000000000000 + static_cast<std::int64_t>(seq);
  return m;
}

TEST(OutboxFormatTest, RoundTripsAndStopsAtATornOrDamagedEntry) {
  std::string segment(kOutboxMagic);
  EncodeOutboxEntry(Message(1, "alerts/a", std::string("{\"v\":1}\0\xff", 9)), &segment);
  const std::size_t first_end = segment.size();
  EncodeOutboxEntry(Message(2, "alerts/b", "", 0), &segment);

  std::size_t valid = 0;
  std::vector<OutboxMessage> all = DecodeOutboxSegment(segment, &valid);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(valid, segment.size());
  EXPECT_EQ(all[0].seq, 1u);
  EXPECT_EQ(all[0].topic, "alerts/a");
  EXPECT_EQ(all[0].payload, std::string("{\"v\":1}\0\xff", 9));
  EXPECT_EQ(all[0].content_type, "application/json");
  EXPECT_EQ(all[0].qos, 1);
  EXPECT_FALSE(all[0].retain);
  EXPECT_EQ(all[0].emitted_at_us, 1700000000000001);
  EXPECT_EQ(all[1].seq, 2u);
  EXPECT_EQ(all[1].qos, 0);
  EXPECT_TRUE(all[1].retain);
  EXPECT_EQ(all[1].payload, "");

  // Every cut inside the second entry leaves the first; a flipped bit anywhere in the first
  // stops decoding before it.
  for (std::size_t cut = first_end; cut < segment.size(); ++cut) {
    auto got = DecodeOutboxSegment(std::string_view(segment).substr(0, cut), &valid);
    ASSERT_EQ(got.size(), 1u) << cut;
    EXPECT_EQ(valid, first_end);
  }
  for (std::size_t i = kOutboxMagic.size(); i < first_end; ++i) {
    std::string damaged = segment;
    damaged[i] ^= 0x10;
    EXPECT_TRUE(DecodeOutboxSegment(damaged, &valid).empty()) << i;
    EXPECT_EQ(valid, kOutboxMagic.size());
  }
  EXPECT_TRUE(DecodeOutboxSegment("not an outbox segment", &valid).empty());
}

// A broker connection as the outbox sees it: records what is published, hands out packet ids.
struct FakeBroker {
  struct Sent {
    std::string topic, payload;
    int qos = 0;
    int mid = 0;
  };
  bool up = false;
  int next_mid = 1;
  std::vector<Sent> sent;

  OutboxTransport Transport() {
    OutboxTransport t;
    t.connected = [this] { return up; };
    t.publish = [this](std::string_view topic, std::string_view payload, std::string_view, int qos,
                       bool, int* mid) -> Status {
      if (!up) return Unavailable("down");
      if (topic.find('#') != std::string_view::npos) return InvalidArgument("bad topic");
      Sent s{std::string(topic), std::string(payload), qos, qos > 0 ? next_mid++ : 0};
      if (mid != nullptr) *mid = s.mid;
      sent.push_back(s);
      return Status::Ok();
    };
    return t;
  }
};

class ActionOutboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("wisp-outbox-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<ActionOutbox> Open(OutboxOptions options = {}) {
    options.dir = dir_.string();
    options.broker = "mqtt://test:1883";
    auto opened = ActionOutbox::Open(options, broker_.Transport());
    EXPECT_TRUE(opened.ok()) << opened.status().ToString();
    return opened.ok() ? std::move(*opened) : nullptr;
  }
  std::vector<fs::path> Segments() const {
    std::vector<fs::path> out;
    if (!fs::exists(dir_)) return out;
    for (const auto& e : fs::directory_iterator(dir_)) {
      if (e.path().extension() == ".obx") out.push_back(e.path());
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  std::vector<std::string> SentPayloads() const {
    std::vector<std::string> out;
    for (const auto& s : broker_.sent) out.push_back(s.payload);
    return out;
  }

  fs::path dir_;
  FakeBroker broker_;
};

TEST_F(ActionOutboxTest, EmitsWhileDownAreSentInOrderOnConnectAndDoneWhenAcknowledged) {
  auto outbox = Open();
  ASSERT_NE(outbox, nullptr);
  ASSERT_TRUE(outbox->Emit("a", "1", "", 1, false).ok());
  ASSERT_TRUE(outbox->Emit("a", "2", "", 0, false).ok());  // QoS 0 queues too while down
  ASSERT_TRUE(outbox->Emit("a", "3", "", 1, false).ok());
  EXPECT_TRUE(broker_.sent.empty());
  EXPECT_EQ(outbox->pending_messages(), 3);
  EXPECT_GT(outbox->pending_bytes(), 0);
  EXPECT_EQ(Segments().size(), 1u);

  broker_.up = true;
  outbox->OnConnected();
  EXPECT_EQ(SentPayloads(), (std::vector<std::string>{"1", "2", "3"}));
  EXPECT_EQ(outbox->replayed(), 3u);
  EXPECT_EQ(outbox->pending_messages(), 2) << "QoS 0 is done once handed over";
  outbox->OnPublished(broker_.sent[2].mid, 0);
  outbox->OnPublished(broker_.sent[0].mid, 0);
  outbox->OnPublished(999, 0);  // not ours: ignored
  EXPECT_EQ(outbox->pending_messages(), 0);
  EXPECT_EQ(outbox->pending_bytes(), 0);

  // Connected, nothing waiting: a new QoS 0 emit goes out directly, a QoS 1 one right after
  // its append.
  ASSERT_TRUE(outbox->Emit("b", "4", "", 0, false).ok());
  ASSERT_TRUE(outbox->Emit("b", "5", "", 1, false).ok());
  EXPECT_EQ(SentPayloads().back(), "5");
  EXPECT_EQ(outbox->replayed(), 3u);
  outbox->OnPublished(broker_.sent.back().mid, 0);
  outbox.reset();
  EXPECT_TRUE(Segments().empty()) << "everything was done";
}

// A clean stop waits for the broker's acknowledgements (MqttTriggers::Stop), so that a restart
// does not send again what the broker already has.
TEST_F(ActionOutboxTest, WaitUntilSentEndsWhenTheLastAcknowledgementArrives) {
  broker_.up = true;
  auto outbox = Open();
  ASSERT_NE(outbox, nullptr);
  outbox->OnConnected();
  EXPECT_TRUE(outbox->WaitUntilSent(std::chrono::milliseconds(0))) << "nothing in flight";
  ASSERT_TRUE(outbox->Emit("a", "1", "", 1, false).ok());
  ASSERT_EQ(broker_.sent.size(), 1u);
  EXPECT_FALSE(outbox->WaitUntilSent(std::chrono::milliseconds(20))) << "not acknowledged yet";
  std::thread ack([&] { outbox->OnPublished(broker_.sent[0].mid, 0); });
  EXPECT_TRUE(outbox->WaitUntilSent(std::chrono::seconds(30)));
  ack.join();
  EXPECT_EQ(outbox->pending_messages(), 0);
}

TEST_F(ActionOutboxTest, ConnectedQos0NeverTouchesTheDisk) {
  broker_.up = true;
  auto outbox = Open();
  ASSERT_NE(outbox, nullptr);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(outbox->Emit("t", "x", "", 0, false).ok());
  EXPECT_EQ(broker_.sent.size(), 10u);
  EXPECT_TRUE(Segments().empty());
  EXPECT_EQ(outbox->Emit("bad/#", "x", "", 0, false).code(), StatusCode::kInvalidArgument);
}

TEST_F(ActionOutboxTest, PendingEntriesSurviveARestartAndDoneOnesDoNot) {
  {
    auto outbox = Open();
    ASSERT_NE(outbox, nullptr);
    for (int i = 1; i <= 4; ++i) {
      ASSERT_TRUE(outbox->Emit("t", std::to_string(i), "", 1, false).ok());
    }
    broker_.up = true;
    outbox->OnConnected();
    ASSERT_EQ(broker_.sent.size(), 4u);
    // The broker acknowledged 1 and 3; 2 and 4 are lost with the connection and the process.
    outbox->OnPublished(broker_.sent[0].mid, 0);
    outbox->OnPublished(broker_.sent[2].mid, 0);
    EXPECT_EQ(outbox->pending_messages(), 2);
  }
  broker_ = FakeBroker{};
  auto outbox = Open();
  ASSERT_NE(outbox, nullptr);
  // The done mark says "everything up to 1"; 3 was done out of order and is sent again (at
  // least once), 2 and 4 must be.
  EXPECT_EQ(outbox->pending_messages(), 3);
  ASSERT_TRUE(outbox->Emit("t", "5", "", 1, false).ok());  // goes behind them
  broker_.up = true;
  outbox->OnConnected();
  EXPECT_EQ(SentPayloads(), (std::vector<std::string>{"2", "3", "4", "5"}));
  EXPECT_EQ(outbox->replayed(), 4u);
}

TEST_F(ActionOutboxTest, RecoversTheWholeEntriesBeforeATornTail) {
  {
    auto outbox = Open();
    ASSERT_NE(outbox, nullptr);
    for (int i = 1; i <= 3; ++i) {
      ASSERT_TRUE(outbox->Emit("t", std::string(50, 'a' + i), "", 1, false).ok());
    }
  }
  ASSERT_EQ(Segments().size(), 1u);
  const fs::path segment = Segments()[0];
  fs::resize_file(segment, fs::file_size(segment) - 7);  // the node died inside write(2)
  {
    auto outbox = Open();
    ASSERT_NE(outbox, nullptr);
    EXPECT_EQ(outbox->pending_messages(), 2);
    // Appends after the torn entry go to a new segment, so they stay readable.
    ASSERT_TRUE(outbox->Emit("t", "new", "", 1, false).ok());
    EXPECT_EQ(Segments().size(), 2u);
  }
  auto outbox = Open();
  ASSERT_NE(outbox, nullptr);
  broker_.up = true;
  outbox->OnConnected();
  EXPECT_EQ(SentPayloads(),
            (std::vector<std::string>{std::string(50, 'b'), std::string(50, 'c'), "new"}));
}

TEST_F(ActionOutboxTest, SegmentsAreDeletedOnceEverythingInThemIsDone) {
  OutboxOptions options;
  options.segment_bytes = 128;  // about one entry per segment
  auto outbox = Open(options);
  ASSERT_NE(outbox, nullptr);
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(outbox->Emit("t", std::string(60, 'a' + i), "", 1, false).ok());
  }
  EXPECT_EQ(Segments().size(), 8u);
  broker_.up = true;
  outbox->OnConnected();
  ASSERT_EQ(broker_.sent.size(), 8u);
  for (int i = 0; i < 4; ++i) outbox->OnPublished(broker_.sent[i].mid, 0);
  EXPECT_EQ(Segments().size(), 4u);
  // An acknowledgement out of order does not free a segment before the earlier ones are done.
  outbox->OnPublished(broker_.sent[6].mid, 0);
  EXPECT_EQ(Segments().size(), 4u);
  outbox->OnPublished(broker_.sent[4].mid, 0);
  outbox->OnPublished(broker_.sent[5].mid, 0);
  EXPECT_EQ(Segments().size(), 1u) << "only the one being appended to, with 8 pending";
  outbox->OnPublished(broker_.sent[7].mid, 0);
  EXPECT_EQ(Segments().size(), 1u) << "small: kept for the next appends";
  outbox.reset();
  EXPECT_TRUE(Segments().empty());
  EXPECT_EQ(framed_log::ReadWholeFile(dir_ / "done").size(), 8u);
}

TEST_F(ActionOutboxTest, TheDoneMarkKeepsUpWhileBusySoACrashResendsLittle) {
  auto outbox = Open();
  ASSERT_NE(outbox, nullptr);
  for (int i = 1; i <= 70; ++i) {
    ASSERT_TRUE(outbox->Emit("t", std::to_string(i), "", 1, false).ok());
  }
  broker_.up = true;
  outbox->OnConnected();
  ASSERT_EQ(broker_.sent.size(), 70u);
  for (int i = 0; i < 69; ++i) outbox->OnPublished(broker_.sent[i].mid, 0);
  // The process dies now, without the destructor's last mark: what is on disk must already
  // cover most of the 69 acknowledged entries (at most 64 are re-sent).
  const std::string mark = framed_log::ReadWholeFile(dir_ / "done");
  ASSERT_EQ(mark.size(), 8u);
  const auto done = framed_log::Get<std::uint64_t>(mark.data());
  EXPECT_GE(done + 64, 69u);
  EXPECT_LE(done, 69u) << "never past an entry that is still pending";
}

TEST_F(ActionOutboxTest, AtMostMaxInFlightAreUnacknowledgedAtOnce) {
  OutboxOptions options;
  options.max_in_flight = 3;
  broker_.up = true;
  auto outbox = Open(options);
  ASSERT_NE(outbox, nullptr);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(outbox->Emit("t", std::to_string(i), "", 1, false).ok());
  EXPECT_EQ(broker_.sent.size(), 3u);
  // QoS 0 goes behind the waiting ones, not around them.
  ASSERT_TRUE(outbox->Emit("t", "q0", "", 0, false).ok());
  EXPECT_EQ(broker_.sent.size(), 3u);
  for (std::size_t i = 0; i < broker_.sent.size(); ++i) {
    outbox->OnPublished(broker_.sent[i].mid, 0);
  }
  EXPECT_EQ(SentPayloads(),
            (std::vector<std::string>{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "q0"}));
  EXPECT_EQ(outbox->pending_messages(), 0);
  EXPECT_EQ(outbox->replayed(), 0u) << "connected all along: nothing was replayed";
}

TEST_F(ActionOutboxTest, AFullOutboxRefusesWithTheReasonAndCountsIt) {
  OutboxOptions options;
  options.max_bytes = 4096;
  auto outbox = Open(options);
  ASSERT_NE(outbox, nullptr);
  const std::string payload(900, 'p');  // 931 bytes an entry: 4 fit in 4 KiB
  int accepted = 0;
  Status refused;
  for (int i = 0; i < 10 && refused.ok(); ++i) {
    refused = outbox->Emit("t", payload, "", 1, false);
    accepted += refused.ok();
  }
  EXPECT_EQ(accepted, 4);
  EXPECT_EQ(refused.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(refused.message().find("outbox is full"), std::string::npos) << refused.message();
  EXPECT_NE(refused.message().find("4 message(s)"), std::string::npos) << refused.message();
  EXPECT_NE(refused.message().find("mqtt://test:1883 has been unreachable"), std::string::npos)
      << refused.message();
  EXPECT_EQ(outbox->rejected(), 1u);
  EXPECT_EQ(outbox->pending_messages(), 4);
  // Once the broker takes them there is room again.
  broker_.up = true;
  outbox->OnConnected();
  for (const auto& s : broker_.sent) outbox->OnPublished(s.mid, 0);
  EXPECT_TRUE(outbox->Emit("t", payload, "", 1, false).ok());
}

TEST_F(ActionOutboxTest, AnUnsendableEntryIsDroppedLoudlyAndDoesNotBlockTheRest) {
  auto outbox = Open();
  ASSERT_NE(outbox, nullptr);
  ASSERT_TRUE(outbox->Emit("bad/#", "x", "", 1, false).ok());  // queued: checked when sent
  ASSERT_TRUE(outbox->Emit("good", "y", "", 1, false).ok());
  broker_.up = true;
  outbox->OnConnected();
  EXPECT_EQ(SentPayloads(), (std::vector<std::string>{"y"}));
  EXPECT_EQ(outbox->rejected(), 1u);
  EXPECT_EQ(outbox->pending_messages(), 1);
}

}  // namespace
}  // namespace wisp
