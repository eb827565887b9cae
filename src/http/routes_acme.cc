// ACME (RFC 8555): the directory, nonces, accounts, orders, authorizations, challenges,
// finalization, certificates and revocation. Every answer carries a fresh Replay-Nonce and the
// directory as its index link; errors are problem documents.
#include <fmt/format.h>

#include <boost/json.hpp>

#include "acme/acme_service.h"
#include "acme/problem.h"
#include "core/log.h"
#include "http/api.h"
#include "http/json.h"
#include "http/metrics.h"
#include "pki/certificate.h"

namespace certfleet::http {
namespace {

namespace json = boost::json;

// An ACME request is a JWS of a few keys and, for finalize, a CSR: 64 KiB is plenty.
constexpr size_t kAcmeBodyLimit = size_t{64} * 1024;
constexpr std::string_view kProblemPrefix = "urn:ietf:params:acme:error:";
constexpr size_t kMaxProfileName = 64;

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
  res.headers.emplace_back("Replay-Nonce", ctx.acme->NewNonce());
  res.headers.emplace_back("Link", fmt::format("<{}>;rel=\"index\"", ctx.acme->Url(profile, "directory")));
  res.headers.emplace_back("Cache-Control", "no-store");
  return res;
}

Response Problem(const ApiContext& ctx, std::string_view request_id, std::string_view profile, const Error& e) {
  auto [type, status] = ProblemOf(e);
  std::string detail = e.message;
  if (status >= 500) {
    log::Error("ACME request failed", {{"request_id", request_id}, {"error", e.message}});
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

Response AcmeJson(const ApiContext& ctx, std::string_view profile, const acme::AcmeAnswer& answer) {
  Response res = JsonResponse(answer.status, answer.body);
  if (answer.location) res.headers.emplace_back("Location", *answer.location);
  for (const auto& link : answer.links) res.headers.emplace_back("Link", link);
  if (answer.retry_after) res.headers.emplace_back("Retry-After", std::to_string(*answer.retry_after));
  return Finish(ctx, profile, std::move(res));
}

// An id from a route segment, or a 404 problem.
Result<int64_t> IdParam(const Request& req, const std::string& name) {
  const auto id = acme::AcmeService::ParseAccountId(req.params.at(name));
  if (!id) return MakeError(ErrorCode::kNotFound, fmt::format("no such {}", name));
  return *id;
}

using Signer = acme::AcmeService::Signer;
using Checked = acme::AcmeService::Checked;

// The checks every ACME POST passes: a served profile, the JOSE content type and the JWS
// (AcmeService::Check). `url_path` is the request's path with its query, as the JWS url names
// it. The problem response when one fails.
struct CheckedPost {
  std::optional<Checked> checked;
  Response refused;  // when checked is empty
};
CheckedPost CheckPost(const ApiContext& ctx, const Request& req, Signer signer, const std::string& url_path) {
  const std::string& profile = req.params.at("profile");
  if (auto known = ctx.acme->FindProfile(profile); !known.ok()) {
    return {std::nullopt, Problem(ctx, req.request_id, profile, known.error())};
  }
  if (req.Header("content-type").value_or("") != "application/jose+json") {
    Response res = Problem(ctx, req.request_id, profile,
                           MakeError(ErrorCode::kInvalidArgument, "Content-Type must be application/jose+json"));
    res.status = 415;
    return {std::nullopt, std::move(res)};
  }
  auto checked = ctx.acme->Check(profile, url_path.empty() ? req.path : url_path, req.body, signer);
  if (!checked.ok()) return {std::nullopt, Problem(ctx, req.request_id, profile, checked.error())};
  return {std::move(*checked), {}};
}

// Runs `answer` for a signed POST that passed CheckPost.
template <typename Answer>
Response SignedPost(const ApiContext& ctx, const Request& req, Signer signer, Answer answer,
                    const std::string& url_path = {}) {
  CheckedPost post = CheckPost(ctx, req, signer, url_path);
  if (!post.checked) return std::move(post.refused);
  const std::string& profile = req.params.at("profile");
  Result<Response> out = answer(profile, *post.checked);
  if (!out.ok()) return Problem(ctx, req.request_id, profile, out.error());
  return std::move(*out);
}

// A signed POST by an account whose answer comes once its write has committed (AcmeService's
// methods that take an Answer), so that no server thread waits for the commit. `start` gets the
// profile, the checked request and the Answer, or returns the error that stops it first.
template <typename Start>
void LaterPost(const ApiContext& ctx, const Request& req, const Responder& respond, Start start) {
  CheckedPost post = CheckPost(ctx, req, Signer::kKid, {});
  if (!post.checked) return respond([res = std::move(post.refused)]() -> Result<Response> { return res; });
  const std::string& profile = req.params.at("profile");
  acme::AcmeService::Answer answer = [c = &ctx, respond, id = req.request_id,
                                      profile](acme::AcmeService::MakeAnswer make) {
    respond([c, id, profile, make = std::move(make)]() -> Result<Response> {
      Result<acme::AcmeAnswer> made = make();
      if (!made.ok()) return Problem(*c, id, profile, made.error());
      return AcmeJson(*c, profile, *made);
    });
  };
  if (Result<void> started = start(profile, *post.checked, answer); !started.ok()) {
    respond([res = Problem(ctx, req.request_id, profile, started.error())]() -> Result<Response> { return res; });
  }
}

// The same about the resource `param` names, with `method` (of AcmeService).
template <typename Method>
void LaterResourcePost(const ApiContext& ctx, const Request& req, const Responder& respond, const std::string& param,
                       Method method) {
  LaterPost(ctx, req, respond,
            [&](std::string_view profile, const Checked& checked, acme::AcmeService::Answer answer) -> Result<void> {
              CF_ASSIGN_OR_RETURN(int64_t id, IdParam(req, param));
              (ctx.acme->*method)(profile, id, checked, std::move(answer));
              return Ok();
            });
}

Response Directory(const ApiContext& ctx, const Request& req) {
  const std::string& profile = req.params.at("profile");
  auto found = ctx.acme->FindProfile(profile);
  if (!found.ok()) return Problem(ctx, req.request_id, profile, found.error());
  return JsonResponse(200, ctx.acme->Directory(*found));
}

// renewalInfo (RFC 9773): a public GET, like the directory.
Response RenewalInfo(const ApiContext& ctx, const Request& req) {
  const std::string& profile = req.params.at("profile");
  auto answer = ctx.acme->RenewalInfo(profile, req.params.at("id"));
  if (!answer.ok()) return Problem(ctx, req.request_id, profile, answer.error());
  return AcmeJson(ctx, profile, *answer);
}

Response NewNonce(const ApiContext& ctx, const Request& req) {
  const std::string& profile = req.params.at("profile");
  if (auto known = ctx.acme->FindProfile(profile); !known.ok())
    return Problem(ctx, req.request_id, profile, known.error());
  Response res;
  res.status = req.method == "HEAD" ? 200 : 204;  // RFC 8555 7.2
  res.content_type.clear();
  return Finish(ctx, profile, std::move(res));
}

Response NewAccount(const ApiContext& ctx, const Request& req) {
  return SignedPost(ctx, req, Signer::kJwk,
                    [&](std::string_view profile, const acme::AcmeService::Checked& checked) -> Result<Response> {
                      CF_ASSIGN_OR_RETURN(auto answer, ctx.acme->NewAccount(profile, checked));
                      return AcmeJson(ctx, profile, answer.created ? 201 : 200,
                                      ctx.acme->AccountJson(profile, answer.account),
                                      ctx.acme->Url(profile, fmt::format("account/{}", answer.account.id)));
                    });
}

Response Account(const ApiContext& ctx, const Request& req) {
  return SignedPost(ctx, req, Signer::kKid, [&](std::string_view profile, const Checked& checked) -> Result<Response> {
    CF_ASSIGN_OR_RETURN(int64_t id, IdParam(req, "id"));
    CF_ASSIGN_OR_RETURN(auto account, ctx.acme->UpdateAccount(profile, id, checked));
    return AcmeJson(ctx, profile, 200, ctx.acme->AccountJson(profile, account));
  });
}

Response KeyChange(const ApiContext& ctx, const Request& req) {
  return SignedPost(ctx, req, Signer::kKid, [&](std::string_view profile, const Checked& checked) -> Result<Response> {
    auto account = ctx.acme->ChangeKey(profile, checked);
    if (!account.ok() && account.error().code == ErrorCode::kAlreadyExists) {
      // RFC 8555 7.3.5: 409 with the account that has the key as Location.
      Response res = Problem(ctx, req.request_id, profile,
                             acme::Problem(ErrorCode::kAlreadyExists, "malformed", "another account has this key"));
      res.status = 409;
      res.headers.emplace_back("Location", account.error().message);
      return res;
    }
    if (!account.ok()) return account.error();
    return AcmeJson(ctx, profile, 200, ctx.acme->AccountJson(profile, *account));
  });
}

Response AccountOrders(const ApiContext& ctx, const Request& req) {
  int64_t cursor = 0;
  std::string url_path;
  if (auto c = req.query.find("cursor"); c != req.query.end()) {
    const auto parsed = acme::AcmeService::ParseAccountId(c->second);
    if (!parsed)
      return Problem(ctx, req.request_id, req.params.at("profile"),
                     MakeError(ErrorCode::kInvalidArgument, "bad cursor"));
    cursor = *parsed;
    url_path = fmt::format("{}?cursor={}", req.path, cursor);
  }
  return SignedPost(
      ctx, req, Signer::kKid,
      [&](std::string_view profile, const Checked& checked) -> Result<Response> {
        CF_ASSIGN_OR_RETURN(int64_t id, IdParam(req, "id"));
        CF_ASSIGN_OR_RETURN(auto answer, ctx.acme->AccountOrders(profile, id, cursor, checked));
        return AcmeJson(ctx, profile, answer);
      },
      url_path);
}

// A signed POST by an account about the resource `param` names, answered by `method`.
template <typename Method>
Response ResourcePost(const ApiContext& ctx, const Request& req, const std::string& param, Method method) {
  return SignedPost(ctx, req, Signer::kKid, [&](std::string_view profile, const Checked& checked) -> Result<Response> {
    CF_ASSIGN_OR_RETURN(int64_t id, IdParam(req, param));
    CF_ASSIGN_OR_RETURN(auto answer, (ctx.acme->*method)(profile, id, checked));
    return AcmeJson(ctx, profile, answer);
  });
}

void NewOrder(const ApiContext& ctx, const Request& req, const Responder& respond) {
  LaterPost(ctx, req, respond,
            [&](std::string_view profile, const Checked& checked, acme::AcmeService::Answer answer) -> Result<void> {
              ctx.acme->NewOrder(profile, checked, std::move(answer));
              return Ok();
            });
}

Response Certificate(const ApiContext& ctx, const Request& req, int alternate) {
  return SignedPost(ctx, req, Signer::kKid, [&](std::string_view profile, const Checked& checked) -> Result<Response> {
    const std::optional<std::string> serial = pki::CanonicalSerial(req.params.at("serial"));
    if (!serial) return MakeError(ErrorCode::kNotFound, "no such certificate");
    CF_ASSIGN_OR_RETURN(auto cert, ctx.acme->Certificate(profile, *serial, alternate, checked));
    Response res;
    res.content_type = "application/pem-certificate-chain";
    res.body = std::move(cert.pem);
    for (const auto& link : cert.links) res.headers.emplace_back("Link", link);
    return Finish(ctx, profile, std::move(res));
  });
}

Response RevokeCert(const ApiContext& ctx, const Request& req) {
  return SignedPost(ctx, req, Signer::kEither,
                    [&](std::string_view profile, const Checked& checked) -> Result<Response> {
                      CF_RETURN_IF_ERROR(ctx.acme->RevokeCertificate(profile, checked));
                      Response res;
                      res.content_type.clear();
                      return Finish(ctx, profile, std::move(res));
                    });
}

// /v1/acme/profiles and /v1/acme/eab: the operator's side.
Result<Response> ListProfiles(const ApiContext& ctx) {
  CF_ASSIGN_OR_RETURN(auto profiles, ctx.acme->ListProfiles());
  json::array items;
  for (const auto& p : profiles) items.push_back(acme::ProfileJson(p));
  return JsonResponse(200, json::object{{"items", std::move(items)}});
}

Result<Response> GetProfile(const ApiContext& ctx, const Request& req) {
  auto found = ctx.acme->FindProfile(req.params.at("name"));
  if (!found.ok()) return MakeError(ErrorCode::kNotFound, found.error().message);
  return JsonResponse(200, acme::ProfileJson(*found));
}

Result<Response> PutProfile(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(json::object body, ParseJsonObject(req.body));
  CF_ASSIGN_OR_RETURN(auto put, ctx.acme->PutProfile(req.params.at("name"), body, req.principal.Actor()));
  return JsonResponse(put.created ? 201 : 200, acme::ProfileJson(put.profile));
}

Result<Response> DeleteProfile(const ApiContext& ctx, const Request& req) {
  CF_RETURN_IF_ERROR(ctx.acme->DeleteProfile(req.params.at("name"), req.principal.Actor()));
  Response res;
  res.status = 204;
  res.content_type.clear();
  return res;
}

Result<Response> CreateEab(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(json::object body, ParseJsonObject(req.body));
  CF_ASSIGN_OR_RETURN(std::string profile, RequiredString(body, "profile", kMaxProfileName));
  auto eab = ctx.acme->NewEab(profile, req.principal.Actor());
  if (!eab.ok() && eab.error().code == ErrorCode::kNotFound) {
    return MakeError(ErrorCode::kInvalidArgument, eab.error().message);
  }
  if (!eab.ok()) return eab.error();
  return NoStore(JsonResponse(201, json::object{{"kid", eab->kid},
                                                {"hmac_key", eab->hmac_key},
                                                {"profile", eab->profile},
                                                {"directory", ctx.acme->Url(eab->profile, "directory")}}));
}

std::string AcmeMetrics(acme::AcmeService& acme) {
  std::string out =
      "# HELP certfleet_acme_orders ACME orders in the store by status.\n# TYPE certfleet_acme_orders gauge\n";
  if (auto counts = acme.OrderCounts(); counts.ok()) {
    for (const auto& [status, n] : *counts) {
      out += fmt::format("certfleet_acme_orders{{status=\"{}\"}} {}\n", EscapeLabel(status), n);
    }
  }
  const auto& v = acme.validations();
  out +=
      "# HELP certfleet_acme_validations_total ACME challenge validations on this node by outcome.\n"
      "# TYPE certfleet_acme_validations_total counter\n";
  out += fmt::format("certfleet_acme_validations_total{{outcome=\"valid\"}} {}\n", v.valid.load());
  out += fmt::format("certfleet_acme_validations_total{{outcome=\"invalid\"}} {}\n", v.invalid.load());
  out += fmt::format("certfleet_acme_validations_total{{outcome=\"retried\"}} {}\n", v.retried.load());
  return out;
}

}  // namespace

void AddAcmeRoutes(Router& router, const ApiContext& ctx) {
  const ApiContext* c = &ctx;
  const RouteOptions signed_post{Access::kPublic, false, kAcmeBodyLimit};
  router.Add("GET", "/acme/{profile}/directory", {Access::kPublic}, [c](Request& r) { return Directory(*c, r); });
  router.Add("GET", "/acme/{profile}/renewal-info/{id}", {Access::kPublic},
             [c](Request& r) { return RenewalInfo(*c, r); });
  router.Add("GET", "/acme/{profile}/new-nonce", {Access::kPublic}, [c](Request& r) { return NewNonce(*c, r); });
  router.Add("POST", "/acme/{profile}/new-account", signed_post, [c](Request& r) { return NewAccount(*c, r); });
  router.Add("POST", "/acme/{profile}/account/{id}", signed_post, [c](Request& r) { return Account(*c, r); });
  router.Add("POST", "/acme/{profile}/account/{id}/orders", signed_post,
             [c](Request& r) { return AccountOrders(*c, r); });
  router.AddAsync("POST", "/acme/{profile}/new-order", signed_post,
                  [c](Request& r, const Responder& respond) { NewOrder(*c, r, respond); });
  router.Add("POST", "/acme/{profile}/order/{id}", signed_post,
             [c](Request& r) { return ResourcePost(*c, r, "id", &acme::AcmeService::Order); });
  router.AddAsync("POST", "/acme/{profile}/order/{id}/finalize", signed_post,
                  [c](Request& r, const Responder& respond) {
                    LaterResourcePost(*c, r, respond, "id", &acme::AcmeService::Finalize);
                  });
  router.Add("POST", "/acme/{profile}/authz/{id}", signed_post,
             [c](Request& r) { return ResourcePost(*c, r, "id", &acme::AcmeService::Authorization); });
  router.AddAsync("POST", "/acme/{profile}/chall/{id}", signed_post, [c](Request& r, const Responder& respond) {
    LaterResourcePost(*c, r, respond, "id", &acme::AcmeService::Challenge);
  });
  router.Add("POST", "/acme/{profile}/cert/{serial}", signed_post, [c](Request& r) { return Certificate(*c, r, 0); });
  router.Add("POST", "/acme/{profile}/cert/{serial}/1", signed_post, [c](Request& r) { return Certificate(*c, r, 1); });
  router.Add("POST", "/acme/{profile}/key-change", signed_post, [c](Request& r) { return KeyChange(*c, r); });
  router.Add("POST", "/acme/{profile}/revoke-cert", signed_post, [c](Request& r) { return RevokeCert(*c, r); });
  router.Add("GET", "/v1/acme/profiles", {Access::kReader}, [c](Request&) { return ListProfiles(*c); });
  router.Add("GET", "/v1/acme/profiles/{name}", {Access::kReader}, [c](Request& r) { return GetProfile(*c, r); });
  router.Add("PUT", "/v1/acme/profiles/{name}", {Access::kAdmin}, [c](Request& r) { return PutProfile(*c, r); });
  router.Add("DELETE", "/v1/acme/profiles/{name}", {Access::kAdmin}, [c](Request& r) { return DeleteProfile(*c, r); });
  router.Add("POST", "/v1/acme/eab", {Access::kAdmin}, [c](Request& r) { return CreateEab(*c, r); });
  ctx.metrics.AddCollector([c] { return AcmeMetrics(*c->acme); });
}

}  // namespace certfleet::http
