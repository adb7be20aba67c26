// Quoting of untrusted text inside error messages.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace wisp {

// `text` in single quotes, cut after `max_shown` bytes ("..." marks the cut), with control
// bytes, DEL and backslashes escaped as \xNN: a hostile manifest or bundle path can then
// neither forge log lines nor flood a reply. Other bytes (UTF-8 included) pass unchanged.
std::string QuoteUntrusted(std::string_view text, std::size_t max_shown = 64);

}  // namespace wisp
