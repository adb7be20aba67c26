// Fuzzes the event archive's segment decoding (src/archive/archive_format.cc): arbitrary bytes
// as a segment file must never crash the reader, every record it accepts must re-encode to the
// same bytes, and the query time parser must take any text.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "archive/archive_format.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);

  // As a whole segment: the reader's path.
  wisp::ScanSegment(bytes, 0, [&](const wisp::ArchiveRecord& record, std::size_t offset) {
    (void)wisp::FormatArchiveTime(record.time_us);
    (void)wisp::ArchiveKindName(record.kind);
    std::string again;
    wisp::EncodeRecord(record, &again);
    const std::string_view original = bytes.substr(offset, again.size());
    if (record.target.size() <= wisp::kMaxTargetBytes &&
        record.error.size() <= wisp::kMaxErrorBytes &&
        record.preview.size() <= wisp::kMaxPreviewBytes && original != again) {
      std::abort();  // a record that decodes must encode to the same frame
    }
    return true;
  });

  // As frames at any offset, as a cursor may point the reader anywhere.
  for (std::size_t offset = 0; offset < size && offset < 64; ++offset) {
    wisp::ArchiveRecord record;
    std::size_t next = 0;
    if (wisp::DecodeRecord(bytes, offset, &record, &next) == wisp::DecodeOutcome::kRecord &&
        (next <= offset || next > size)) {
      std::abort();
    }
  }

  // As query text: times and kinds from a URL.
  if (size <= 256) {
    (void)wisp::ParseArchiveTime(bytes, std::chrono::system_clock::now());
    (void)wisp::ParseArchiveKind(bytes);
  }
  return 0;
}
