#include "runtime/lua/lua_runtime.h"

#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <lua.hpp>
#include <nlohmann/json.hpp>

#include "test_fakes.h"

namespace wisp {
namespace {

using testing::FakeStateStore;
using testing::RecordingHost;

// gtest alone (no gmock): the unit test target links only gtest.
::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << text << "' does not contain '" << part << "'";
}

class LuaRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (std::filesystem::temp_directory_path() / "wisp-lua-XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    dir_ = templ;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void WriteFile(const std::string& relative, const std::string& contents) {
    std::filesystem::path path = std::filesystem::path(dir_) / relative;
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << contents;
  }

  std::shared_ptr<FunctionSpec> Spec() {
    auto spec = std::make_shared<FunctionSpec>();
    spec->name = "fn";
    spec->runtime = "lua";
    spec->handler_file = "handler.lua";
    spec->handler_entry = "handle";
    spec->limits.timeout = std::chrono::seconds(10);
    spec->limits.memory_bytes = 32ull << 20;
    return spec;
  }

  Result<InstancePtr> Create(const std::string& source,
                             std::shared_ptr<FunctionSpec> spec = nullptr) {
    WriteFile("handler.lua", source);
    return runtime_->CreateInstance(spec ? spec : Spec(), dir_);
  }

  // Loads a handler that must load.
  InstancePtr MustCreate(const std::string& source, std::shared_ptr<FunctionSpec> spec = nullptr) {
    Result<InstancePtr> instance = Create(source, std::move(spec));
    EXPECT_TRUE(instance.ok()) << instance.status().ToString();
    return instance.ok() ? std::move(instance).value() : nullptr;
  }

  // A module whose handle(event, ctx) has `body` as its body.
  static std::string Handler(const std::string& body) {
    return "local M = {}\nfunction M.handle(event, ctx)\n" + body + "\nend\nreturn M\n";
  }

  Result<Reply> Call(Instance& instance) { return instance.Invoke(event_, host_); }

  // Runs a handler body once and returns the reply (failing the test on error).
  Reply Run(const std::string& body) {
    InstancePtr instance = MustCreate(Handler(body));
    if (instance == nullptr) return {};
    Result<Reply> reply = Call(*instance);
    EXPECT_TRUE(reply.ok()) << reply.status().ToString();
    return reply.ok() ? std::move(reply).value() : Reply{};
  }

  // Runs a handler body once and returns its error.
  Status RunError(const std::string& body, std::shared_ptr<FunctionSpec> spec = nullptr) {
    InstancePtr instance = MustCreate(Handler(body), std::move(spec));
    if (instance == nullptr) return Internal("no instance");
    return Call(*instance).status();
  }

  static nlohmann::json Json(const Reply& reply) {
    return nlohmann::json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
  }

  RuntimePtr runtime_ = MakeLuaRuntime();
  std::string dir_;
  FakeStateStore store_;
  RecordingHost host_{&store_, "fn"};
  Event event_;
};

// --- Loading -------------------------------------------------------------------------------

TEST_F(LuaRuntimeTest, LoadsModuleTable) {
  InstancePtr instance = MustCreate(Handler("return 'hi'"));
  ASSERT_NE(instance, nullptr);
  EXPECT_TRUE(instance->Reusable());
  EXPECT_GT(instance->MemoryBytes(), 0u);
  EXPECT_LT(instance->MemoryBytes(), 32ull << 20);
}

TEST_F(LuaRuntimeTest, LoadsGlobalFunction) {
  InstancePtr instance = MustCreate("function handle(event, ctx) return 'global' end\n");
  ASSERT_NE(instance, nullptr);
  EXPECT_EQ(Call(*instance)->body, "global");
}

TEST_F(LuaRuntimeTest, UsesTheEntryNameOfTheSpec) {
  auto spec = Spec();
  spec->handler_entry = "main";
  InstancePtr instance = MustCreate("return { main = function() return 'main' end }\n", spec);
  ASSERT_NE(instance, nullptr);
  EXPECT_EQ(Call(*instance)->body, "main");
}

TEST_F(LuaRuntimeTest, CompileErrorIsInvalidArgument) {
  Result<InstancePtr> instance = Create("local M = {}\nfunction M.handle(\n  return x +\nend\n");
  ASSERT_FALSE(instance.ok());
  EXPECT_EQ(instance.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(instance.status().message(), "handler.lua:"));
}

TEST_F(LuaRuntimeTest, MissingEntryIsInvalidArgument) {
  Result<InstancePtr> instance = Create("local M = {}\nfunction M.other() end\nreturn M\n");
  ASSERT_FALSE(instance.ok());
  EXPECT_EQ(instance.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(instance.status().message(), "no function 'handle'"));
}

TEST_F(LuaRuntimeTest, ErrorWhileLoadingIsInvalidArgument) {
  Result<InstancePtr> instance = Create("error('broken at load')\n");
  ASSERT_FALSE(instance.ok());
  EXPECT_EQ(instance.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(instance.status().message(), "handler.lua:1: broken at load"));
}

TEST_F(LuaRuntimeTest, MissingHandlerFileIsInvalidArgument) {
  Result<InstancePtr> instance = runtime_->CreateInstance(Spec(), dir_);
  ASSERT_FALSE(instance.ok());
  EXPECT_EQ(instance.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(instance.status().message(), "handler.lua"));
}

TEST_F(LuaRuntimeTest, LoopWhileLoadingIsDeadlineExceeded) {
  auto spec = Spec();
  spec->limits.timeout = std::chrono::milliseconds(100);
  Result<InstancePtr> instance = Create("while true do end\n", spec);
  ASSERT_FALSE(instance.ok());
  EXPECT_EQ(instance.status().code(), StatusCode::kDeadlineExceeded);
}

