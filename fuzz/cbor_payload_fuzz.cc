// Fuzzes the decoder of untrusted CBOR: MQTT payloads, HTTP invoke bodies with Content-Type
// application/cbor, and (with a smaller depth) deploy bundles.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/cbor.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto value = wisp::DecodeCbor(bytes);
  if (value.ok()) (void)value->dump();  // what a function's event would carry
  (void)wisp::DecodeCbor(bytes, "bundle", 4);
  return 0;
}
