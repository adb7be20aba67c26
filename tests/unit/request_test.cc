#include "http/request.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace wisp