TEST_F(LuaRuntimeTest, IsRegisteredUnderLua) {
  RegisterLuaRuntime();
  const RuntimeFactory* factory = RuntimeRegistry::Get().Find("lua");
  ASSERT_NE(factory, nullptr);
  EXPECT_NE((*factory)(), nullptr);
}

// --- Return values -------------------------------------------------------------------------

TEST_F(LuaRuntimeTest, StringIsTextPlain) {
  Reply reply = Run("return 'hello'");
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, "hello");
  EXPECT_EQ(reply.content_type, "text/plain");
}

TEST_F(LuaRuntimeTest, NilIsEmpty200) {
  Reply reply = Run("return nil");
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, "");
  EXPECT_EQ(reply.content_type, "");
}

TEST_F(LuaRuntimeTest, ReplyTableWithStatusHeadersAndStringBody) {
  Reply reply =
      Run("return { status = 201, headers = { ['X-Thing'] = 'a', ['Content-Type'] = 'text/csv',"
          " ['X-N'] = 7 }, body = 'a,b' }");
  EXPECT_EQ(reply.status, 201);
  EXPECT_EQ(reply.body, "a,b");
  EXPECT_EQ(reply.content_type, "text/csv");
  std::map<std::string, std::string> headers(reply.headers.begin(), reply.headers.end());
  EXPECT_EQ(headers, (std::map<std::string, std::string>{{"X-Thing", "a"}, {"X-N", "7"}}));
}

TEST_F(LuaRuntimeTest, StatusCodeAndTableBodyAreJson) {
  Reply reply = Run("return { statusCode = 404, body = { error = 'nope', n = 2 } }");
  EXPECT_EQ(reply.status, 404);
  EXPECT_EQ(reply.content_type, "application/json");
  EXPECT_EQ(Json(reply), nlohmann::json({{"error", "nope"}, {"n", 2}}));
}

TEST_F(LuaRuntimeTest, PlainTableIsJson) {
  Reply reply = Run("return { ok = true, list = {1, 2.5, 'x'}, empty = {}, nested = { a = {} } }");
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.content_type, "application/json");
  EXPECT_EQ(Json(reply), nlohmann::json::parse(
                             R"({"ok":true,"list":[1,2.5,"x"],"empty":{},"nested":{"a":{}}})"));
}

TEST_F(LuaRuntimeTest, JsonEncodingRules) {
  EXPECT_EQ(Run("return {1, 2, 3}").body, "[1,2,3]");
  EXPECT_EQ(Run("return {}").body, "{}");
  EXPECT_EQ(Json(Run("return {[1] = 'a', [3] = 'c'}")), nlohmann::json({{"1", "a"}, {"3", "c"}}));
  EXPECT_EQ(Json(Run("return {[true] = 1, [1.5] = 2}")), nlohmann::json({{"true", 1}, {"1.5", 2}}));
  EXPECT_EQ(Run("return {'a\"b\\\\c\\n\\1'}").body, R"(["a\"b\\c\n\u0001"])");
  EXPECT_EQ(Run("return {'h\\195\\169llo'}").body, "[\"h\xc3\xa9llo\"]");
  EXPECT_EQ(Run("return {1e300, -0.5, 2^53}").body, "[1e+300,-0.5,9007199254740992]");
}

TEST_F(LuaRuntimeTest, NumbersAndBooleansAreJsonText) {
  Reply number = Run("return 42");
  EXPECT_EQ(number.body, "42");
  EXPECT_EQ(number.content_type, "application/json");
  EXPECT_EQ(Run("return true").body, "true");
  EXPECT_EQ(Run("return { body = 1.5 }").body, "1.5");
}

// A bad reply is the function's fault (500), not the client's (400).
TEST_F(LuaRuntimeTest, BadRepliesAreFunctionErrorsAndKeepTheInstance) {
  const char* cases[] = {
      "return { status = 700 }",
      "return { status = '200' }",
      "return { status = 200.5 }",
      "return function() end",
      "return { body = function() end }",
      "local t = {} t.self = t return t",
      "return { x = 0/0 }",
      "return { x = 1/0 }",
      "return { [{}] = 1 }",
      "return { '\\255' }",
      "return { headers = { ['X-A'] = 'a\\r\\nSet-Cookie: x=1' } }",
      "return { headers = { ['bad name'] = 'v' } }",
      "return { headers = 'x' }",
  };
  for (const char* body : cases) {
    SCOPED_TRACE(body);
    InstancePtr instance = MustCreate(Handler(body));
    ASSERT_NE(instance, nullptr);
    Result<Reply> reply = Call(*instance);
    ASSERT_FALSE(reply.ok());
    EXPECT_EQ(reply.status().code(), StatusCode::kFunctionError);
    EXPECT_TRUE(instance->Reusable());
  }
  EXPECT_EQ(RunError("return { status = 42 }").message(),
            "handler returned invalid status 42 (use 200-599)");
  EXPECT_EQ(RunError("return { status = 200.5 }").message(),
            "handler returned invalid status 200.5 (use 200-599)");
  EXPECT_EQ(RunError("return { status = '200' }").message(),
            "handler returned a status of type string (use a number, 200-599)");
  EXPECT_EQ(RunError("return { headers = { ['bad name'] = 'v' } }").message(),
            "handler returned invalid header 'bad name'");
  EXPECT_EQ(RunError("return { body = function() end }").message(),
            "handler returned a body of type function");
  EXPECT_EQ(RunError("return { x = 0/0 }").message(),
            "handler returned a body that is not JSON: cannot encode NaN or infinity as JSON");
}

