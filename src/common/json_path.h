// Dotted field paths ("a.b") into decoded JSON events, as manifests name them.
#pragma once

#include <string_view>

#include <nlohmann/json.hpp>

namespace wisp {

// The value at `path` inside `root` (empty path: `root` itself), or null when a part is missing
// or a step is not an object. Borrows `root`; allocates nothing.
inline const nlohmann::json* FindDottedField(const nlohmann::json& root, std::string_view path) {
  const nlohmann::json* at = &root;
  while (!path.empty()) {
    const auto dot = path.find('.');
    if (!at->is_object()) return nullptr;
    auto it = at->find(path.substr(0, dot));
    if (it == at->end()) return nullptr;
    at = &*it;
    path = dot == std::string_view::npos ? std::string_view() : path.substr(dot + 1);
  }
  return at;
}

}  // namespace wisp
