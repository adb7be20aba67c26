// The event archive's on-disk format and the parsing of the times a query names.
//
// A segment file is an 8-byte header ("WISPAR" + format version 1 + '\n') followed by
// records. A record is a frame:
//
//   u32 body length | u32 CRC32C of (version byte + body) | u8 version | body
//
// (integers little-endian). The body is a fixed part (time, kind, trigger, status, qos, event
// id, duration, payload size) and four length-prefixed strings (function, target, error,
// preview). The CRC makes a torn or bit-flipped record detectable; a reader stops at the first
// record that fails and never trusts a length it has not bounded.
//
// Everything here is a pure function of its inputs, linked into the fuzz target
// fuzz/archive_segment_fuzz.cc without the rest of the node.
//
// Thread safety: pure functions and plain values.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "wisp/status.h"

namespace wisp {

enum class ArchiveKind : std::uint8_t { kEvent = 0, kAction = 1, kDeadLetter = 2 };
std::string_view ArchiveKindName(ArchiveKind kind);  // "event", "action", "dead_letter"
// InvalidArgument naming the accepted kinds for anything else.
Result<ArchiveKind> ParseArchiveKind(std::string_view name);

// One archived record, as decoded: views point into the bytes given to the decoder.
struct ArchiveRecord {
  std::int64_t time_us = 0;  // Unix microseconds when the record was written
  ArchiveKind kind = ArchiveKind::kEvent;
  std::uint8_t trigger = 0;  // TriggerKind of the event (of the event that emitted, for actions)
  std::uint8_t status = 0;   // StatusCode: 0 ok, else the error's kind
  std::uint8_t qos = 0;      // MQTT messages and actions
  std::uint64_t event_id = 0;
  std::uint32_t duration_us = 0;   // events: how long the function ran
  std::uint32_t payload_size = 0;  // the whole payload's size; preview holds its first bytes
  std::string_view function;
  std::string_view target;  // MQTT topic (events, actions, dead letters) or HTTP path
  std::string_view error;   // the error's message, empty when ok
  std::string_view preview;
};

inline constexpr std::string_view kSegmentMagic{"WISPAR\x01\n", 8};
inline constexpr std::size_t kFrameHeaderBytes = 9;  // length, CRC, version
inline constexpr std::uint8_t kRecordVersion = 1;
// A body longer than this is corruption: the writer cuts every string well below it.
inline constexpr std::uint32_t kMaxRecordBodyBytes = 1u << 20;
// What the writer keeps of each string at most (the preview has its own, configured limit).
inline constexpr std::size_t kMaxTargetBytes = 1024;
inline constexpr std::size_t kMaxErrorBytes = 512;
inline constexpr std::size_t kMaxPreviewBytes = 64 << 10;

// CRC32C (Castagnoli), software table.
std::uint32_t Crc32c(std::string_view bytes, std::uint32_t crc = 0);

// Appends the framed record to `out`; strings longer than the limits above are cut.
void EncodeRecord(const ArchiveRecord& record, std::string* out);

enum class DecodeOutcome {
  kRecord,     // *record and *next are set
  kEnd,        // no bytes left
  kTruncated,  // the bytes end inside a frame: a torn write, or one still being written
  kCorrupt,    // a bad length, CRC, version or body
};

// Decodes the record at `offset` of a segment's bytes (offset >= header size). Never reads
// outside `segment`; *record's views point into it.
DecodeOutcome DecodeRecord(std::string_view segment, std::size_t offset, ArchiveRecord* record,
                           std::size_t* next);

// True when `segment` starts with the header.
bool HasSegmentHeader(std::string_view segment);

struct SegmentScan {
  std::size_t records = 0;
  std::size_t end = 0;  // offset after the last good record
  DecodeOutcome stopped_by = DecodeOutcome::kEnd;
};
// Calls `visit(record, offset)` for each good record from `offset`, in order, and stops at the
// end or at the first bad record; `visit` returns false to stop early. A segment without the
// header yields no record and counts as corrupt.
SegmentScan ScanSegment(std::string_view segment, std::size_t offset,
                        const std::function<bool(const ArchiveRecord&, std::size_t)>& visit);

// A duration with unit ms, s, m, h or d ("90s", "7d", "1.5h"); a bare number is seconds.
Result<std::chrono::milliseconds> ParseArchiveDuration(std::string_view text);

// A point in time as a query names it: RFC 3339 ("2026-11-29T17:00:00Z", fraction and
// "+01:00" offsets allowed), "now", or a duration ago ("5m", "1h", "2d"; also "-5m").
// InvalidArgument with examples for anything else.
Result<std::chrono::system_clock::time_point> ParseArchiveTime(
    std::string_view text, std::chrono::system_clock::time_point now);

// "2026-11-29T17:00:00.123Z" (UTC, milliseconds).
std::string FormatArchiveTime(std::int64_t time_us);

}  // namespace wisp
