#include "archive/archive_format.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>

#include <fmt/format.h>

namespace wisp {
namespace {

constexpr std::array<std::uint32_t, 256> MakeCrcTable() {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr auto kCrcTable = MakeCrcTable();

// Fixed part of a body: time 8, kind 1, trigger 1, status 1, qos 1, event id 8, duration 4,
// payload size 4.
constexpr std::size_t kFixedBodyBytes = 28;

void PutU16(std::string* out, std::uint16_t v) {
  out->push_back(static_cast<char>(v & 0xff));
  out->push_back(static_cast<char>(v >> 8));
}
void PutU32(std::string* out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutU64(std::string* out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutString16(std::string* out, std::string_view s, std::size_t limit) {
  s = s.substr(0, std::min<std::size_t>(limit, 0xffff));
  PutU16(out, static_cast<std::uint16_t>(s.size()));
  out->append(s);
}
void PutString32(std::string* out, std::string_view s, std::size_t limit) {
  s = s.substr(0, limit);
  PutU32(out, static_cast<std::uint32_t>(s.size()));
  out->append(s);
}

std::uint64_t GetLE(std::string_view bytes, std::size_t at, int width) {
  std::uint64_t v = 0;
  for (int i = 0; i < width; ++i) {
    v |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[at + i])) << (8 * i);
  }
  return v;
}

// Reads bodies field by field; any read past the end marks the body bad.
class BodyReader {
 public:
  explicit BodyReader(std::string_view body) : body_(body) {}
  std::uint64_t Int(int width) {
    if (!Have(width)) return 0;
    const std::uint64_t v = GetLE(body_, at_, width);
    at_ += width;
    return v;
  }
  std::string_view String(int length_width) {
    const std::size_t length = Int(length_width);
    if (!Have(length)) return {};
    std::string_view s = body_.substr(at_, length);
    at_ += length;
    return s;
  }
  bool good() const { return good_; }
  bool done() const { return at_ == body_.size(); }

 private:
  bool Have(std::size_t n) {
    if (!good_ || body_.size() - at_ < n) good_ = false;
    return good_;
  }
  std::string_view body_;
  std::size_t at_ = 0;
  bool good_ = true;
};

bool ParseDigits(std::string_view s, int* out) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

// RFC 3339: YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM); 't'/'z' and a space for 'T' too.
bool ParseRfc3339(std::string_view s, std::chrono::system_clock::time_point* out) {
  if (s.size() < 20 || s[4] != '-' || s[7] != '-' || s[13] != ':' || s[16] != ':') return false;
  if (s[10] != 'T' && s[10] != 't' && s[10] != ' ') return false;
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (!ParseDigits(s.substr(0, 4), &year) || !ParseDigits(s.substr(5, 2), &month) ||
      !ParseDigits(s.substr(8, 2), &day) || !ParseDigits(s.substr(11, 2), &hour) ||
      !ParseDigits(s.substr(14, 2), &minute) || !ParseDigits(s.substr(17, 2), &second)) {
    return false;
  }
  std::size_t at = 19;
  std::int64_t micros = 0;
  if (at < s.size() && s[at] == '.') {
    ++at;
    int digits = 0;
    while (at < s.size() && s[at] >= '0' && s[at] <= '9') {
      if (digits < 6) micros = micros * 10 + (s[at] - '0');
      ++digits;
      ++at;
    }
    if (digits == 0) return false;
    for (int d = digits; d < 6; ++d) micros *= 10;
  }
  std::int64_t offset_minutes = 0;
  std::string_view zone = s.substr(at);
  if (zone == "Z" || zone == "z") {
    offset_minutes = 0;
  } else if (zone.size() == 6 && (zone[0] == '+' || zone[0] == '-') && zone[3] == ':') {
    int oh = 0, om = 0;
    if (!ParseDigits(zone.substr(1, 2), &oh) || !ParseDigits(zone.substr(4, 2), &om) || oh > 23 ||
        om > 59) {
      return false;
    }
    offset_minutes = (oh * 60 + om) * (zone[0] == '-' ? -1 : 1);
  } else {
    return false;
  }
  using namespace std::chrono;
  const year_month_day date{std::chrono::year{year},
                            std::chrono::month{static_cast<unsigned>(month)},
                            std::chrono::day{static_cast<unsigned>(day)}};
  // system_clock counts nanoseconds in 64 bits: years 1678-2261. Keep well inside.
  if (!date.ok() || year < 1900 || year > 2200 || hour > 23 || minute > 59 || second > 60) {
    return false;
  }
  const auto t = sys_days{date} + hours{hour} + minutes{minute} + seconds{second} +
                 microseconds{micros} - minutes{offset_minutes};
  *out = time_point_cast<system_clock::duration>(t);
  return true;
}

}  // namespace

std::string_view ArchiveKindName(ArchiveKind kind) {
  switch (kind) {
    case ArchiveKind::kEvent:
      return "event";
    case ArchiveKind::kAction:
      return "action";
    case ArchiveKind::kDeadLetter:
      return "dead_letter";
  }
  return "unknown";
}

Result<ArchiveKind> ParseArchiveKind(std::string_view name) {
  if (name == "event") return ArchiveKind::kEvent;
  if (name == "action") return ArchiveKind::kAction;
  if (name == "dead_letter") return ArchiveKind::kDeadLetter;
  return InvalidArgument(
      fmt::format("kind '{}' is not one of event, action, dead_letter", name.substr(0, 64)));
}

std::uint32_t Crc32c(std::string_view bytes, std::uint32_t crc) {
  crc = ~crc;
  for (unsigned char b : bytes) crc = kCrcTable[(crc ^ b) & 0xff] ^ (crc >> 8);
  return ~crc;
}

void EncodeRecord(const ArchiveRecord& r, std::string* out) {
  const std::size_t frame_at = out->size();
  out->append(kFrameHeaderBytes - 1, '\0');  // length and CRC, filled in below
  out->push_back(static_cast<char>(kRecordVersion));
  const std::size_t body_at = out->size();
  PutU64(out, static_cast<std::uint64_t>(r.time_us));
  out->push_back(static_cast<char>(r.kind));
  out->push_back(static_cast<char>(r.trigger));
  out->push_back(static_cast<char>(r.status));
  out->push_back(static_cast<char>(r.qos));
  PutU64(out, r.event_id);
  PutU32(out, r.duration_us);
  PutU32(out, r.payload_size);
  PutString16(out, r.function, 0xffff);
  PutString16(out, r.target, kMaxTargetBytes);
  PutString16(out, r.error, kMaxErrorBytes);
  PutString32(out, r.preview, kMaxPreviewBytes);
  const auto body_size = static_cast<std::uint32_t>(out->size() - body_at);
  const std::uint32_t crc =
      Crc32c(std::string_view(*out).substr(body_at - 1, std::size_t{body_size} + 1));
  for (int i = 0; i < 4; ++i) {
    (*out)[frame_at + i] = static_cast<char>((body_size >> (8 * i)) & 0xff);
    (*out)[frame_at + 4 + i] = static_cast<char>((crc >> (8 * i)) & 0xff);
  }
}

DecodeOutcome DecodeRecord(std::string_view segment, std::size_t offset, ArchiveRecord* record,
                           std::size_t* next) {
  if (offset >= segment.size()) return DecodeOutcome::kEnd;
  const std::size_t left = segment.size() - offset;
  if (left < kFrameHeaderBytes) return DecodeOutcome::kTruncated;
  const auto body_size = static_cast<std::uint32_t>(GetLE(segment, offset, 4));
  const auto crc = static_cast<std::uint32_t>(GetLE(segment, offset + 4, 4));
  if (body_size < kFixedBodyBytes || body_size > kMaxRecordBodyBytes) {
    return DecodeOutcome::kCorrupt;
  }
  if (left - kFrameHeaderBytes < body_size) return DecodeOutcome::kTruncated;
  const std::string_view versioned = segment.substr(offset + 8, std::size_t{body_size} + 1);
  if (Crc32c(versioned) != crc) return DecodeOutcome::kCorrupt;
  if (static_cast<std::uint8_t>(versioned[0]) != kRecordVersion) return DecodeOutcome::kCorrupt;

  BodyReader in(versioned.substr(1));
  ArchiveRecord r;
  r.time_us = static_cast<std::int64_t>(in.Int(8));
  const auto kind = static_cast<std::uint8_t>(in.Int(1));
  r.trigger = static_cast<std::uint8_t>(in.Int(1));
  r.status = static_cast<std::uint8_t>(in.Int(1));
  r.qos = static_cast<std::uint8_t>(in.Int(1));
  r.event_id = in.Int(8);
  r.duration_us = static_cast<std::uint32_t>(in.Int(4));
  r.payload_size = static_cast<std::uint32_t>(in.Int(4));
  r.function = in.String(2);
  r.target = in.String(2);
  r.error = in.String(2);
  r.preview = in.String(4);
  if (!in.good() || !in.done() || kind > static_cast<std::uint8_t>(ArchiveKind::kDeadLetter)) {
    return DecodeOutcome::kCorrupt;
  }
  r.kind = static_cast<ArchiveKind>(kind);
  *record = r;
  *next = offset + kFrameHeaderBytes + body_size;
  return DecodeOutcome::kRecord;
}

bool HasSegmentHeader(std::string_view segment) { return segment.starts_with(kSegmentMagic); }

SegmentScan ScanSegment(std::string_view segment, std::size_t offset,
                        const std::function<bool(const ArchiveRecord&, std::size_t)>& visit) {
  SegmentScan scan;
  if (!HasSegmentHeader(segment)) {
    scan.stopped_by = segment.size() < kSegmentMagic.size() && kSegmentMagic.starts_with(segment)
                          ? DecodeOutcome::kTruncated
                          : DecodeOutcome::kCorrupt;
    return scan;
  }
  offset = std::max(offset, kSegmentMagic.size());
  scan.end = offset;
  for (;;) {
    ArchiveRecord record;
    std::size_t next = 0;
    const DecodeOutcome outcome = DecodeRecord(segment, offset, &record, &next);
    if (outcome != DecodeOutcome::kRecord) {
      scan.stopped_by = outcome;
      return scan;
    }
    ++scan.records;
    const bool more = visit(record, offset);
    offset = next;
    scan.end = offset;
    if (!more) return scan;
  }
}

// 100 years: "that long ago" must still be a system_clock time (nanoseconds in 64 bits).
constexpr double kMaxDurationMs = 100 * 365.0 * 86'400'000;

Result<std::chrono::milliseconds> ParseArchiveDuration(std::string_view text) {
  std::string_view s = text;
  std::size_t end = 0;
  while (end < s.size() && ((s[end] >= '0' && s[end] <= '9') || s[end] == '.')) ++end;
  double number = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + end, number);
  const std::string_view unit = s.substr(end);
  double ms_per_unit = 0;
  if (unit == "ms")
    ms_per_unit = 1;
  else if (unit == "s" || unit.empty())
    ms_per_unit = 1000;
  else if (unit == "m")
    ms_per_unit = 60e3;
  else if (unit == "h")
    ms_per_unit = 3600e3;
  else if (unit == "d")
    ms_per_unit = 86400e3;
  if (end == 0 || ec != std::errc() || ptr != s.data() + end || ms_per_unit == 0 ||
      !std::isfinite(number) || number * ms_per_unit > kMaxDurationMs) {
    return InvalidArgument(
        fmt::format("'{}' is not a duration (examples: 90s, 15m, 1h, 7d)", text.substr(0, 64)));
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(number * ms_per_unit)));
}

