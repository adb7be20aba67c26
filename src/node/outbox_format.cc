#include "node/outbox_format.h"

#include <algorithm>

#include "node/framed_log.h"

namespace wisp {
namespace {

using framed_log::Get;
using framed_log::Put;

// seq, qos, retain, time, topic length, content type length
constexpr std::size_t kFixedBodyBytes = 8 + 1 + 1 + 8 + 2 + 2;
constexpr std::size_t kMaxEntryBytes = 300u << 20;  // > the largest MQTT payload (256 MiB)

}  // namespace

void EncodeOutboxEntry(const OutboxMessage& message, std::string* out) {
  const std::size_t topic = std::min<std::size_t>(message.topic.size(), 0xffff);
  const std::size_t ct = std::min<std::size_t>(message.content_type.size(), 0xffff);
  const std::size_t start = framed_log::BeginFrame(out);
  Put<std::uint64_t>(out, message.seq);
  out->push_back(static_cast<char>(message.qos));
  out->push_back(static_cast<char>(message.retain ? 1 : 0));
  Put<std::int64_t>(out, message.emitted_at_us);
  Put<std::uint16_t>(out, static_cast<std::uint16_t>(topic));
  Put<std::uint16_t>(out, static_cast<std::uint16_t>(ct));
  out->append(message.topic, 0, topic);
  out->append(message.content_type, 0, ct);
  out->append(message.payload);
  framed_log::EndFrame(out, start);
}

bool DecodeOutboxEntry(std::string_view bytes, std::size_t offset, OutboxMessage* message,
                       std::size_t* next) {
  std::string_view body;
  std::size_t end = 0;
  if (!framed_log::ReadFrame(bytes, offset, kFixedBodyBytes, kMaxEntryBytes, &body, &end)) {
    return false;
  }
  const char* b = body.data();
  const std::size_t topic = Get<std::uint16_t>(b + 18);
  const std::size_t ct = Get<std::uint16_t>(b + 20);
  if (kFixedBodyBytes + topic + ct > body.size()) return false;
  const int qos = static_cast<unsigned char>(b[8]);
  if (qos > 2) return false;  // the writer never writes one: damage that the CRC let through
  message->seq = Get<std::uint64_t>(b);
  message->qos = qos;
  message->retain = b[9] != 0;
  message->emitted_at_us = Get<std::int64_t>(b + 10);
  std::size_t at = kFixedBodyBytes;
  message->topic.assign(body.substr(at, topic));
  at += topic;
  message->content_type.assign(body.substr(at, ct));
  at += ct;
  message->payload.assign(body.substr(at));
  *next = end;
  return true;
}

std::vector<OutboxMessage> DecodeOutboxSegment(std::string_view bytes, std::size_t* valid_bytes) {
  std::vector<OutboxMessage> messages;
  *valid_bytes = 0;
  if (!bytes.starts_with(kOutboxMagic)) return messages;
  std::size_t offset = kOutboxMagic.size();
  OutboxMessage message;
  std::size_t next = 0;
  while (DecodeOutboxEntry(bytes, offset, &message, &next)) {
    messages.push_back(std::move(message));
    offset = next;
  }
  *valid_bytes = offset;
  return messages;
}

}  // namespace wisp
