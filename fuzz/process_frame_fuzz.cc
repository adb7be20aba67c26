// Fuzzes the decoder of frames a process function sends to wispd (src/runtime/process). Beyond
// "no crash", it checks that errors are InvalidArgument, that decoded frames re-encode to the
// exact bytes they came from, and that feeding the input in two pieces gives the same frames.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/process/frame_codec.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

// Decodes every frame of `pieces` fed in order; the encoded frames, and whether it failed.
std::vector<std::string> DecodeAll(const std::vector<std::string_view>& pieces, bool* failed) {
  wisp::process::FrameDecoder decoder;
  std::vector<std::string> frames;
  *failed = false;
  for (std::string_view piece : pieces) {
    decoder.Feed(piece);
    while (true) {
      auto next = decoder.Next();
      if (!next.ok()) {
        Check(next.status().code() == wisp::StatusCode::kInvalidArgument);
        *failed = true;
        return frames;
      }
      if (!next->has_value()) break;
      std::string encoded;
      Check(wisp::process::EncodeFrame(**next, &encoded).ok());
      frames.push_back(std::move(encoded));
    }
  }
  return frames;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  bool failed_whole = false, failed_split = false;
  std::vector<std::string> whole = DecodeAll({bytes}, &failed_whole);
  std::size_t cut = size == 0 ? 0 : data[0] % (size + 1);
  std::vector<std::string> split =
      DecodeAll({bytes.substr(0, cut), bytes.substr(cut)}, &failed_split);
  Check(whole == split && failed_whole == failed_split);
  std::string joined;
  for (const auto& f : whole) joined += f;
  Check(bytes.substr(0, joined.size()) == joined);
  return 0;
}
