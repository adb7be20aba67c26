// The framed protocol between wispd and process functions (src/runtime/process/frame_codec.h).
#include <gtest/gtest.h>

#include <string>

#include "runtime/process/frame_codec.h"

namespace wisp::process {
namespace {

Frame SampleReply() {
  Frame f;
  f.type = FrameType::kReply;
  f.Add(Tag::kStatus, "201");
  f.Add(Tag::kHeaderName, "x-a");
  f.Add(Tag::kHeaderValue, "1");
  f.Add(Tag::kHeaderName, "x-a");  // a tag may repeat, in order
  f.Add(Tag::kHeaderValue, "2");
  f.Add(Tag::kBody, std::string("bin\0ary\xff", 8));
  return f;
}

std::string Encode(const Frame& f) {
  std::string out;
  EXPECT_TRUE(EncodeFrame(f, &out).ok());
  return out;
}

TEST(ProcessFrameTest, RoundTripKeepsTypeFieldsAndOrder) {
  const std::string bytes = Encode(SampleReply()) + Encode(Frame{FrameType::kReady, {}});
  FrameDecoder decoder;
  decoder.Feed(bytes);
  auto first = decoder.Next();
  ASSERT_TRUE(first.ok() && first->has_value()) << first.status().ToString();
  const Frame& reply = **first;
  EXPECT_EQ(reply.type, FrameType::kReply);
  ASSERT_EQ(reply.fields.size(), 6u);
  EXPECT_EQ(reply.Get(Tag::kStatus), "201");
  EXPECT_EQ(reply.fields[4].value, "2");
  EXPECT_EQ(reply.Get(Tag::kBody), std::string("bin\0ary\xff", 8));
  EXPECT_EQ(reply.Find(Tag::kTopic), nullptr);
  auto second = decoder.Next();
  ASSERT_TRUE(second.ok() && second->has_value());
  EXPECT_EQ((*second)->type, FrameType::kReady);
  EXPECT_TRUE((*second)->fields.empty());
  auto none = decoder.Next();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  EXPECT_EQ(decoder.buffered(), 0u);
}

TEST(ProcessFrameTest, ByteAtATimeGivesTheSameFrame) {
  const std::string bytes = Encode(SampleReply());
  FrameDecoder decoder;
  for (std::size_t i = 0; i + 1 < bytes.size(); ++i) {
    decoder.Feed(bytes.substr(i, 1));
    auto next = decoder.Next();
    ASSERT_TRUE(next.ok());
    ASSERT_FALSE(next->has_value()) << "a frame before its last byte, at " << i;
  }
  decoder.Feed(bytes.substr(bytes.size() - 1));
  auto next = decoder.Next();
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ(Encode(**next), bytes);
}

TEST(ProcessFrameTest, TruncatedFrameWaitsForMore) {
  const std::string bytes = Encode(SampleReply());
  FrameDecoder decoder;
  decoder.Feed(bytes.substr(0, bytes.size() / 2));
  auto next = decoder.Next();
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->has_value());
  EXPECT_EQ(decoder.buffered(), bytes.size() / 2);
}

TEST(ProcessFrameTest, OversizedFrameIsRefusedBeforeItsBodyArrives) {
  FrameDecoder decoder;
  decoder.Feed(std::string("\x01\x00\x00\x01\x03", 5));  // 16 MiB + 1
  auto next = decoder.Next();
  ASSERT_FALSE(next.ok());
  EXPECT_EQ(next.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(next.status().message().find("over the limit"), std::string::npos);

  Frame huge{FrameType::kReply, {}};
  huge.Add(Tag::kBody, std::string(kMaxFrameBytes, 'x'));
  std::string out;
  EXPECT_EQ(EncodeFrame(huge, &out).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(out.empty());
}

TEST(ProcessFrameTest, GarbageIsAnErrorNotACrash) {
  struct Case {
    std::string bytes;
    const char* expected;
  };
  const Case cases[] = {
      {std::string("\x00\x00\x00\x00", 4), "empty frame"},
      {std::string("\x00\x00\x00\x01\x63", 5), "unknown frame type 99"},
      {std::string("\x00\x00\x00\x03\x03\x07\x00", 7), "truncated field header"},
      {std::string("\x00\x00\x00\x06\x03\xee\x00\x00\x00\x00", 10), "unknown field tag 238"},
      {std::string("\x00\x00\x00\x07\x03\x07\x00\x00\x00\x09z", 11), "runs past its frame"},
      {"GET / HTTP/1.1\r\n\r\n", "over the limit"},
  };
  for (const Case& c : cases) {
    FrameDecoder decoder;
    decoder.Feed(c.bytes);
    auto next = decoder.Next();
    ASSERT_FALSE(next.ok()) << c.expected;
    EXPECT_EQ(next.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(next.status().message().find(c.expected), std::string::npos)
        << next.status().message();
  }
}

}  // namespace
}  // namespace wisp::process
