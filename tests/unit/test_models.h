// The checked-in test models (tests/data/models/, made by tools/models/make_models.py) for the
// unit tests of the inference backend, the model registry and model functions.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "extensions/builtin.h"
#include "wisp/function_spec.h"

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

// A fixture for model functions: the built-in extensions, a private directory for a
// function's files (removed afterwards) and the spec of a `runtime: model` function.
class ModelFunctionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RegisterBuiltinExtensions();
    char pattern[] = "/tmp/wisp-model-function-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  FunctionSpecPtr Spec(const std::string& name, int concurrency = 1) const {
    auto spec = std::make_shared<FunctionSpec>();
    spec->name = name;
    spec->runtime = "model";
    spec->handler_file = "model.yaml";
    spec->handler_entry = "handle";
    spec->concurrency_max = concurrency;
    return spec;
  }
  void Write(const std::string& file, const std::string& text) const {
    std::ofstream(dir_ + "/" + file, std::ios::binary) << text;
  }

  std::string dir_;
};

}  // namespace wisp::testing
