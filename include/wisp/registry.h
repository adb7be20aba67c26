// Registry<Factory>: extensions (runtimes, state backends, later triggers, inference backends,
// policy modules) register a factory under a name; the core looks them up by the name a
// manifest or config gives, and never names a concrete extension.
//
// Thread safety: registration happens during static initialisation or before the node
// starts; lookups after that are read-only and may come from any thread.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wisp {

template <typename Factory>
class Registry {
 public:
  static Registry& Get() {
    static Registry registry;
    return registry;
  }

  void Register(std::string name, Factory factory) {
    factories_.insert_or_assign(std::move(name), std::move(factory));
  }

  // Null when nothing is registered under `name`.
  const Factory* Find(std::string_view name) const {
    auto it = factories_.find(std::string(name));
    return it == factories_.end() ? nullptr : &it->second;
  }

  std::vector<std::string> Names() const {
    std::vector<std::string> names;
    for (const auto& [name, factory] : factories_) names.push_back(name);
    return names;
  }

 private:
  std::map<std::string, Factory> factories_;
};

}  // namespace wisp
