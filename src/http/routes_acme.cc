// ACME (RFC 8555), being built: the directory, nonces and accounts. Every answer carries a
// fresh Replay-Nonce and the directory as its index link; errors are problem documents.
#include <fmt/format.h>

#include <boost/json.hpp>

#include "acme/acme_service.h"
#include "core/log.h"
#include "http/api.h"
#include "http/json.h"

namespace certfleet::http {
namespace {

namespace json = boost::json;

// An ACME request is a JWS of a few keys and, for finalize, a CSR: 64 KiB is plenty.
constexpr size_t kAcmeBodyLimit = size_t{64} * 1024;
constexpr std::string_view kProblemPrefix = "urn:ietf:params:acme:error:";

// The RFC's problem type and status for an error: its reason when it names one.
std::pair<std::string, int> ProblemOf(const Error& e) {
  switch (e.code) {
    case ErrorCode::kInvalidArgument:
      return {e.reason.empty() ? "malformed" : e.reason, 400};
    case ErrorCode::kUnauthenticated:
    case ErrorCode::kPermissionDenied:
      return {e.reason.empty() ? "unauthorized" : e.reason, 403};
    case ErrorCode::kNotFound:
      return {e.reason.empty() ? "malformed" : e.reason, 404};
    case ErrorCode::kResourceExhausted:
      return {"rateLimited", 429};
    case ErrorCode::kUnavailable:
      return {"serverInternal", 503};
    case ErrorCode::kInternal:
    case ErrorCode::kDeadlineExceeded:
      return {"serverInternal", 500};
    default:
      return {e.reason.empty() ? "malformed" : e.reason, 409};
  }
}

// Adds what every ACME answer carries.
Response Finish(const ApiContext& ctx, std::string_view profile, Response res) {
  if (auto nonce = ctx.acme->NewNonce(); nonce.ok()) {
    res.headers.emplace_back("Replay-Nonce", *nonce);
  } else {
    log::Error("ACME nonce", {{"error", nonce.error().message}});
  }
  res.headers.emplace_back("Link", fmt::format("<{}>;rel=\"index\"", ctx.acme->Url(profile, "directory")));
  res.headers.emplace_back("Cache-Control", "no-store");
  return res;
}

Response Problem(const ApiContext& ctx, const Request& req, std::string_view profile, const Error& e) {
  auto [type, status] = ProblemOf(e);
  std::string detail = e.message;
  if (status >= 500) {
    log::Error("ACME request failed", {{"request_id", req.request_id}, {"error", e.message}});
    detail = "the server could not complete the request; see its log";
  }
  Response res;
  res.status = status;
  res.content_type = "application/problem+json";
  res.body = json::serialize(
      json::object{{"type", std::string(kProblemPrefix) + type}, {"detail", detail}, {"status", status}});
  return Finish(ctx, profile, std::move(res));
}

Response AcmeJson(const ApiContext& ctx, std::string_view profile, int status, const json::object& body,
                  std::optional<std::string> location = std::nullopt) {
  Response res = JsonResponse(status, body);
  if (location) res.headers.emplace_back("Location", *location);
  return Finish(ctx, profile, std::move(res));
}

// Runs `answer` for a signed POST after the checks every ACME POST passes.
template <typename Answer>
Response SignedPost(const ApiContext& ctx, const Request& req, bool wants_jwk, Answer answer) {
  const std::string& profile = req.params.at("profile");
  if (auto known = ctx.acme->CheckProfile(profile); !known.ok()) return Problem(ctx, req, profile, known.error());
  if (req.Header("content-type").value_or("") != "application/jose+json") {
    Response res = Problem(ctx, req, profile,
                           MakeError(ErrorCode::kInvalidArgument, "Content-Type must be application/jose+json"));
    res.status = 415;
    return res;
  }
  auto checked = ctx.acme->Check(profile, req.path, req.body, wants_jwk);
  if (!checked.ok()) return Problem(ctx, req, profile, checked.error());
  Result<Response> out = answer(profile, *checked);
  if (!out.ok()) return Problem(ctx, req, profile, out.error());
  return std::move(*out);
}

Response Directory(const ApiContext& ctx, const Request& req) {
  const std::string& profile = req.params.at("profile");
  if (auto known = ctx.acme->CheckProfile(profile); !known.ok()) return Problem(ctx, req, profile, known.error());
  return JsonResponse(200, ctx.acme->Directory(profile));
}

Response NewNonce(const ApiContext& ctx, const Request& req) {
  const std::string& profile = req.params.at("profile");
  if (auto known = ctx.acme->CheckProfile(profile); !known.ok()) return Problem(ctx, req, profile, known.error());
  Response res;
  res.status = req.method == "HEAD" ? 200 : 204;  // RFC 8555 7.2
  res.content_type.clear();
  return Finish(ctx, profile, std::move(res));
}

Response NewAccount(const ApiContext& ctx, const Request& req) {
  return SignedPost(
      ctx, req, true, [&](std::string_view profile, const acme::AcmeService::Checked& checked) -> Result<Response> {
        CF_ASSIGN_OR_RETURN(auto answer, ctx.acme->NewAccount(profile, checked));
        return AcmeJson(ctx, profile, answer.created ? 201 : 200, ctx.acme->AccountJson(profile, answer.account),
                        ctx.acme->Url(profile, fmt::format("account/{}", answer.account.id)));
      });
}

Response Account(const ApiContext& ctx, const Request& req) {
  return SignedPost(ctx, req, false,
                    [&](std::string_view profile, const acme::AcmeService::Checked& checked) -> Result<Response> {
                      const auto id = acme::AcmeService::ParseAccountId(req.params.at("id"));
                      if (!id) return MakeError(ErrorCode::kNotFound, "no such account");
                      CF_ASSIGN_OR_RETURN(auto account, ctx.acme->UpdateAccount(profile, *id, checked));
                      return AcmeJson(ctx, profile, 200, ctx.acme->AccountJson(profile, account));
                    });
}

}  // namespace

void AddAcmeRoutes(Router& router, const ApiContext& ctx) {
  const ApiContext* c = &ctx;
  const RouteOptions signed_post{Access::kPublic, false, kAcmeBodyLimit};
  router.Add("GET", "/acme/{profile}/directory", {Access::kPublic}, [c](Request& r) { return Directory(*c, r); });
  router.Add("GET", "/acme/{profile}/new-nonce", {Access::kPublic}, [c](Request& r) { return NewNonce(*c, r); });
  router.Add("POST", "/acme/{profile}/new-account", signed_post, [c](Request& r) { return NewAccount(*c, r); });
  router.Add("POST", "/acme/{profile}/account/{id}", signed_post, [c](Request& r) { return Account(*c, r); });
}

}  // namespace certfleet::http
