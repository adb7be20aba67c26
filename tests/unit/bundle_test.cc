#include "wisp/bundle.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace wisp {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "wisp-bundle-test-XXXXXX").string();
    char* made = mkdtemp(tmpl.data());
    EXPECT_NE(made, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void WriteText(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

Bundle Sample() {
  Bundle b;
  b.files["wisp.yaml"] = "name: hello\nruntime: lua\nhandler: handler.lua\n";
  b.files["handler.lua"] = "return { handle = function() return 'hi' end }";
  b.files["lib/util.lua"] = std::string("\0\x01\xff binary", 10);
  b.files["empty.txt"] = "";
  return b;
}

std::string EncodeJson(const json& j) {
  std::string out;
  json::to_cbor(j, out);
  return out;
}

TEST(BundleTest, RoundTrip) {
  Bundle in = Sample();
  Result<Bundle> out = DecodeBundle(EncodeBundle(in));
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->files, in.files);
}

TEST(BundleTest, EncodesBinaryStrings) {
  json j = json::from_cbor(EncodeBundle(Sample()));
  ASSERT_TRUE(j["files"]["handler.lua"].is_binary());
}

TEST(BundleTest, AcceptsTextStrings) {
  json j = {{"files", {{"wisp.yaml", "name: a"}, {"a.lua", "x"}}}};
  Result<Bundle> out = DecodeBundle(EncodeJson(j));
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->files.at("wisp.yaml"), "name: a");
}

TEST(BundleTest, IsValidBundlePath) {
  for (const std::string& p : std::vector<std::string>{
           "wisp.yaml", "a", "lib/util.lua", "a-b_c.d/E9", "a..b", std::string(255, 'a')}) {
    EXPECT_TRUE(IsValidBundlePath(p)) << p;
  }
  std::string deep_ok;
  for (int i = 0; i < 16; ++i) deep_ok += i ? "/d" : "d";
  EXPECT_TRUE(IsValidBundlePath(deep_ok));
  for (const std::string& p : std::vector<std::string>{"",
                                                       "../x",
                                                       "/abs",
                                                       "a//b",
                                                       ".hidden",
                                                       "a/.hidden",
                                                       "a/./b",
                                                       "a/..",
                                                       "a/",
                                                       "./a",
                                                       ".",
                                                       "..",
                                                       "a b",
                                                       "a\\b",
                                                       "é",
                                                       "a:b",
                                                       "a*",
                                                       std::string(256, 'a'),
                                                       std::string("a\0b", 3),
                                                       deep_ok + "/d"}) {
    EXPECT_FALSE(IsValidBundlePath(p)) << p;
  }
}

TEST(BundleTest, RefusesBadPaths) {
  for (const char* path : {"../x", "/abs", "a//b", ".hidden", "a/../../etc/passwd"}) {
    Bundle b = Sample();
    b.files[path] = "x";
    Result<Bundle> out = DecodeBundle(EncodeBundle(b));
    ASSERT_FALSE(out.ok()) << path;
    EXPECT_EQ(out.status().code(), StatusCode::kInvalidArgument) << path;
    EXPECT_NE(out.status().message().find("is not allowed"), std::string::npos)
        << out.status().message();
  }
}

TEST(BundleTest, RequiresWispYaml) {
  Bundle b = Sample();
  b.files.erase("wisp.yaml");
  b.files["sub/wisp.yaml"] = "name: a";
  Result<Bundle> out = DecodeBundle(EncodeBundle(b));
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(out.status().message().find("wisp.yaml"), std::string::npos);
}

TEST(BundleTest, RefusesFileThatIsAlsoADirectory) {
  Bundle b = Sample();
  b.files["lib"] = "x";
  Result<Bundle> out = DecodeBundle(EncodeBundle(b));
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kInvalidArgument);
}

TEST(BundleTest, TooManyFiles) {
  Bundle b = Sample();
  BundleLimits limits;
  limits.max_files = 4;
  EXPECT_TRUE(DecodeBundle(EncodeBundle(b), limits).ok());
  b.files["one-more"] = "x";
  Result<Bundle> out = DecodeBundle(EncodeBundle(b), limits);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kResourceExhausted);
}

TEST(BundleTest, TooManyBytes) {
  Bundle b = Sample();
  b.files["big.bin"] = std::string(2000, 'x');
  BundleLimits limits;
  limits.max_total_bytes = 1000;
  Result<Bundle> out = DecodeBundle(EncodeBundle(b), limits);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kResourceExhausted);
  // Refused before parsing when the input alone is far too large.
  limits.max_files = 1;
  out = DecodeBundle(std::string(10000, '\0'), limits);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kResourceExhausted);
}