Result<std::chrono::system_clock::time_point> ParseArchiveTime(
    std::string_view text, std::chrono::system_clock::time_point now) {
  if (text == "now") return now;
  std::chrono::system_clock::time_point t;
  if (ParseRfc3339(text, &t)) return t;
  std::string_view ago = text;
  if (ago.starts_with('-')) ago.remove_prefix(1);
  if (auto d = ParseArchiveDuration(ago); d.ok() && !ago.empty()) return now - *d;
  return InvalidArgument(fmt::format(
      "time '{}' is neither RFC 3339 (2026-11-29T17:00:00Z) nor a duration ago (90s, 15m, 1h, "
      "7d) nor 'now'",
      text.substr(0, 64)));
}

std::string FormatArchiveTime(std::int64_t time_us) {
  using namespace std::chrono;
  // Years 0001-9999: RFC 3339's range, and no overflow when the time came from a bad record.
  time_us = std::clamp<std::int64_t>(time_us, -62135596800'000000, 253402300799'999999);
  const sys_time<microseconds> t{microseconds{time_us}};
  const auto day = floor<days>(t);
  const year_month_day date{day};
  const hh_mm_ss clock{floor<milliseconds>(t - day)};
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", static_cast<int>(date.year()),
                     static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()),
                     clock.hours().count(), clock.minutes().count(), clock.seconds().count(),
                     clock.subseconds().count());
}

}  // namespace wisp
