#include "common/quote.h"

#include <fmt/format.h>

namespace wisp {

std::string QuoteUntrusted(std::string_view text, std::size_t max_shown) {
  std::string out = "'";
  for (std::size_t i = 0; i < text.size() && i < max_shown; ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x20 || byte == 0x7f || byte == '\\') {
      out += fmt::format("\\x{:02x}", byte);
    } else {
      out += text[i];
    }
  }
  if (text.size() > max_shown) out += "...";
  out += "'";
  return out;
}

}  // namespace wisp
