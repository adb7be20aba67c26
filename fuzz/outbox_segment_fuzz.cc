// Fuzzes the action outbox's segment decoding (src/node/outbox_format.cc): arbitrary bytes as a
// segment file must never crash the reader, and every entry it accepts must encode back to an
// entry that decodes to the same message.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "node/outbox_format.h"

namespace {

bool Same(const wisp::OutboxMessage& a, const wisp::OutboxMessage& b) {
  return a.seq == b.seq && a.topic == b.topic && a.payload == b.payload &&
         a.content_type == b.content_type && a.qos == b.qos && a.retain == b.retain &&
         a.emitted_at_us == b.emitted_at_us;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);

  // As a whole segment: what Open() does with a file it finds.
  std::size_t valid = 0;
  for (const wisp::OutboxMessage& message : wisp::DecodeOutboxSegment(bytes, &valid)) {
    if (message.qos < 0 || message.qos > 2) std::abort();
    std::string again;
    wisp::EncodeOutboxEntry(message, &again);
    wisp::OutboxMessage decoded;
    std::size_t next = 0;
    if (!wisp::DecodeOutboxEntry(again, 0, &decoded, &next) || next != again.size() ||
        !Same(decoded, message)) {
      std::abort();  // an accepted entry must survive a round trip
    }
  }
  if (valid > size) std::abort();

  // As entries at any offset.
  for (std::size_t offset = 0; offset < size && offset < 64; ++offset) {
    wisp::OutboxMessage message;
    std::size_t next = 0;
    if (wisp::DecodeOutboxEntry(bytes, offset, &message, &next) &&
        (next <= offset || next > size)) {
      std::abort();
    }
  }
  return 0;
}
