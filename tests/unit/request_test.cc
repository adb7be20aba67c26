#include "http/request.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>

namespace wisp {
namespace {

TEST(RouteTargetTest, RoutesEveryEndpoint) {
  EXPECT_EQ(RouteTarget("/healthz").kind, RouteKind::kHealth);
  EXPECT_EQ(RouteTarget("/metrics").kind, RouteKind::kMetrics);
  EXPECT_EQ(RouteTarget("/v1/functions").kind, RouteKind::kFunctions);
  EXPECT_EQ(RouteTarget("/v1/functions/").kind, RouteKind::kFunctions);

  Route fn = RouteTarget("/v1/functions/pump-alert");
  EXPECT_EQ(fn.kind, RouteKind::kFunction);
  EXPECT_EQ(fn.name, "pump-alert");

  Route invoke = RouteTarget("/v1/functions/hello/invoke?x=1&y=2");
  EXPECT_EQ(invoke.kind, RouteKind::kFunctionInvoke);
  EXPECT_EQ(invoke.name, "hello");
  EXPECT_EQ(invoke.path, "/v1/functions/hello/invoke");
  EXPECT_EQ(invoke.query, "x=1&y=2");

  Route async = RouteTarget("/v1/functions/hello/invoke-async");
  EXPECT_EQ(async.kind, RouteKind::kFunctionInvokeAsync);
  EXPECT_EQ(async.name, "hello");

  Route call = RouteTarget("/v1/calls/0123abcd?x=1");
  EXPECT_EQ(call.kind, RouteKind::kCall);
  EXPECT_EQ(call.name, "0123abcd");

  Route logs = RouteTarget("/v1/functions/hello/logs?tail=5");
  EXPECT_EQ(logs.kind, RouteKind::kFunctionLogs);
  EXPECT_EQ(QueryParam(logs.query, "tail"), "5");
}

TEST(RouteTargetTest, UnknownTargetsAreNotFound) {
  for (const char* target : {"", "/", "/v1", "/v1/functionsX", "/v1/functions//invoke",
                             "/v1/functions/hello/other", "/v1/functions/hello/invoke/extra",
                             "/healthz/x", "*", "/v1/calls/", "/v1/calls/a/b", "/v1/calls"}) {
    EXPECT_EQ(RouteTarget(target).kind, RouteKind::kNotFound) << target;
  }
}

TEST(BearerTokenTest, ExtractsTokenCaseInsensitively) {
  EXPECT_EQ(BearerToken("Bearer abc"), "abc");
  EXPECT_EQ(BearerToken("bearer  abc "), "abc");
  EXPECT_EQ(BearerToken("Basic abc"), "");
  EXPECT_EQ(BearerToken("Bearer"), "");
  EXPECT_EQ(BearerToken(""), "");
}

TEST(JsonContentTypeTest, RecognisesJsonTypes) {
  EXPECT_TRUE(IsJsonContentType("application/json"));
  EXPECT_TRUE(IsJsonContentType("Application/JSON; charset=utf-8"));
  EXPECT_TRUE(IsJsonContentType("application/vnd.api+json"));
  EXPECT_FALSE(IsJsonContentType("text/plain"));
  EXPECT_FALSE(IsJsonContentType("application/cbor"));
  EXPECT_FALSE(IsJsonContentType(""));
}

TEST(DecodeJsonBodyTest, ParsesValidJson) {
  auto json = DecodeJsonBody(R"({"pump":"p1","vibration":9.5,"tags":["a","b"]})");
  ASSERT_TRUE(json.ok()) << json.status().ToString();
  EXPECT_EQ((*json)["pump"], "p1");
  EXPECT_DOUBLE_EQ((*json)["vibration"].get<double>(), 9.5);
}

TEST(DecodeJsonBodyTest, InvalidJsonSaysWhere) {
  auto json = DecodeJsonBody(R"({"pump": )");
  ASSERT_FALSE(json.ok());
  EXPECT_EQ(json.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(json.status().message().find("not valid JSON"), std::string::npos);
  EXPECT_NE(json.status().message().find("line 1"), std::string::npos) << json.status().message();
}

TEST(DecodeJsonBodyTest, NumberTooLargeIsAnErrorNotACrash) {
  // Found by request_fuzz: nlohmann reports a double overflow as out_of_range, not parse_error.
  auto json = DecodeJsonBody(R"({"v": 1.5E9812})");
  ASSERT_FALSE(json.ok());
  EXPECT_EQ(json.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(json.status().message().find("not valid JSON"), std::string::npos);
  EXPECT_NE(json.status().message().find("1.5E9812"), std::string::npos) << json.status().message();
}

TEST(DecodeJsonBodyTest, RefusesDeepNestingBeforeParsing) {
  std::string deep(100000, '[');
  auto json = DecodeJsonBody(deep);
  ASSERT_FALSE(json.ok());
  EXPECT_NE(json.status().message().find("deeper than"), std::string::npos);

  std::string ok_depth = std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']');
  EXPECT_TRUE(DecodeJsonBody(ok_depth).ok());
  // Brackets inside strings do not count.
  EXPECT_TRUE(DecodeJsonBody("\"" + std::string(1000, '[') + "\"").ok());
}

TEST(QueryParamTest, FindsKeys) {
  EXPECT_EQ(QueryParam("a=1&b=2&c", "b"), "2");
  EXPECT_EQ(QueryParam("a=1&b=2&c", "c"), "");
  EXPECT_EQ(QueryParam("a=1", "z"), "");
  EXPECT_EQ(QueryParam("", "a"), "");
}

TEST(DecodeInvokeBodyTest, DecodesJsonAndCborByContentTypeAndLeavesTheRest) {
  auto json_body = DecodeInvokeBody("application/json; charset=utf-8", R"({"a":1})");
  ASSERT_TRUE(json_body.ok() && *json_body);
  EXPECT_EQ((**json_body)["a"], 1);

  const nlohmann::json value = {{"pump", "p1"}, {"x", {1.5, -2, 3}}};
  std::string cbor;
  nlohmann::json::to_cbor(value, cbor);
  auto cbor_body = DecodeInvokeBody("Application/CBOR", cbor);
  ASSERT_TRUE(cbor_body.ok() && *cbor_body) << cbor_body.status().ToString();
  EXPECT_EQ(**cbor_body, value);

  auto text = DecodeInvokeBody("text/plain", "hello");
  ASSERT_TRUE(text.ok());
  EXPECT_FALSE(*text);
  auto empty = DecodeInvokeBody("application/cbor", "");
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(*empty);
}

TEST(DecodeInvokeBodyTest, BadCborIsAnErrorThatSaysSo) {
  std::string cbor;
  nlohmann::json::to_cbor(nlohmann::json{{"a", "some text"}}, cbor);
  auto truncated = DecodeInvokeBody("application/cbor", cbor.substr(0, cbor.size() - 3));
  ASSERT_FALSE(truncated.ok());
  EXPECT_EQ(truncated.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(truncated.status().message().find("request body is not valid CBOR"), std::string::npos)
      << truncated.status().message();
  auto trailing = DecodeInvokeBody("application/cbor", cbor + "x");
  EXPECT_FALSE(trailing.ok());
  // An array length no memory could hold.
  auto huge =
      DecodeInvokeBody("application/cbor", std::string("\x9b\xff\xff\xff\xff\xff\xff\xff\xff", 9));
  EXPECT_FALSE(huge.ok());
  // Text that is not UTF-8 (found by cbor_payload_fuzz: nlohmann keeps it, then throws when
  // the event is written out as JSON).
  auto latin1 = DecodeInvokeBody("application/cbor", std::string("\xa1\x61k\x62\xfb\x40", 6));
  ASSERT_FALSE(latin1.ok());
  EXPECT_NE(latin1.status().message().find("UTF-8"), std::string::npos)
      << latin1.status().message();
}

// 200,000 nested one-element arrays overflowed the stack in nlohmann's recursive CBOR reader
// (an MQTT payload could take wispd down); the depth pass refuses them first.
TEST(DecodeInvokeBodyTest, DeepCborNestingIsRefusedWithoutRecursing) {
  std::string deep(200000, '\x81');
  deep.push_back('\x00');
  auto refused = DecodeInvokeBody("application/cbor", deep);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("deeper than 64"), std::string::npos)
      << refused.status().message();
  std::string shallow(10, '\x81');
  shallow.push_back('\x00');
  EXPECT_TRUE(DecodeInvokeBody("application/cbor", shallow).ok());
}

}  // namespace
}  // namespace wisp
