#include "http/json.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

#include "core/json.h"
#include "core/text.h"

namespace certfleet::http {
namespace {

TEST(Json, KeysGivenTwiceInOneObjectAreRefused) {
  EXPECT_TRUE(ParseJsonObject(R"({"role":"reader","name":"x"})").ok());
  EXPECT_TRUE(ParseJsonObject(R"({"a":{"k":1},"b":{"k":2},"c":[{"k":1},{"k":2}]})").ok())
      << "the same key in different objects is fine";
  auto twice = ParseJsonObject(R"({"role":"reader","role":"admin"})");
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(twice.error().message.find("\"role\" appears twice"), std::string::npos) << twice.error().message;
  EXPECT_FALSE(ParseJsonObject(R"({"a":{"k":1,"k":2}})").ok()) << "nested";
  EXPECT_FALSE(ParseJsonObject(R"({"role":1,"\u0072ole":2})").ok()) << "the same key, escaped differently";
  EXPECT_FALSE(ParseJson(R"([{"k":1},{"k":1,"k":2}])").ok()) << "in an array's object";
  EXPECT_TRUE(ParseJson(R"([{"k":1},{"k":2}])").ok());
}

TEST(Json, StringFieldsRefuseControlCharacters) {
  auto body = ParseJsonObject(R"({"name":"x\u001b[2J","pem":"-----BEGIN-----\nAAA\n","nul":"a\u0000b"})");
  ASSERT_TRUE(body.ok());
  EXPECT_FALSE(OptionalString(*body, "name", 100).ok());
  EXPECT_FALSE(RequiredString(*body, "nul", 100).ok());
  EXPECT_FALSE(OptionalString(*body, "pem", 100).ok()) << "one line by default";
  EXPECT_TRUE(OptionalString(*body, "pem", 100, Text::kLines).ok());
  EXPECT_FALSE(OptionalString(*body, "name", 100, Text::kLines).ok()) << "an escape sequence is no line break";
}

TEST(Json, ResponsesAreValidUtf8WhateverTheyEcho) {
  Response r = ErrorResponse(400, "invalid_argument", "device_id '\xff\xfe' is not a valid name");
  EXPECT_TRUE(IsValidUtf8(r.body)) << r.body;
  boost::system::error_code ec;
  auto parsed = boost::json::parse(r.body, ec);  // Boost.JSON checks UTF-8 when it parses
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(parsed.at("error").at("message").as_string(), "device_id '\xef\xbf\xbd\xef\xbf\xbd' is not a valid name");
}

TEST(Json, MediaTypesCompareWithoutCaseOrParameters) {
  Request req;
  req.headers = {{"content-type", " TEXT/CSV ; charset=UTF-8"}};
  EXPECT_EQ(MediaType(req), "text/csv");
  req.headers = {{"content-type", "Application/JSON"}};
  EXPECT_EQ(MediaType(req), "application/json");
  req.headers.clear();
  EXPECT_EQ(MediaType(req), "");
}

}  // namespace
}  // namespace certfleet::http
