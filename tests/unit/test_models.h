// The checked-in test models (tests/data/models/, made by tools/models/make_models.py) for the
// unit tests of the inference backend, the model registry and model functions.
#pragma once

#include <fstream>
#include <sstream>
#include <string>

namespace wisp::testing {

inline std::string ModelPath(const std::string& file) {
  return std::string(WISP_SOURCE_DIR) + "/tests/data/models/" + file;
}

// The whole file, or "" when it cannot be read (the test's next check then fails on it).
inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

}  // namespace wisp::testing
