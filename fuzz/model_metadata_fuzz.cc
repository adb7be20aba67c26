// The model registry's stored metadata and channels (src/models/model_store.h): never crashes,
// and what it accepts survives a round trip.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "models/model_store.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto channels = wisp::ModelChannelsFromText(text); channels.ok()) {
    auto again = wisp::ModelChannelsFromText(wisp::ModelChannelsToJson(*channels).dump());
    if (!again.ok() || again->stable != channels->stable || again->canary != channels->canary) {
      std::abort();
    }
  }
  auto metadata = wisp::ModelMetadataFromText(text);
  if (!metadata.ok()) return 0;
  auto again = wisp::ModelMetadataFromText(wisp::ModelMetadataToJson(*metadata).dump());
  if (!again.ok() || again->sha256 != metadata->sha256 || again->version != metadata->version) {
    std::abort();
  }
  (void)wisp::ParseModelRef(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
