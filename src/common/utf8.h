// UTF-8 validation for bytes that must be text: MQTT strings (a broker drops a connection over
// a bad one) and HTTP bodies shown as JSON strings.
#pragma once

#include <string_view>

namespace wisp {

// True if `s` is well-formed UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
bool IsValidUtf8(std::string_view s);

}  // namespace wisp
