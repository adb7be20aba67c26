// Helpers shared by the node's append-only logs (the MQTT journal, the action outbox): integer
// encoding, the CRC32C frame around each entry, and the file I/O both do the same way.
//
// Frame: u32 body length | u32 CRC32C of the body | body (integers little-endian). A reader
// stops at the first frame that is cut short (a torn write: the process died inside write(2))
// or whose checksum fails, and never trusts a length it has not bounded.
//
// Threads: pure functions; WriteAll on one fd from one thread at a time.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

#include "archive/archive_format.h"  // Crc32c
#include "wisp/status.h"

namespace wisp::framed_log {

inline constexpr std::size_t kFrameBytes = 8;  // u32 body length, u32 CRC32C of the body

template <typename Int>
void Put(std::string* out, Int value) {
  for (std::size_t i = 0; i < sizeof(Int); ++i) {
    out->push_back(static_cast<char>((static_cast<std::uint64_t>(value) >> (8 * i)) & 0xff));
  }
}

template <typename Int>
Int Get(const char* p) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < sizeof(Int); ++i) {
    v |= static_cast<std::uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  }
  return static_cast<Int>(v);
}

// Reserves the frame header in `out`; returns where the frame starts, for EndFrame.
inline std::size_t BeginFrame(std::string* out) {
  const std::size_t start = out->size();
  out->append(kFrameBytes, '\0');
  return start;
}

// Fills in the length and CRC of the frame begun at `start`, whose body is the rest of `out`.
inline void EndFrame(std::string* out, std::size_t start) {
  const std::size_t body_size = out->size() - start - kFrameBytes;
  const std::uint32_t crc = Crc32c(std::string_view(*out).substr(start + kFrameBytes, body_size));
  for (std::size_t i = 0; i < 4; ++i) {
    (*out)[start + i] = static_cast<char>((body_size >> (8 * i)) & 0xff);
    (*out)[start + 4 + i] = static_cast<char>((crc >> (8 * i)) & 0xff);
  }
}

// The body of the frame at `offset`, if whole, with a length in [min_body, max_body] and a
// matching CRC; *next is where the following frame starts. False otherwise (the end, a torn
// tail, damage). Never reads outside `bytes`.
inline bool ReadFrame(std::string_view bytes, std::size_t offset, std::size_t min_body,
                      std::size_t max_body, std::string_view* body, std::size_t* next) {
  if (offset > bytes.size() || bytes.size() - offset < kFrameBytes) return false;
  const char* p = bytes.data() + offset;
  const auto body_size = Get<std::uint32_t>(p);
  const auto crc = Get<std::uint32_t>(p + 4);
  if (body_size < min_body || body_size > max_body) return false;
  if (bytes.size() - offset - kFrameBytes < body_size) return false;  // torn tail
  *body = bytes.substr(offset + kFrameBytes, body_size);
  if (Crc32c(*body) != crc) return false;
  *next = offset + kFrameBytes + body_size;
  return true;
}

// write(2) until all of `bytes` is written; IoError naming `path` (prefixed by `who`).
inline Status WriteAll(int fd, std::string_view bytes, const std::string& path,
                       std::string_view who) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError(std::string(who) + ": cannot write " + path + ": " + std::strerror(errno));
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return Status::Ok();
}

// The whole file; empty when it cannot be read.
inline std::string ReadWholeFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// "123<extension>" -> 123; 0 for any other name.
inline std::uint64_t SegmentFirstSeq(const std::filesystem::path& path,
                                     std::string_view extension) {
  if (path.extension() != extension) return 0;
  const std::string stem = path.stem().string();
  if (stem.empty() || stem.size() > 19) return 0;
  std::uint64_t value = 0;
  for (char c : stem) {
    if (c < '0' || c > '9') return 0;
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return value;
}

}  // namespace wisp::framed_log
