// The framed protocol between wispd and a process function (docs/process-protocol.md).
//
// A frame is a 4-byte big-endian length N, then N bytes: a type byte and a sequence of fields.
// A field is a tag byte, a 4-byte big-endian length L and L bytes. Numbers travel as decimal
// text. Fields keep their order, and a tag may repeat (header name/value pairs).
//
// This file depends on the standard library and wisp/status.h only, so the fuzz target
// (fuzz/process_frame_fuzz.cc) can compile it without the node. FrameDecoder reads bytes from
// the process, which are untrusted: any input gives a frame, "need more" or an error, never a
// crash, and memory stays bounded by the maximum frame size.
//
// Thread safety: plain values; a FrameDecoder is used by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "wisp/status.h"

namespace wisp::process {

enum class FrameType : std::uint8_t {
  kReady = 1,   // process -> node: the handler loaded; no fields
  kInvoke = 2,  // node -> process: one event
  kReply = 3,   // process -> node: the answer to the invoke in progress
  kError = 4,   // process -> node: the handler raised, or failed to load (kind, message)
  kCall = 5,    // process -> node: a host call (state, log, emit) during an invoke
  kResult = 6,  // node -> process: the answer to the last host call
};

enum class Tag : std::uint8_t {
  kMethod = 1,
  kPath = 2,
  kQuery = 3,
  kHeaderName = 4,  // followed by kHeaderValue
  kHeaderValue = 5,
  kContentType = 6,
  kBody = 7,     // request/reply body, emit payload
  kTrigger = 8,  // "http" | "mqtt" | "timer"
  kTopic = 9,
  kId = 10,         // the event id, hex
  kTimestamp = 11,  // seconds since the epoch, decimal with a fraction
  kStatus = 12,     // HTTP status of a reply, decimal
  kKind = 13,       // error kind ("function", "memory", "load"; a Status kind in a kResult)
  kMessage = 14,    // error or log text
  kOp = 15,         // host call: state.get | state.put | state.incr | state.delete | log | emit
  kKey = 16,
  kValue = 17,  // state value; in a kResult the value returned (absent: none)
  kTtlMs = 18,
  kDelta = 19,
  kLevel = 20,  // debug | info | warn | error
  kQos = 21,
  kRetain = 22,  // "1" or "0"
};

// The largest frame body either side may send (and the decoder accepts): 16 MiB.
inline constexpr std::size_t kMaxFrameBytes = 16u << 20;

struct Field {
  Tag tag;
  std::string value;
};

struct Frame {
  FrameType type = FrameType::kReady;
  std::vector<Field> fields;

  void Add(Tag tag, std::string_view value) { fields.push_back({tag, std::string(value)}); }
  // The first field with `tag`, or nullptr.
  const std::string* Find(Tag tag) const;
  // The value of the first field with `tag`, or `fallback`.
  std::string_view Get(Tag tag, std::string_view fallback = {}) const;
};

// Appends the encoded frame to `out`. InvalidArgument when it would exceed kMaxFrameBytes.
Status EncodeFrame(const Frame& frame, std::string* out);

// Splits a byte stream into frames.
class FrameDecoder {
 public:
  // Appends bytes read from the stream.
  void Feed(std::string_view bytes) { buffer_.append(bytes); }

  // The next complete frame, std::nullopt when more bytes are needed, or InvalidArgument for a
  // frame that is too large, of an unknown type, has an unknown tag or a field running past its
  // end. After an error the stream is out of step: the caller must drop it.
  Result<std::optional<Frame>> Next();

  // Bytes received but not yet returned as frames.
  std::size_t buffered() const { return buffer_.size() - consumed_; }

 private:
  std::string buffer_;
  std::size_t consumed_ = 0;
};

}  // namespace wisp::process