// A 1xx status is an interim response: the client would wait forever for the final one.
TEST_F(LuaRuntimeTest, InformationalStatusIsAFunctionError) {
  for (const char* status : {"100", "101", "103", "199"}) {
    SCOPED_TRACE(status);
    Status error = RunError(std::string("return { status = ") + status + ", body = 'x' }");
    EXPECT_EQ(error.code(), StatusCode::kFunctionError);
    EXPECT_EQ(error.message(),
              std::string("handler returned invalid status ") + status + " (use 200-599)");
  }
  EXPECT_EQ(Run("return { status = 200 }").status, 200);
  EXPECT_EQ(Run("return { statusCode = 599 }").status, 599);
}

// table.sort gets a Lua comparator when none is given (so the timeout hook sees every
// comparison); it must still sort, take a comparator, and refuse mixed types like Lua does.
TEST_F(LuaRuntimeTest, TableSortKeepsLuaBehaviour) {
  EXPECT_EQ(Run("local t = {5, 3, 9, 1} table.sort(t) return table.concat(t, ',')").body,
            "1,3,5,9");
  EXPECT_EQ(Run("local t = {'b', 'c', 'a'} table.sort(t, function(a, b) return a > b end) "
                "return table.concat(t, ',')")
                .body,
            "c,b,a");
  Status mixed = RunError("local t = {1, 'x', 2} table.sort(t) return 'unreachable'");
  EXPECT_EQ(mixed.code(), StatusCode::kFunctionError);
  EXPECT_NE(mixed.message().find("compare"), std::string::npos) << mixed.message();
}

TEST_F(LuaRuntimeTest, NestingLimitIs64) {
  // 64 nested tables encode, 65 do not.
  std::string make = "local t = {} for i = 1, N - 1 do t = { t } end return t";
  EXPECT_EQ(Run("local N = 64 " + make).body.size(), 64u * 2);
  EXPECT_EQ(RunError("local N = 65 " + make).code(), StatusCode::kFunctionError);
}

