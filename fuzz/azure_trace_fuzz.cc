// Fuzzes the Azure trace sample parser (bench/prewarm's input): the input is the three CSV
// files separated by NUL bytes. Parsing must never crash; a parsed trace must expand.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "scheduling/azure_trace.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string_view parts[3];
  for (int i = 0; i < 2; ++i) {
    const size_t nul = input.find('\0');
    if (nul == std::string_view::npos) return 0;
    parts[i] = input.substr(0, nul);
    input.remove_prefix(nul + 1);
  }
  parts[2] = input;
  auto trace = wisp::ParseAzureTrace(parts[0], parts[1], parts[2]);
  if (!trace.ok()) return 0;
  int64_t total = 0;
  for (const auto& app : trace->apps) {
    for (int64_t count : app.per_minute) total += count;
  }
  if (total <= 100'000) (void)wisp::ExpandAzureTrace(*trace, 1);
  return 0;
}
