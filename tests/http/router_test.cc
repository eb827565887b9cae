#include "http/router.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

#include "http/json.h"

namespace certfleet::http {
namespace {

std::string ErrorCodeOf(const Response& r) {
  return std::string(boost::json::parse(r.body).at("error").at("code").as_string());
}

class RouterTest : public ::testing::Test {
 protected:
  RouterTest()
      : router_([](std::string_view bearer) -> Result<std::optional<Principal>> {
          if (bearer == "reader-token")
            return std::optional<Principal>(Principal{true, "r1", "r", store::Role::kReader});
          if (bearer == "admin-token") return std::optional<Principal>(Principal{true, "a1", "a", store::Role::kAdmin});
          return std::optional<Principal>();
        }) {
    router_.Add("GET", "/healthz", {Access::kPublic},
                [](Request&) { return JsonResponse(200, boost::json::object{}); });
    router_.Add("GET", "/v1/things/{name}", {Access::kReader}, [](Request& r) {
      return JsonResponse(200, boost::json::object{{"name", r.params.at("name")}, {"actor", r.principal.Actor()}});
    });
    router_.Add("DELETE", "/v1/things/{name}", {Access::kAdmin}, [](Request&) {
      Response r;
      r.status = 204;
      return r;
    });
    router_.Add("POST", "/v1/agent", {Access::kPublic, true}, [](Request& r) {
      return JsonResponse(200, boost::json::object{{"subject", r.client_cert->subject}});
    });
    router_.Add("GET", "/v1/boom", {Access::kPublic}, [](Request&) -> Response { throw std::runtime_error("bug"); });
    router_.Add("GET", "/v1/refused/{code}", {Access::kPublic}, [](Request& r) -> Result<Response> {
      if (r.params.at("code") == "exists") return MakeError(ErrorCode::kAlreadyExists, "a thing x exists");
      if (r.params.at("code") == "denied") return MakeError(ErrorCode::kPermissionDenied, "not yours");
      return MakeError(ErrorCode::kInternal, "disk /var/lib/secret unreadable");
    });
  }
  Response Call(std::string method, std::string path, std::string token = "") {
    Request req;
    req.method = method;
    req.path = path;
    if (!token.empty()) req.headers.emplace_back("authorization", "Bearer " + token);
    return *router_.Dispatch(router_.Find(req.method, req.path), req, nullptr);
  }
  Router router_;
};

TEST_F(RouterTest, PublicRoutesNeedNoToken) { EXPECT_EQ(Call("GET", "/healthz").status, 200); }

TEST_F(RouterTest, UnknownPathIs404AndWrongMethodIs405WithAllow) {
  auto r = Call("GET", "/v1/nothing");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(ErrorCodeOf(r), "not_found");
  auto m = Call("PUT", "/v1/things/x", "admin-token");
  EXPECT_EQ(m.status, 405);
  ASSERT_EQ(m.headers.size(), 1u);
  EXPECT_EQ(m.headers[0].second, "GET, DELETE");
  EXPECT_EQ(Call("GET", "/v1/things/").status, 404);
}

TEST_F(RouterTest, TokensAndRoles) {
  EXPECT_EQ(Call("GET", "/v1/things/x").status, 401);
  EXPECT_EQ(Call("GET", "/v1/things/x", "wrong").status, 401);
  auto ok = Call("GET", "/v1/things/x", "reader-token");
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(boost::json::parse(ok.body).at("actor").as_string(), "token:r1");
  auto denied = Call("DELETE", "/v1/things/x", "reader-token");
  EXPECT_EQ(denied.status, 403);
  EXPECT_EQ(ErrorCodeOf(denied), "permission_denied");
  EXPECT_EQ(Call("DELETE", "/v1/things/x", "admin-token").status, 204);
  EXPECT_EQ(Call("GET", "/v1/things/x", "admin-token").status, 200) << "roles nest";
}

TEST_F(RouterTest, ClientCertificateRoutesRefuseCallersWithout) {
  auto r = Call("POST", "/v1/agent");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(ErrorCodeOf(r), "client_certificate_required");
}

TEST_F(RouterTest, AThrowingHandlerIs500WithoutDetails) {
  auto r = Call("GET", "/v1/boom");
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.body.find("bug"), std::string::npos);
}

TEST_F(RouterTest, ErrorsAHandlerReturnsAreAnsweredWithOneStatusAndCodeEach) {
  Response exists = Call("GET", "/v1/refused/exists");
  EXPECT_EQ(exists.status, 409);
  EXPECT_EQ(ErrorCodeOf(exists), "already_exists");
  EXPECT_NE(exists.body.find("a thing x exists"), std::string::npos);
  Response denied = Call("GET", "/v1/refused/denied");
  EXPECT_EQ(denied.status, 403);
  EXPECT_EQ(ErrorCodeOf(denied), "permission_denied");
  Response internal = Call("GET", "/v1/refused/internal");
  EXPECT_EQ(internal.status, 500);
  EXPECT_EQ(internal.body.find("secret"), std::string::npos) << "a server error's details stay in the log";
}

TEST(Router, AnAsynchronousResponseThatThrowsIsA500) {
  Response r = Router::Answer("rid", "/v1/later", []() -> Result<Response> { throw std::runtime_error("bug"); });
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(ErrorCodeOf(r), "internal");
  EXPECT_EQ(Router::Answer("rid", "/v1/later", [] { return MakeError(ErrorCode::kNotFound, "no x"); }).status, 404);
}

TEST(Json, MalformedBodiesAndPages) {
  EXPECT_FALSE(ParseJsonObject("{").ok());
  EXPECT_FALSE(ParseJsonObject("[]").ok());
  EXPECT_TRUE(ParseJsonObject("{\"a\":1}").ok());
  Request req;
  req.query["limit"] = "1001";
  EXPECT_FALSE(ParsePage(req).ok());
  req.query["limit"] = "abc";
  EXPECT_FALSE(ParsePage(req).ok());
  req.query["limit"] = "1000";
  EXPECT_EQ(ParsePage(req)->limit, 1000);
  EXPECT_EQ(ParsePage(Request{})->limit, 100);
}

TEST(RequestTest, BasicCredentialsAreUserAndPassword) {
  auto with = [](std::string value) {
    Request req;
    req.headers.emplace_back("authorization", std::move(value));
    return req.BasicCredentials();
  };
  EXPECT_EQ(with("Basic " + Base64Encode("id-1:pa:ss")), std::make_pair(std::string("id-1"), std::string("pa:ss")));
  EXPECT_EQ(with("basic  " + Base64Encode("id-1:")), std::make_pair(std::string("id-1"), std::string()));
  EXPECT_FALSE(with("Basic " + Base64Encode("no colon")));
  EXPECT_FALSE(with("Basic !!!"));
  EXPECT_FALSE(with("Bearer abc"));
  EXPECT_FALSE(Request{}.BasicCredentials());
}

TEST(RequestTest, TheBearerSchemeIsReadInAnyCase) {
  auto with = [](std::string value) {
    Request req;
    req.headers.emplace_back("authorization", std::move(value));
    return req.BearerToken();
  };
  EXPECT_EQ(with("Bearer cf_abc"), "cf_abc");
  EXPECT_EQ(with("bearer cf_abc"), "cf_abc");
  EXPECT_EQ(with("BEARER cf_abc"), "cf_abc");
  EXPECT_FALSE(with("Bearer "));
  EXPECT_FALSE(with("Basic cf_abc"));
  EXPECT_FALSE(Request{}.BearerToken());
}

}  // namespace
}  // namespace certfleet::http
