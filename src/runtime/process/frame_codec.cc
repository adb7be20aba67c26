#include "runtime/process/frame_codec.h"

#include <string>

namespace wisp::process {
namespace {

constexpr std::size_t kLengthBytes = 4;
constexpr std::size_t kFieldHeaderBytes = 1 + kLengthBytes;

void PutU32(std::uint32_t v, std::string* out) {
  const char bytes[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                         static_cast<char>(v >> 8), static_cast<char>(v)};
  out->append(bytes, 4);
}

std::uint32_t GetU32(const char* p) {
  auto b = [p](int i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(p[i])); };
  return (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
}

bool IsKnownType(std::uint8_t t) {
  return t >= static_cast<std::uint8_t>(FrameType::kReady) &&
         t <= static_cast<std::uint8_t>(FrameType::kResult);
}

bool IsKnownTag(std::uint8_t t) {
  return t >= static_cast<std::uint8_t>(Tag::kMethod) &&
         t <= static_cast<std::uint8_t>(Tag::kRetain);
}

}  // namespace

const std::string* Frame::Find(Tag tag) const {
  for (const Field& f : fields) {
    if (f.tag == tag) return &f.value;
  }
  return nullptr;
}

std::string_view Frame::Get(Tag tag, std::string_view fallback) const {
  const std::string* v = Find(tag);
  return v ? std::string_view(*v) : fallback;
}

Status EncodeFrame(const Frame& frame, std::string* out) {
  std::size_t size = 1;
  for (const Field& f : frame.fields) {
    if (f.value.size() > kMaxFrameBytes) return InvalidArgument("frame field too large");
    size += kFieldHeaderBytes + f.value.size();
  }
  if (size > kMaxFrameBytes) {
    return InvalidArgument("frame of " + std::to_string(size) + " bytes is over the limit of " +
                           std::to_string(kMaxFrameBytes));
  }
  out->reserve(out->size() + kLengthBytes + size);
  PutU32(static_cast<std::uint32_t>(size), out);
  out->push_back(static_cast<char>(frame.type));
  for (const Field& f : frame.fields) {
    out->push_back(static_cast<char>(f.tag));
    PutU32(static_cast<std::uint32_t>(f.value.size()), out);
    out->append(f.value);
  }
  return Status::Ok();
}

Result<std::optional<Frame>> FrameDecoder::Next() {
  // Drop consumed bytes once they dominate, so the buffer does not grow without bound.
  if (consumed_ > 0 && consumed_ * 2 >= buffer_.size()) {
    buffer_.erase(0, consumed_);
    consumed_ = 0;
  }
  const std::size_t available = buffer_.size() - consumed_;
  if (available < kLengthBytes) return std::optional<Frame>();
  const char* start = buffer_.data() + consumed_;
  const std::uint32_t size = GetU32(start);
  if (size == 0) return InvalidArgument("empty frame (no type byte)");
  if (size > kMaxFrameBytes) {
    return InvalidArgument("frame of " + std::to_string(size) + " bytes is over the limit of " +
                           std::to_string(kMaxFrameBytes));
  }
  if (available - kLengthBytes < size) return std::optional<Frame>();

  const char* p = start + kLengthBytes;
  const char* end = p + size;
  const auto type = static_cast<std::uint8_t>(*p++);
  if (!IsKnownType(type)) return InvalidArgument("unknown frame type " + std::to_string(type));
  Frame frame;
  frame.type = static_cast<FrameType>(type);
  while (p < end) {
    if (static_cast<std::size_t>(end - p) < kFieldHeaderBytes) {
      return InvalidArgument("truncated field header in frame");
    }
    const auto tag = static_cast<std::uint8_t>(*p);
    if (!IsKnownTag(tag)) return InvalidArgument("unknown field tag " + std::to_string(tag));
    const std::uint32_t length = GetU32(p + 1);
    p += kFieldHeaderBytes;
    if (length > static_cast<std::size_t>(end - p)) {
      return InvalidArgument("field of " + std::to_string(length) + " bytes runs past its frame");
    }
    frame.fields.push_back({static_cast<Tag>(tag), std::string(p, length)});
    p += length;
  }
  consumed_ += kLengthBytes + size;
  return std::optional<Frame>(std::move(frame));
}

}  // namespace wisp::process
