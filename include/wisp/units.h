// Parsing of the human units used in manifests and the node config: durations ("250ms", "2s",
// "5m", "1h") and byte sizes ("512", "64Ki", "32Mi", "1Gi", "10MB", "4kB").
//
// Thread safety: pure functions.
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

#include "wisp/status.h"

namespace wisp {

// A non-negative duration with unit suffix ms, s, m or h ("1.5s" allowed). A bare number is
// taken as seconds. Errors say what was expected.
Result<std::chrono::milliseconds> ParseDuration(std::string_view text);

// A non-negative byte size: a bare number (bytes), binary suffixes Ki Mi Gi (also K M G, taken
// as binary like Kubernetes' quantities are not: use Ki/Mi/Gi to be exact), or decimal kB MB GB.
Result<std::uint64_t> ParseByteSize(std::string_view text);

// "32Mi", "1.5s": the inverse, for describe and error messages.
std::string FormatByteSize(std::uint64_t bytes);
std::string FormatDuration(std::chrono::milliseconds d);

}  // namespace wisp