TEST(BundleTest, GarbageIsInvalidArgument) {
  std::string truncated = EncodeBundle(Sample());
  truncated.resize(truncated.size() / 2);
  std::string trailing = EncodeBundle(Sample()) + "x";
  for (const std::string& bytes :
       {std::string(), std::string("garbage"), std::string("\xff\xff\xff", 3), truncated, trailing,
        EncodeJson(json::array({1, 2})), EncodeJson(json{{"files", 5}}),
        EncodeJson(json{{"files", {{"wisp.yaml", 5}}}}),
        EncodeJson(json{{"files", {{"wisp.yaml", "x"}}}, {"extra", 1}}),
        EncodeJson(json{{"other", 1}}), std::string("\x9f\x9f\x9f\x9f", 4)}) {
    Result<Bundle> out = DecodeBundle(bytes);
    ASSERT_FALSE(out.ok());
    EXPECT_EQ(out.status().code(), StatusCode::kInvalidArgument) << out.status().ToString();
  }
}

TEST(BundleTest, DeepNestingIsAnError) {
  std::string nested(100000, '\x81');  // arrays of one element, 100000 deep
  nested += '\x00';
  EXPECT_FALSE(DecodeBundle(nested).ok());
}

TEST(BundleDirectoryTest, ReadSkipsHiddenAndSymlinks) {
  TempDir dir;
  WriteText(dir.path() / "wisp.yaml", "name: a");
  WriteText(dir.path() / "handler.lua", "return {}");
  WriteText(dir.path() / "lib" / "util.lua", "x");
  WriteText(dir.path() / ".env", "SECRET=1");
  WriteText(dir.path() / ".git" / "config", "x");
  WriteText(dir.path() / "lib" / ".swp", "x");
  fs::create_symlink("/etc/passwd", dir.path() / "passwd");
  fs::create_directory_symlink("/etc", dir.path() / "etc");

  Result<Bundle> b = ReadBundleFromDirectory(dir.path().string());
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  std::map<std::string, std::string> want = {
      {"wisp.yaml", "name: a"}, {"handler.lua", "return {}"}, {"lib/util.lua", "x"}};
  EXPECT_EQ(b->files, want);
}

TEST(BundleDirectoryTest, ReadErrors) {
  TempDir dir;
  Result<Bundle> b = ReadBundleFromDirectory((dir.path() / "absent").string());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kNotFound);

  WriteText(dir.path() / "handler.lua", "x");
  b = ReadBundleFromDirectory(dir.path().string());
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("no wisp.yaml"), std::string::npos);

  WriteText(dir.path() / "wisp.yaml", "name: a");
  WriteText(dir.path() / "my file.lua", "x");
  b = ReadBundleFromDirectory(dir.path().string());
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("my file.lua"), std::string::npos);
  fs::remove(dir.path() / "my file.lua");

  BundleLimits limits;
  limits.max_files = 1;
  b = ReadBundleFromDirectory(dir.path().string(), limits);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kResourceExhausted);
  limits = {};
  limits.max_total_bytes = 3;
  b = ReadBundleFromDirectory(dir.path().string(), limits);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kResourceExhausted);
}

TEST(BundleDirectoryTest, WriteThenReadRoundTrips) {
  TempDir dir;
  fs::path target = dir.path() / "store" / "hello";
  Bundle in = Sample();
  ASSERT_TRUE(WriteBundleToDirectory(in, target.string()).ok());
  struct stat st {};
  ASSERT_EQ(stat((target / "lib" / "util.lua").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  Result<Bundle> out = ReadBundleFromDirectory(target.string());
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->files, in.files);
  // Writing again replaces contents.
  in.files["handler.lua"] = "v2";
  ASSERT_TRUE(WriteBundleToDirectory(in, target.string()).ok());
  out = ReadBundleFromDirectory(target.string());
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->files.at("handler.lua"), "v2");
}

TEST(BundleDirectoryTest, WriteRefusesBadPathsAndSymlinks) {
  TempDir dir;
  Bundle b = Sample();
  b.files["../escape"] = "x";
  Status s = WriteBundleToDirectory(b, (dir.path() / "f").string());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(dir.path() / "escape"));

  // A symlink planted where a file goes is not followed.
  fs::create_directories(dir.path() / "g");
  WriteText(dir.path() / "outside", "keep");
  fs::create_symlink(dir.path() / "outside", dir.path() / "g" / "handler.lua");
  s = WriteBundleToDirectory(Sample(), (dir.path() / "g").string());
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  std::ifstream in(dir.path() / "outside");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "keep");
}

}  // namespace
}  // namespace wisp
