// The protobuf wire format, read and written by hand: wisp's ONNX reader (onnx_info.cc) and
// the model rewrites a backend needs (onnx_rewrite.cc) use it instead of linking protobuf and
// ONNX's generated classes. Internal to src/inference. Readers never read past the bytes they
// are given and report truncation as InvalidArgument; nothing here allocates per field.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "wisp/status.h"

namespace wisp::protobuf {

// Protobuf wire types.
inline constexpr int kVarint = 0;
inline constexpr int kFixed64 = 1;
inline constexpr int kLengthDelimited = 2;
inline constexpr int kFixed32 = 5;

// Nested messages are read depth-first; ONNX graphs read here nest at most 6 deep.
struct Field {
  std::uint32_t number = 0;
  int wire_type = 0;
  std::uint64_t varint = 0;
  std::string_view bytes;  // for length-delimited fields
  std::string_view raw;    // the whole field as encoded, key included (to copy it unchanged)
};

class WireReader {
 public:
  explicit WireReader(std::string_view bytes) : rest_(bytes) {}

  bool done() const { return rest_.empty(); }

  // The next field, or an error when the bytes end mid-field or use a group wire type.
  Result<Field> Next() {
    const std::string_view start = rest_;
    ASSIGN_OR_RETURN(Field field, ReadField());
    field.raw = start.substr(0, start.size() - rest_.size());
    return field;
  }

 private:
  Result<Field> ReadField() {
    Field field;
    auto key = ReadVarint();
    if (!key) return InvalidArgument("not an ONNX model: truncated field key");
    field.number = static_cast<std::uint32_t>(*key >> 3);
    field.wire_type = static_cast<int>(*key & 7);
    if (field.number == 0) return InvalidArgument("not an ONNX model: field number 0");
    switch (field.wire_type) {
      case kVarint: {
        auto v = ReadVarint();
        if (!v) return InvalidArgument("not an ONNX model: truncated varint");
        field.varint = *v;
        return field;
      }
      case kFixed64:
        if (!Skip(8)) return InvalidArgument("not an ONNX model: truncated fixed64");
        return field;
      case kFixed32:
        if (!Skip(4)) return InvalidArgument("not an ONNX model: truncated fixed32");
        return field;
      case kLengthDelimited: {
        auto length = ReadVarint();
        if (!length || *length > rest_.size()) {
          return InvalidArgument("not an ONNX model: truncated length-delimited field");
        }
        field.bytes = rest_.substr(0, *length);
        rest_.remove_prefix(*length);
        return field;
      }
      default:
        return InvalidArgument(
            fmt::format("not an ONNX model: unsupported wire type {}", field.wire_type));
    }
  }

  std::optional<std::uint64_t> ReadVarint() {
    std::uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (rest_.empty()) return std::nullopt;
      auto byte = static_cast<std::uint8_t>(rest_.front());
      rest_.remove_prefix(1);
      value |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return value;
    }
    return std::nullopt;  // more than 10 bytes: not a varint
  }
  bool Skip(std::size_t n) {
    if (rest_.size() < n) return false;
    rest_.remove_prefix(n);
    return true;
  }

  std::string_view rest_;
};

// Calls `on_field` for every field of the message in `bytes`; stops at the first error.
template <typename OnField>
Status ForEachField(std::string_view bytes, OnField on_field) {
  WireReader reader(bytes);
  while (!reader.done()) {
    ASSIGN_OR_RETURN(Field field, reader.Next());
    RETURN_IF_ERROR(on_field(field));
  }
  return Status::Ok();
}

// ONNX TensorProto.DataType numbers, for messages.

// Writers: append an encoded key, varint or field to `out`.
inline void AppendVarint(std::string& out, std::uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}
inline void AppendVarintField(std::string& out, std::uint32_t number, std::uint64_t value) {
  AppendVarint(out, (static_cast<std::uint64_t>(number) << 3) | kVarint);
  AppendVarint(out, value);
}
inline void AppendBytesField(std::string& out, std::uint32_t number, std::string_view bytes) {
  AppendVarint(out, (static_cast<std::uint64_t>(number) << 3) | kLengthDelimited);
  AppendVarint(out, bytes.size());
  out.append(bytes);
}

}  // namespace wisp::protobuf
