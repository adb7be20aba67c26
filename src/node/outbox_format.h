// The action outbox's on-disk format (src/node/action_outbox.h): pure encoding and decoding,
// linked into fuzz/outbox_segment_fuzz.cc without the rest of the node.
//
// A segment file is "WISPOB\x01\n" followed by entries, each a frame of src/node/framed_log.h
// whose body is
//
//   u64 seq | u8 qos | u8 retain | i64 emitted at (Unix us) | u16 topic length |
//   u16 content type length | topic | content type | payload (the rest)
//
// Thread safety: pure functions and plain values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace wisp {

inline constexpr std::string_view kOutboxMagic{"WISPOB\x01\n", 8};

// One emitted MQTT message waiting for the broker.
struct OutboxMessage {
  std::uint64_t seq = 0;  // the outbox's order: replayed by ascending seq
  std::string topic;
  std::string payload;
  std::string content_type;  // MQTT 5 Content Type; empty for none
  int qos = 0;
  bool retain = false;
  std::int64_t emitted_at_us = 0;  // Unix microseconds
};

// Appends `message` as one framed entry to `out`. Topic and content type longer than 65535
// bytes are cut (MQTT allows no longer topic).
void EncodeOutboxEntry(const OutboxMessage& message, std::string* out);

// Decodes the entry at `offset`; false at the end, on a torn tail, a bad checksum or a bad
// body. Never reads outside `bytes`.
bool DecodeOutboxEntry(std::string_view bytes, std::size_t offset, OutboxMessage* message,
                       std::size_t* next);

// Every whole entry of a segment's bytes, in file order; *valid_bytes is where decoding
// stopped (bytes.size() when the whole segment is good). Empty for a missing header.
std::vector<OutboxMessage> DecodeOutboxSegment(std::string_view bytes, std::size_t* valid_bytes);

}  // namespace wisp