// string.find/match/gmatch/gsub are our step-counting matcher (see PatternsCannotEscapeTheTimeout);
// the results are LuaJIT's own for the same calls (Lua 5.1 patterns).
TEST_F(LuaRuntimeTest, PatternFunctionsKeepLuaResults) {
  Reply reply = Run(R"lua(
local function show(...)
  local t = {}
  for i = 1, select('#', ...) do t[i] = tostring((select(i, ...))) end
  return table.concat(t, ',')
end
local function all(iter)
  local t = {}
  for a, b in iter do t[#t + 1] = show(a, b) end
  return table.concat(t, ';')
end
return {
  show(string.find('hello world', 'o w')),
  show(string.find('hello world', 'o', 6)),
  show(string.find('hello', 'l', -2)),
  show(string.find('a.b', '.', 1, true)),
  show(string.find('a+b', '+', 1, true)),
  show(string.find('abc', 'x')),
  show(string.find('abc', '', 10)),
  show(('hello'):find('l+')),
  show(string.find('key = value', '(%w+)%s*=%s*(%w+)')),
  show(string.match('  trim me  ', '^%s*(.-)%s*$')),
  show(string.match('2024-01-15', '(%d+)-(%d+)-(%d+)')),
  show(string.match('hello', '()ll()')),
  show(string.match('f(a(b)c)d', '%b()')),
  show(string.match('THE (quick) fox', '%f[%a]%a+', 5)),
  show(string.gsub('THE (quick) fox', '%f[%a]%a+', '<%0>')),
  show(string.match('abc', '^b')),
  show(string.match('abc', 'c$')),
  show(string.match('a$c', 'a$c')),
  show(string.match([[say "hi" or 'bye']], [[(["'])(.-)%1]])),
  show(string.match('0x1F, 0xzz', '0x(%x+)')),
  show(string.match('[tag]', '%[(.-)%]')),
  show(string.match('a1-b2', '[%a-]+')),
  show(string.match('hello', '[^aeiou]+', 2)),
  show(string.match('aaab', 'a-b')),
  show(string.match('aaab', 'a*')),
  show(string.match('color colour', 'colou?r', 3)),
  show(string.gsub('hello world', '(%w+)', '%1 %1')),
  show(string.gsub('hello world', '%w+', '%0!', 1)),
  show(string.gsub('abc', '', '-')),
  show(string.gsub('$name is $age', '%$(%w+)', { name = 'Ann', age = 7 })),
  show(string.gsub('1 2 3', '%d', function(d) return d * 2 end)),
  show(string.gsub('a b', '%w', function() return nil end)),
  show(string.gsub('abc', '^a', 'X')),
  show(string.gsub('50%', '%%', '%%%%')),
  show(string.gsub('abc', 'b', 5)),
  show(string.gsub('hello', '()l', '%1')),
  all(string.gmatch('one two  three', '%a+')),
  all(string.gmatch('k1=v1, k2=v2', '(%w+)=(%w+)')),
  all(string.gmatch('abc', '')),
  all(('a,b,,c'):gmatch('([^,]*)')),
  show(pcall(string.find, 'a', '[a')),
  show(pcall(string.gsub, 'a', '(a)', '%2')),
  show(pcall(string.match, 'a', '%')),
  show(pcall(string.gsub, 'a', 'a', true)),
  show(pcall(string.gsub, 'a', 'a', function() return {} end)),
  show(pcall(string.match, 'a', '(a')),
  show(pcall(string.match, 'a', 'a)')),
  show(pcall(string.match, ('a'):rep(300), ('a?'):rep(300))),
  show(string.find('a\0b', '%z')),
  show(string.find(123, 2)),
  show(('x').find == string.find, ('x').match == string.match, ('x').gmatch == string.gmatch,
       ('x').gsub == string.gsub),
})lua");
  nlohmann::json expected = {
      "5,7",
      "8,8",
      "4,4",
      "2,2",
      "2,2",
      "nil",
      "4,3",
      "3,4",
      "1,11,key,value",
      "trim me",
      "2024,01,15",
      "3,5",
      "(a(b)c)",
      "quick",
      "<THE> (<quick>) <fox>,3",
      "nil",
      "c",
      "a$c",
      "\",hi",
      "1F",
      "tag",
      "a",
      "ll",
      "aaab",
      "aaa",
      "colour",
      "hello hello world world,2",
      "hello! world,1",
      "-a-b-c-,4",
      "Ann is 7,2",
      "2 4 6,3",
      "a b,2",
      "Xbc,1",
      "50%%,1",
      "a5c,1",
      "he34o,2",
      "one,nil;two,nil;three,nil",
      "k1,v1;k2,v2",
      ",nil;,nil;,nil;,nil",
      "a,nil;,nil;b,nil;,nil;,nil;c,nil;,nil",
      "false,malformed pattern (missing ']')",
      "false,invalid capture index",
      "false,malformed pattern (ends with '%')",
      "false,bad argument #3 to '?' (string/function/table expected)",
      "false,invalid replacement value (a table)",
      "false,unfinished capture",
      "false,invalid pattern capture",
      "false,pattern too complex",
      "2,2",
      "2,2",
      "true,true,true,true",
  };
  nlohmann::json got = Json(reply);
  ASSERT_TRUE(got.is_array()) << reply.body;
  ASSERT_EQ(got.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(got[i], expected[i]) << "case " << i;
}

// --- Event ---------------------------------------------------------------------------------

TEST_F(LuaRuntimeTest, HttpEventFields) {
  std::vector<HeaderView> headers = {
      {"Content-Type", "text/plain"}, {"X-Thing", "1"}, {"x-thing", "2"}};
  event_.trigger = TriggerKind::kHttp;
  event_.id = 0xabc;
  event_.timestamp = std::chrono::system_clock::time_point(std::chrono::milliseconds(1500));
  event_.method = "POST";
  event_.path = "/pump";
  event_.query = "a=1&b=2";
  event_.content_type = "text/plain";
  event_.headers = headers;
  event_.body = "hello";
  Reply reply = Run(R"(
    return { b = event.body, method = event.method, path = event.path, query = event.query,
             content_type = event.content_type, trigger = event.trigger,
             topic = event.topic == nil, id = event.id, timestamp = event.timestamp,
             hdrs = event.headers, json = event.json == nil, again = event.body,
             unknown = event.nope == nil })");
  EXPECT_EQ(Json(reply), nlohmann::json::parse(R"({
    "b": "hello", "method": "POST", "path": "/pump", "query": "a=1&b=2",
    "content_type": "text/plain", "trigger": "http", "topic": true, "id": "0000000000000abc",
    "timestamp": 1.5, "json": true, "again": "hello", "unknown": true,
    "hdrs": {"content-type": "text/plain", "x-thing": "1, 2"}})"));
}

TEST_F(LuaRuntimeTest, MqttEventFields) {
  event_.trigger = TriggerKind::kMqtt;
  event_.topic = "plant/3/pump/7";
  Reply reply =
      Run("return { trigger = event.trigger, topic = event.topic, method = event.method == nil,"
          " query = event.query, b = event.body }");
  EXPECT_EQ(Json(reply), nlohmann::json::parse(
                             R"({"trigger":"mqtt","topic":"plant/3/pump/7","method":true,
                                 "query":"","b":""})"));
}

TEST_F(LuaRuntimeTest, JsonIsDecoded) {
  nlohmann::json json = nlohmann::json::parse(
      R"({"pump":"p1","vibration":7.5,"n":-3,"big":18446744073709551615,"ok":false,
          "none":null,"list":[10,{"x":"y"},[]],"obj":{}})");
  event_.json = &json;
  Reply reply = Run(R"(
    local j = event.json
    return { pump = j.pump, vibration = j.vibration, n = j.n, ok = j.ok, big = j.big > 1e19,
             none = j.none == nil, len = #j.list, first = j.list[1], x = j.list[2].x,
             inner = type(j.list[3]), obj = type(j.obj), same = event.json == j })");
  EXPECT_EQ(Json(reply), nlohmann::json::parse(
                             R"({"pump":"p1","vibration":7.5,"n":-3,"ok":false,"big":true,
                                 "none":true,"len":3,"first":10,"x":"y","inner":"table",
                                 "obj":"table","same":true})"));
}

TEST_F(LuaRuntimeTest, StaleEventReadsNil) {
  InstancePtr instance = MustCreate(Handler(R"(
    if saved then return { stale = saved.body == nil, cached = saved.path } end
    saved = event
    local _ = event.path
    return 'saved')"));
  ASSERT_NE(instance, nullptr);
  event_.path = "/first";
  event_.body = "first";
  ASSERT_EQ(Call(*instance)->body, "saved");
  event_.path = "/second";
  event_.body = "second";
  Result<Reply> reply = Call(*instance);
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  // Fields read during the first call stay; nothing else can be read from the old event.
  EXPECT_EQ(Json(*reply), nlohmann::json::parse(R"({"stale":true,"cached":"/first"})"));
}

// --- ctx -----------------------------------------------------------------------------------

TEST_F(LuaRuntimeTest, Env) {
  auto spec = Spec();
  spec->environment = {{"VIBRATION_LIMIT", "7.1"}};
  InstancePtr instance =
      MustCreate(Handler("return { limit = tonumber(ctx.env('VIBRATION_LIMIT')), missing = "
                         "ctx.env('NOPE') == nil }"),
                 spec);
  ASSERT_NE(instance, nullptr);
  EXPECT_EQ(Json(*Call(*instance)), nlohmann::json::parse(R"({"limit":7.1,"missing":true})"));
}

TEST_F(LuaRuntimeTest, StateOperations) {
  Reply reply = Run(R"(
    ctx.state:put('a', 'x')
    ctx.state:put('n', 5, 10)
    ctx.state:put('t', { k = 1 })
    local got, missing = ctx.state:get('a'), ctx.state:get('zz')
    local c1 = ctx.state:incr('c')
    local c2 = ctx.state:incr('c', 5, 2.5)
    local d1, d2 = ctx.state:delete('a'), ctx.state:delete('a')
    return { got = got, missing = missing == nil, c1 = c1, c2 = c2, d1 = d1, d2 = d2 })");
  EXPECT_EQ(Json(reply), nlohmann::json::parse(
                             R"({"got":"x","missing":true,"c1":1,"c2":6,"d1":true,"d2":false})"));
  ASSERT_NE(store_.Find("fn", "n"), nullptr);
  EXPECT_EQ(store_.Find("fn", "n")->value, "5");
  EXPECT_EQ(store_.Find("fn", "n")->ttl, std::chrono::milliseconds(10'000));
  EXPECT_EQ(store_.Find("fn", "t")->value, R"({"k":1})");
  EXPECT_EQ(store_.Find("fn", "c")->value, "6");
  EXPECT_EQ(store_.Find("fn", "c")->ttl, std::chrono::milliseconds(2'500));
  EXPECT_EQ(store_.Find("fn", "a"), nullptr);
}

TEST_F(LuaRuntimeTest, StateErrorsAreLuaErrors) {
  store_.FailWith(IoError("disk full"));
  // Not a tail call: that would drop the caller's frame and with it the location.
  Status status = RunError("local v = ctx.state:get('k') return v");
  EXPECT_EQ(status.code(), StatusCode::kFunctionError);
  EXPECT_TRUE(Contains(status.message(), "disk full"));
  EXPECT_TRUE(Contains(status.message(), "handler.lua:3:"));
  store_.ClearFailure();

  ASSERT_TRUE(store_.Put("fn", "word", "abc").ok());
  EXPECT_TRUE(Contains(RunError("return ctx.state:incr('word')").message(), "not an integer"));
  EXPECT_TRUE(Contains(RunError("return ctx.state.get('k')").message(), "colon"));
  EXPECT_TRUE(Contains(RunError("ctx.state:put('k', nil)").message(), "missing value"));
  EXPECT_TRUE(Contains(RunError("ctx.state:put('k', 'v', -1)").message(), "ttl"));
  EXPECT_TRUE(Contains(RunError("ctx.state:incr('k', 1.5)").message(), "integer"));
}

TEST_F(LuaRuntimeTest, PcallCatchesOrdinaryErrors) {
  store_.FailWith(IoError("disk full"));
  EXPECT_EQ(Run("local ok, err = pcall(ctx.state.get, ctx.state, 'k') return tostring(ok)").body,
            "false");
}

TEST_F(LuaRuntimeTest, DetectScoresPerKeyWithStateInTheStore) {
  std::string body = Run(R"(
    local flags = 0
    for i = 1, 20 do
      local score, anomaly = ctx.detect('ewma', 'p1', 1 + (i % 3) * 0.1, { min_points = 5 })
      if anomaly then flags = flags + 1 end
    end
    local _, spike = ctx.detect('ewma', 'p1', 50, { min_points = 5 })
    local _, first = ctx.detect('ewma', 'p2', 50, { min_points = 5 })
    return tostring(flags) .. ' ' .. tostring(spike) .. ' ' .. tostring(first))")
                         .body;
  EXPECT_EQ(body, "0 true false");
  EXPECT_NE(store_.Find("fn", "detector/ewma/p1"), nullptr);
  EXPECT_TRUE(Contains(RunError("ctx.detect('nosuch', 'k', 1)").message(), "no anomaly detector"));
  EXPECT_TRUE(Contains(RunError("ctx.detect('ewma', 'k', 'x')").message(), "number"));
  EXPECT_TRUE(Contains(RunError("ctx.detect('ewma', 'k', 1, { alpha = 7 })").message(), "alpha"));
}

TEST_F(LuaRuntimeTest, EmitIsRecorded) {
  Run(R"(
    ctx.emit('plant/alerts', { pump = 'p1', vibration = 9.5 }, { qos = 1, retain = true })
    ctx.emit('plant/raw', 'text'))");
  ASSERT_EQ(host_.emitted.size(), 2u);
  EXPECT_EQ(host_.emitted[0].topic, "plant/alerts");
  EXPECT_EQ(nlohmann::json::parse(host_.emitted[0].payload),
            nlohmann::json({{"pump", "p1"}, {"vibration", 9.5}}));
  EXPECT_EQ(host_.emitted[0].options.qos, 1);
  EXPECT_TRUE(host_.emitted[0].options.retain);
  EXPECT_EQ(host_.emitted[1].payload, "text");
  EXPECT_EQ(host_.emitted[1].options.qos, 0);
  EXPECT_FALSE(host_.emitted[1].options.retain);

  EXPECT_TRUE(Contains(RunError("ctx.emit('plant/#', 'x')").message(), "invalid topic"));
  EXPECT_TRUE(Contains(RunError("ctx.emit('t', 'x', { qos = 3 })").message(), "qos"));
  EXPECT_TRUE(Contains(RunError("ctx.emit('t')").message(), "want a string or a table"));
}

TEST_F(LuaRuntimeTest, MissingStateKeyIsNil) {
  EXPECT_EQ(Run("return tostring(tonumber(ctx.state:get('absent'))) .. ' ' .. "
                "select('#', ctx.state:get('absent'))")
                .body,
            "nil 1");
}

TEST_F(LuaRuntimeTest, HttpPostQueuesOrRaises) {
  EXPECT_EQ(Run(R"(
    local a = ctx.http_post('http://allowed/a', { v = 1 })
    local b = ctx.http_post('http://allowed/b', 'text', { content_type = 'text/csv',
                                                          headers = { ['X-K'] = 'v' } })
    return tostring(a) .. ' ' .. tostring(b))")
                .body,
            "true true");
  ASSERT_EQ(host_.posted.size(), 2u);
  EXPECT_EQ(host_.posted[0].url, "http://allowed/a");
  EXPECT_EQ(nlohmann::json::parse(host_.posted[0].body), nlohmann::json({{"v", 1}}));
  EXPECT_EQ(host_.posted[0].content_type, "application/json");
  EXPECT_EQ(host_.posted[1].body, "text");
  EXPECT_EQ(host_.posted[1].content_type, "text/csv");
  EXPECT_EQ(host_.posted[1].headers,
            (std::vector<std::pair<std::string, std::string>>{{"X-K", "v"}}));

  // Not queued now: nil and the reason, no error.
  host_.post_result = ResourceExhausted("queue full");
  EXPECT_EQ(Run("local ok, err = ctx.http_post('http://allowed/c', 'x') "
                "return tostring(ok) .. ' ' .. err")
                .body,
            "nil queue full");
  // Not allowed or malformed: the handler raises.
  EXPECT_TRUE(Contains(RunError("ctx.http_post('http://evil/', 'x')").message(), "not allowed"));
  EXPECT_TRUE(Contains(
      RunError("ctx.http_post('http://allowed/', 'x', { headers = { 1 } })").message(), "headers"));
  EXPECT_TRUE(
      Contains(RunError("ctx.http_post('http://allowed/')").message(), "want a string or a table"));
}

TEST_F(LuaRuntimeTest, LogIsRecorded) {
  Run(R"(
    ctx.log('a', 1, true, nil, 2.5)
    ctx.warn('careful')
    ctx.error('bad', setmetatable({}, { __tostring = function() return 'obj' end }))
    print('printed'))");
  ASSERT_EQ(host_.logs.size(), 4u);
  EXPECT_EQ(host_.logs[0].level, LogLevel::kInfo);
  EXPECT_EQ(host_.logs[0].message, "a 1 true nil 2.5");
  EXPECT_EQ(host_.logs[1].level, LogLevel::kWarn);
  EXPECT_EQ(host_.logs[1].message, "careful");
  EXPECT_EQ(host_.logs[2].level, LogLevel::kError);
  EXPECT_EQ(host_.logs[2].message, "bad obj");
  EXPECT_EQ(host_.logs[3].level, LogLevel::kInfo);
  EXPECT_EQ(host_.logs[3].message, "printed");
}

TEST_F(LuaRuntimeTest, Now) {
  host_.now = std::chrono::system_clock::time_point(std::chrono::milliseconds(1'234'500));
  EXPECT_EQ(Run("return ctx.now()").body, "1234.5");
}

TEST_F(LuaRuntimeTest, CtxIsReadOnly) {
  EXPECT_TRUE(Contains(RunError("ctx.state = nil").message(), "read-only"));
  EXPECT_TRUE(Contains(RunError("ctx.state.get = nil").message(), "read-only"));
}

// --- Errors --------------------------------------------------------------------------------

TEST_F(LuaRuntimeTest, HandlerErrorIsFunctionErrorAndInstanceStaysUsable) {
  InstancePtr instance = MustCreate(
      "local calls = 0\n"
      "local M = {}\n"
      "function M.handle(event, ctx)\n"
      "  calls = calls + 1\n"
      "  if calls == 1 then error('boom') end\n"
      "  return 'ok ' .. calls\n"
      "end\n"
      "return M\n");
  ASSERT_NE(instance, nullptr);
  Result<Reply> first = Call(*instance);
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.status().code(), StatusCode::kFunctionError);
  EXPECT_EQ(first.status().message(), "handler.lua:5: boom");
  EXPECT_TRUE(instance->Reusable());
  EXPECT_EQ(Call(*instance)->body, "ok 2");
}

TEST_F(LuaRuntimeTest, NonStringErrorValues) {
  EXPECT_EQ(RunError("error({ code = 1 })").message(), "(error object is a table value)");
  EXPECT_EQ(RunError("error(42)").message(), "handler.lua:3: 42");  // numbers are strings
  EXPECT_EQ(RunError("error(42, 0)").message(), "42");
  EXPECT_EQ(RunError("error()").message(), "(error object is a nil value)");
}

TEST_F(LuaRuntimeTest, OrdinaryLuaStillWorks) {
  EXPECT_EQ(Run(R"(
    local ok, err = pcall(error, 'x')
    local xok = xpcall(function() error('y') end, function(e) return e end)
    local gen = coroutine.wrap(function()
      pcall(function() coroutine.yield(1) end)  -- yield across the wrapped pcall
      return 2
    end)
    local co = coroutine.create(function() error('z') end)
    local rok = coroutine.resume(co)
    return table.concat({ tostring(ok), err, tostring(xok), gen(), gen(), tostring(rok),
                          string.format('%d', bit.band(6, 3)), math.floor(2.5),
                          type(collectgarbage('count')) }, ','))")
                .body,
            "false,x,false,1,2,false,2,2,number");
}

TEST_F(LuaRuntimeTest, XpcallStillChecksItsHandler) {
  EXPECT_TRUE(Contains(RunError("xpcall(error, nil)").message(), "function expected"));
  EXPECT_EQ(
      Run("return select(2, xpcall(function() error('x', 0) end, function(e) return 'h:' .. e "
          "end))")
          .body,
      "h:x");
}

// --- Sandbox -------------------------------------------------------------------------------

TEST_F(LuaRuntimeTest, DangerousGlobalsAreGone) {
  Reply reply = Run(R"(
    local names = { 'io', 'os', 'ffi', 'debug', 'jit', 'package', 'loadfile', 'dofile', 'load',
                    'loadstring', 'getfenv', 'setfenv', 'newproxy', 'gcinfo', 'module' }
    local present = {}
    for _, name in ipairs(names) do
      if _G[name] ~= nil then present[#present + 1] = name end
    end
    if string.dump ~= nil then present[#present + 1] = 'string.dump' end
    if ('').dump ~= nil then present[#present + 1] = '("").dump' end
    return table.concat(present, ','))");
  EXPECT_EQ(reply.body, "");
}

TEST_F(LuaRuntimeTest, EscapesAreBlocked) {
  const std::string marker = dir_ + "/pwned";
  const char* attempts[] = {
      "os.execute('touch MARKER')",
      "io.open('MARKER', 'w')",
      "require('ffi').C.system('touch MARKER')",
      "require('os')",
      "require('io')",
      "require('jit')",
      "require('debug')",
      "require('../handler')",
      "require('/etc/passwd')",
      "require('a..b')",
      "loadstring('return 1')",
      "load('return 1')",
      "string.dump(print)",
      "debug.getregistry()",
      "getfenv(1)",
      "collectgarbage('stop')",
  };
  for (const char* attempt : attempts) {
    std::string body = attempt;
    auto pos = body.find("MARKER");
    if (pos != std::string::npos) body.replace(pos, 6, marker);
    SCOPED_TRACE(body);
    Status status = RunError(body);
    EXPECT_EQ(status.code(), StatusCode::kFunctionError) << status.ToString();
  }
  EXPECT_FALSE(std::filesystem::exists(marker));
  EXPECT_TRUE(Contains(RunError("require('os')").message(),
                       "require: module 'os' not found in the function directory"));
  EXPECT_TRUE(Contains(RunError("require('../x')").message(),
                       "require: module '../x' not found in the function directory"));
}

TEST_F(LuaRuntimeTest, RequireLoadsSiblingModulesOnce) {
  WriteFile("util.lua",
            "loads = (loads or 0) + 1\nreturn { double = function(x) return 2 * x end }\n");
  WriteFile("lib/shapes.lua", "return { area = function(w, h) return w * h end }\n");
  WriteFile("noreturn.lua", "x_from_noreturn = 1\n");
  Reply reply = Run(R"(
    local util = require('util')
    local again = require('util')
    return { d = util.double(21), same = util == again, loads = loads,
             area = require('lib.shapes').area(2, 3), flag = require('noreturn') })");
  EXPECT_EQ(Json(reply),
            nlohmann::json::parse(R"({"d":42,"same":true,"loads":1,"area":6,"flag":true})"));
}

TEST_F(LuaRuntimeTest, RequireErrorsNameTheModule) {
  WriteFile("broken.lua", "local x = \n");
  WriteFile("raises.lua", "error('module failed')\n");
  WriteFile("self.lua", "return require('self')\n");
  EXPECT_TRUE(Contains(RunError("require('broken')").message(), "broken.lua:"));
  EXPECT_TRUE(Contains(RunError("require('raises')").message(), "raises.lua:1: module failed"));
  EXPECT_TRUE(Contains(RunError("require('self')").message(), "requires itself"));
  // A failed load is not cached as "loading": the next call reports the same error.
  InstancePtr instance = MustCreate(Handler("require('raises')"));
  ASSERT_NE(instance, nullptr);
  EXPECT_TRUE(Contains(Call(*instance).status().message(), "module failed"));
  EXPECT_TRUE(Contains(Call(*instance).status().message(), "module failed"));
}

// Real LuaJIT bytecode, made with string.dump outside the sandbox.
std::string Bytecode(const char* source) {
  lua_State* L = luaL_newstate();
  luaL_openlibs(L);
  std::string code = std::string("return string.dump(loadstring([[") + source + "]]))";
  std::string bytes;
  if (luaL_dostring(L, code.c_str()) == 0) {
    std::size_t len = 0;
    const char* s = lua_tolstring(L, -1, &len);
    bytes.assign(s, len);
  }
  lua_close(L);
  return bytes;
}

TEST_F(LuaRuntimeTest, BytecodeIsRefused) {
  std::string bytecode = Bytecode("return { handle = function() return 'pwned' end }");
  ASSERT_EQ(bytecode.substr(0, 3), "\x1bLJ");
  WriteFile("evil.lua", bytecode);
  Status status = RunError("return require('evil').handle()");
  EXPECT_EQ(status.code(), StatusCode::kFunctionError);
  EXPECT_TRUE(Contains(status.message(), "evil"));

  Result<InstancePtr> instance = Create(bytecode);
  ASSERT_FALSE(instance.ok());
  EXPECT_EQ(instance.status().code(), StatusCode::kInvalidArgument);
}

// --- Limits --------------------------------------------------------------------------------

class LuaLimitsTest : public LuaRuntimeTest {
 protected:
  std::shared_ptr<FunctionSpec> ShortTimeout() {
    auto spec = Spec();
    spec->limits.timeout = std::chrono::milliseconds(100);
    return spec;
  }
  std::shared_ptr<FunctionSpec> SmallMemory() {
    auto spec = Spec();
    spec->limits.memory_bytes = 16ull << 20;
    spec->limits.timeout = std::chrono::seconds(60);  // memory must run out first
    return spec;
  }

  // The body must end the call with `code`, leave the instance unusable (later calls fail the
  // same way), and a fresh instance of the same function must still work.
  void ExpectAborted(const std::string& body, std::shared_ptr<FunctionSpec> spec, StatusCode code,
                     const std::string& message) {
    SCOPED_TRACE(body);
    std::string source =
        "local M = {}\nfunction M.handle(event, ctx)\n"
        "  if event.body == 'ok' then return 'fine' end\n" +
        body + "\nend\nreturn M\n";
    InstancePtr instance = MustCreate(source, spec);
    ASSERT_NE(instance, nullptr);
    Result<Reply> reply = Call(*instance);
    ASSERT_FALSE(reply.ok());
    EXPECT_EQ(reply.status().code(), code) << reply.status().ToString();
    EXPECT_EQ(reply.status().message(), message);
    EXPECT_FALSE(instance->Reusable());
    event_.body = "ok";
    EXPECT_EQ(Call(*instance).status().code(), code);
    InstancePtr fresh = MustCreate(source, spec);
    ASSERT_NE(fresh, nullptr);
    Result<Reply> fine = Call(*fresh);
    ASSERT_TRUE(fine.ok()) << fine.status().ToString();
    EXPECT_EQ(fine->body, "fine");
    event_.body = "";
  }
};

TEST_F(LuaLimitsTest, InfiniteLoopsHitTheTimeout) {
  const std::string message = "function exceeded its 100ms timeout";
  const char* loops[] = {
      "while true do end",
      "for i = 1, 1e12 do end",
      "local x = 0 repeat x = x + 1 until false",
      "local function f() return f() end return f()",  // a tail call loop
      "while true do pcall(function() while true do end end) end",
      "while true do xpcall(function() while true do end end, function(e) return e end) end",
      "while true do local ok = pcall(error, 'x') end",
      "while true do coroutine.resume(coroutine.create(function() while true do end end)) end",
      "local f = coroutine.wrap(function() while true do end end) while true do pcall(f) end",
      "while true do pcall(string.rep, 'x', 10) end",
      "while true do xpcall(function() while true do end end, function() while true do end end) "
      "end",
  };
  for (const char* loop : loops)
    ExpectAborted(loop, ShortTimeout(), StatusCode::kDeadlineExceeded, message);
}

TEST_F(LuaLimitsTest, MemoryBombsHitTheLimit) {
  const std::string message = "function exceeded its memory limit of 16Mi";
  const char* bombs[] = {
      "return string.rep('x', 1e9)",
      "local t = {} for i = 1, 1e9 do t[i] = i end",
      "local t = {} for i = 1, 1e9 do t['k' .. i] = i end",
      "local s = 'x' while true do s = s .. s end",
      "local parts = {} while true do parts[#parts + 1] = string.rep('y', 1e5) .. #parts end",
      "while true do pcall(string.rep, 'x', 1e9) end",
      "local t = {} while true do local ok = pcall(function() t[#t + 1] = {} end) end",
      "return table.concat({ string.rep('x', 6e6), string.rep('y', 6e6) })",
  };
  for (const char* bomb : bombs) {
    ExpectAborted(bomb, SmallMemory(), StatusCode::kResourceExhausted, message);
  }
}

// LuaJIT's pattern matcher ran in C, where the hook never fires: string.find with this pattern
// ran for 11 s under a 1 s timeout. Method calls go through the same (replaced) functions.
TEST_F(LuaLimitsTest, PatternsCannotEscapeTheTimeout) {
  auto spec = Spec();
  spec->limits.timeout = std::chrono::milliseconds(200);
  const std::string setup = "local s, p = ('a'):rep(24), ('a-'):rep(24) .. 'b'\n";
  const char* calls[] = {
      "return string.find(s, p)",
      "return s:find(p)",
      "return string.match(s, p)",
      "for m in s:gmatch(p) do end",
      "return (string.gsub(s, p, 'x'))",
      "return (s:gsub(p, function() return 'x' end))",
      "while true do pcall(string.find, s, p) end",
      // Cheap per position, quadratic over a long subject.
      "return (('a'):rep(2e5):find('.-b'))",
      "return (('('):rep(2e5):find('%b()'))",
      "return (('a'):rep(2e5):gsub('a*b', ''))",
  };
  for (const char* call : calls) {
    ExpectAborted(setup + call, spec, StatusCode::kDeadlineExceeded,
                  "function exceeded its 200ms timeout");
  }
}

// The JSON text (reply body, ctx.emit payload, ctx.state:put value) grows outside the Lua heap,
// and shared subtables make it exponential: this made 100 MB past a 64Mi limit.
TEST_F(LuaLimitsTest, JsonOutputCannotEscapeTheMemoryLimit) {
  auto spec = Spec();
  spec->limits.memory_bytes = 8ull << 20;
  spec->limits.timeout = std::chrono::seconds(60);  // memory must run out first
  const std::string setup = "local t = 'x' for i = 1, 24 do t = { t, t } end\n";
  const char* uses[] = {
      "return { body = t }",
      "return t",
      "ctx.emit('out', t)",
      "ctx.state:put('k', { t })",
      "local ok = pcall(ctx.emit, 'out', t) return 'caught'",
      "return { body = { string.rep('\\1', 3e6) } }",  // escapes make 6 bytes of each byte
  };
  for (const char* use : uses) {
    ExpectAborted(setup + use, spec, StatusCode::kResourceExhausted,
                  "function exceeded its memory limit of 8Mi");
  }
  EXPECT_TRUE(host_.emitted.empty());
  EXPECT_EQ(store_.Find("fn", "k"), nullptr);
  // Text that fits in what the instance has left is fine.
  InstancePtr instance = MustCreate(Handler("return { string.rep('x', 1e6) }"), spec);
  ASSERT_NE(instance, nullptr);
  Result<Reply> reply = Call(*instance);
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  EXPECT_EQ(reply->body.size(), 1'000'000u + 4);
}

TEST_F(LuaLimitsTest, TinyMemoryLimitFailsAtCreate) {
  auto spec = Spec();
  spec->limits.memory_bytes = 4096;
  Result<InstancePtr> instance = Create(Handler("return 'x'"), spec);
  ASSERT_FALSE(instance.ok());
  EXPECT_EQ(instance.status().code(), StatusCode::kResourceExhausted);
}

TEST_F(LuaLimitsTest, DeepRecursionIsAnOrdinaryError) {
  Status status = RunError("local function f(n) return 1 + f(n + 1) end return f(1)");
  EXPECT_EQ(status.code(), StatusCode::kFunctionError);
  EXPECT_TRUE(Contains(status.message(), "stack overflow"));
}

}  // namespace
}  // namespace wisp
