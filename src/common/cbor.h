// Decoding untrusted CBOR (MQTT payloads, HTTP bodies, deploy bundles) into nlohmann::json.
//
// nlohmann's CBOR reader recurses once per nesting level, so a payload of a few hundred
// kilobytes of nested one-element arrays (0x81 0x81 ...) overflows the stack. DecodeCbor first
// walks the bytes with a SAX pass that refuses containers nested deeper than `max_depth` (the
// reader calls start_* before it recurses, so that pass stays shallow), then builds the value.
//
// Text strings must be UTF-8, as RFC 8949 requires: nlohmann would keep other bytes and throw
// later, when the value is written out as JSON.
//
// Errors: InvalidArgument "<what> is not valid CBOR" (truncated, trailing bytes, a tag, an
// impossible length, text that is not UTF-8) or "<what> nests CBOR deeper than N levels". No
// exception escapes. Thread safety: a pure function.
#pragma once

#include <string_view>

#include <nlohmann/json.hpp>

#include "wisp/status.h"

namespace wisp {

inline constexpr int kMaxCborDepth = 64;  // as for JSON bodies (http/request.h kMaxJsonDepth)

Result<nlohmann::json> DecodeCbor(std::string_view bytes, std::string_view what = "payload",
                                  int max_depth = kMaxCborDepth);

}  // namespace wisp
