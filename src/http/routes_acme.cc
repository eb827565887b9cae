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

// `status`: the HTTP status, when not the error's own (the document says the one it comes with).
Response Problem(const ApiContext& ctx, std::string_view request_id, std::string_view profile, const Error& e,
                 int status = 0) {
  auto [type, own_status] = ProblemOf(e);
  if (status == 0) status = own_status;
  std::string detail = e.message;
  if (status >= 500) {
    log::Error("ACME request failed", {{"request_id", request_id}, {"error", e.message}});
    detail = "the server could not complete the request; see its log";
  }
  json::object body{{"type", std::string(kProblemPrefix) + type}, {"detail", detail}, {"status", status}};
  // The algorithms accepted, with the problem that names one that is not (RFC 8555 6.2).
  if (type == "badSignatureAlgorithm") {
    json::array algorithms;
    for (std::string_view alg : acme::kSupportedAlgorithms) algorithms.emplace_back(alg);
    body["algorithms"] = std::move(algorithms);
  }
  Response res;
  res.status = status;
  res.content_type = "application/problem+json";
  res.body = json::serialize(body);
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

using Signer = acme::AcmeService::Signer;
using Checked = acme::AcmeService::Checked;

// A response made already, for a Responder.
MakeResponse Ready(Response res) {
  return [res = std::move(res)]() -> Result<Response> { return res; };
}

// A signed POST as its answer needs it, which may be made after the handler has returned
// (when the nonce's use is written to the store) and so without the Request.
struct Asked {
  const ApiContext* ctx;
  std::string request_id;
  std::string profile;
  std::map<std::string, std::string> params;  // the route's
  Responder respond;

  void Reply(Response res) const { respond(Ready(std::move(res))); }
  void Fail(const Error& e) const { Reply(Problem(*ctx, request_id, profile, e)); }
  // Answers with what `make` gives: a response, or the error's problem document.
  template <typename Make>
  void Answer(Make make) const {
    Result<Response> out = make();
    if (!out.ok()) return Fail(out.error());
    Reply(std::move(*out));
  }
  // For AcmeService's methods that answer once their write has committed: the answer is made
  // on a server thread.
  acme::AcmeService::Answer Later() const {
    return [c = ctx, id = request_id, profile = profile, respond = respond](acme::AcmeService::MakeAnswer make) {
      respond([c, id, profile, make = std::move(make)]() -> Result<Response> {
        Result<acme::AcmeAnswer> made = make();
        if (!made.ok()) return Problem(*c, id, profile, made.error());
        return AcmeJson(*c, profile, *made);
      });
    };
  }
  // An id from a route segment, or a 404 problem.
  Result<int64_t> Id(const std::string& name) const {
    const auto id = acme::AcmeService::ParseAccountId(params.at(name));
    if (!id) return MakeError(ErrorCode::kNotFound, fmt::format("no such {}", name));
    return *id;
  }
};

// Every signed POST: a served profile, the JOSE content type and the JWS (AcmeService::Check,
// which holds no server thread while a nonce's use commits). Then `handle` gets the Asked and
// the checked request, and answers once through the Asked. `url_path` is the request's path
// with its query, as the JWS url names it.
template <typename Handle>
void SignedPost(const ApiContext& ctx, const Request& req, const Responder& respond, Signer signer, Handle handle,
                const std::string& url_path = {}) {
  auto asked =
      std::make_shared<const Asked>(Asked{&ctx, req.request_id, req.params.at("profile"), req.params, respond});
  if (auto known = ctx.acme->FindProfile(asked->profile); !known.ok()) return asked->Fail(known.error());
  if (req.Header("content-type").value_or("") != "application/jose+json") {
    return asked->Reply(Problem(ctx, req.request_id, asked->profile,
                                MakeError(ErrorCode::kInvalidArgument, "Content-Type must be application/jose+json"),
                                415));
  }
  ctx.acme->Check(asked->profile, url_path.empty() ? req.path : url_path, req.body, signer,
                  [asked, handle = std::move(handle)](Result<Checked> checked) {
                    if (!checked.ok()) return asked->Fail(checked.error());
                    handle(*asked, *checked);
                  });
}

// A signed POST by an account about the resource `param` names, answered by `method`.
template <typename Method>
void ResourcePost(const ApiContext& ctx, const Request& req, const Responder& respond, const std::string& param,
                  Method method) {
  SignedPost(ctx, req, respond, Signer::kKid, [param, method](const Asked& a, const Checked& checked) {
    a.Answer([&]() -> Result<Response> {
      CF_ASSIGN_OR_RETURN(int64_t id, a.Id(param));
      CF_ASSIGN_OR_RETURN(auto answer, (a.ctx->acme->*method)(a.profile, id, checked));
      return AcmeJson(*a.ctx, a.profile, answer);
    });
  });
}

// The same with a method that answers once its write has committed.
template <typename Method>
void LaterResourcePost(const ApiContext& ctx, const Request& req, const Responder& respond, const std::string& param,
                       Method method) {
  SignedPost(ctx, req, respond, Signer::kKid, [param, method](const Asked& a, const Checked& checked) {
    auto id = a.Id(param);
    if (!id.ok()) return a.Fail(id.error());
    (a.ctx->acme->*method)(a.profile, *id, checked, a.Later());
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

void NewAccount(const ApiContext& ctx, const Request& req, const Responder& respond) {
  SignedPost(ctx, req, respond, Signer::kJwk, [](const Asked& a, const Checked& checked) {
    a.Answer([&]() -> Result<Response> {
      CF_ASSIGN_OR_RETURN(auto answer, a.ctx->acme->NewAccount(a.profile, checked));
      return AcmeJson(*a.ctx, a.profile, answer.created ? 201 : 200,
                      a.ctx->acme->AccountJson(a.profile, answer.account),
                      a.ctx->acme->Url(a.profile, fmt::format("account/{}", answer.account.id)));
    });
  });
}

void Account(const ApiContext& ctx, const Request& req, const Responder& respond) {
  SignedPost(ctx, req, respond, Signer::kKid, [](const Asked& a, const Checked& checked) {
    a.Answer([&]() -> Result<Response> {
      CF_ASSIGN_OR_RETURN(int64_t id, a.Id("id"));
      CF_ASSIGN_OR_RETURN(auto account, a.ctx->acme->UpdateAccount(a.profile, id, checked));
      return AcmeJson(*a.ctx, a.profile, 200, a.ctx->acme->AccountJson(a.profile, account));
    });
  });
}

void KeyChange(const ApiContext& ctx, const Request& req, const Responder& respond) {
  SignedPost(ctx, req, respond, Signer::kKid, [](const Asked& a, const Checked& checked) {
    auto account = a.ctx->acme->ChangeKey(a.profile, checked);
    if (!account.ok() && account.error().code == ErrorCode::kAlreadyExists) {
      // RFC 8555 7.3.5: 409 with the account that has the key as Location.
      Response res = Problem(*a.ctx, a.request_id, a.profile,
                             acme::Problem(ErrorCode::kAlreadyExists, "malformed", "another account has this key"));
      res.status = 409;
      res.headers.emplace_back("Location", account.error().message);
      return a.Reply(std::move(res));
    }
    if (!account.ok()) return a.Fail(account.error());
    a.Reply(AcmeJson(*a.ctx, a.profile, 200, a.ctx->acme->AccountJson(a.profile, *account)));
  });
}

void AccountOrders(const ApiContext& ctx, const Request& req, const Responder& respond) {
  int64_t cursor = 0;
  std::string url_path;
  if (auto c = req.query.find("cursor"); c != req.query.end()) {
    const auto parsed = acme::AcmeService::ParseAccountId(c->second);
    if (!parsed) {
      Response res =
          Problem(ctx, req.request_id, req.params.at("profile"), MakeError(ErrorCode::kInvalidArgument, "bad cursor"));
      return respond(Ready(std::move(res)));
    }
    cursor = *parsed;
    url_path = fmt::format("{}?cursor={}", req.path, cursor);
  }
  SignedPost(
      ctx, req, respond, Signer::kKid,
      [cursor](const Asked& a, const Checked& checked) {
        a.Answer([&]() -> Result<Response> {
          CF_ASSIGN_OR_RETURN(int64_t id, a.Id("id"));
          CF_ASSIGN_OR_RETURN(auto answer, a.ctx->acme->AccountOrders(a.profile, id, cursor, checked));
          return AcmeJson(*a.ctx, a.profile, answer);
        });
      },
      url_path);
}

void NewOrder(const ApiContext& ctx, const Request& req, const Responder& respond) {
  SignedPost(ctx, req, respond, Signer::kKid,
             [](const Asked& a, const Checked& checked) { a.ctx->acme->NewOrder(a.profile, checked, a.Later()); });
}

void Certificate(const ApiContext& ctx, const Request& req, const Responder& respond, int alternate) {
  SignedPost(ctx, req, respond, Signer::kKid, [alternate](const Asked& a, const Checked& checked) {
    a.Answer([&]() -> Result<Response> {
      const std::optional<std::string> serial = pki::CanonicalSerial(a.params.at("serial"));
      if (!serial) return MakeError(ErrorCode::kNotFound, "no such certificate");
      CF_ASSIGN_OR_RETURN(auto cert, a.ctx->acme->Certificate(a.profile, *serial, alternate, checked));
      Response res;
      res.content_type = "application/pem-certificate-chain";
      res.body = std::move(cert.pem);
      for (const auto& link : cert.links) res.headers.emplace_back("Link", link);
      return Finish(*a.ctx, a.profile, std::move(res));
    });
  });
}

void RevokeCert(const ApiContext& ctx, const Request& req, const Responder& respond) {
  SignedPost(ctx, req, respond, Signer::kEither, [](const Asked& a, const Checked& checked) {
    a.Answer([&]() -> Result<Response> {
      CF_RETURN_IF_ERROR(a.ctx->acme->RevokeCertificate(a.profile, checked));
      Response res;
      res.content_type.clear();
      return Finish(*a.ctx, a.profile, std::move(res));
    });
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
  if (!found.ok()) {
    // Without the ACME problem type the directory's answer carries; a failure of the store
    // stays a server error (its details logged, not sent).
    if (found.error().code != ErrorCode::kNotFound) return found.error();
    return MakeError(ErrorCode::kNotFound, found.error().message);
  }
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
  // Signed POSTs answer through a Responder: on PostgreSQL once the nonce's use has committed.
  auto signed_route = [&router, &signed_post](const std::string& pattern, auto handle) {
    router.AddAsync("POST", pattern, signed_post, std::move(handle));
  };
  signed_route("/acme/{profile}/new-account",
               [c](Request& r, const Responder& respond) { NewAccount(*c, r, respond); });
  signed_route("/acme/{profile}/account/{id}", [c](Request& r, const Responder& respond) { Account(*c, r, respond); });
  signed_route("/acme/{profile}/account/{id}/orders",
               [c](Request& r, const Responder& respond) { AccountOrders(*c, r, respond); });
  signed_route("/acme/{profile}/new-order", [c](Request& r, const Responder& respond) { NewOrder(*c, r, respond); });
  signed_route("/acme/{profile}/order/{id}", [c](Request& r, const Responder& respond) {
    ResourcePost(*c, r, respond, "id", &acme::AcmeService::Order);
  });
  signed_route("/acme/{profile}/order/{id}/finalize", [c](Request& r, const Responder& respond) {
    LaterResourcePost(*c, r, respond, "id", &acme::AcmeService::Finalize);
  });
  signed_route("/acme/{profile}/authz/{id}", [c](Request& r, const Responder& respond) {
    ResourcePost(*c, r, respond, "id", &acme::AcmeService::Authorization);
  });
  signed_route("/acme/{profile}/chall/{id}", [c](Request& r, const Responder& respond) {
    LaterResourcePost(*c, r, respond, "id", &acme::AcmeService::Challenge);
  });
  signed_route("/acme/{profile}/cert/{serial}",
               [c](Request& r, const Responder& respond) { Certificate(*c, r, respond, 0); });
  signed_route("/acme/{profile}/cert/{serial}/1",
               [c](Request& r, const Responder& respond) { Certificate(*c, r, respond, 1); });
  signed_route("/acme/{profile}/key-change", [c](Request& r, const Responder& respond) { KeyChange(*c, r, respond); });
  signed_route("/acme/{profile}/revoke-cert",
               [c](Request& r, const Responder& respond) { RevokeCert(*c, r, respond); });
  router.Add("GET", "/v1/acme/profiles", {Access::kReader}, [c](Request&) { return ListProfiles(*c); });
  router.Add("GET", "/v1/acme/profiles/{name}", {Access::kReader}, [c](Request& r) { return GetProfile(*c, r); });
  router.Add("PUT", "/v1/acme/profiles/{name}", {Access::kAdmin}, [c](Request& r) { return PutProfile(*c, r); });
  router.Add("DELETE", "/v1/acme/profiles/{name}", {Access::kAdmin}, [c](Request& r) { return DeleteProfile(*c, r); });
  router.Add("POST", "/v1/acme/eab", {Access::kAdmin}, [c](Request& r) { return CreateEab(*c, r); });
  ctx.metrics.AddCollector([c] { return AcmeMetrics(*c->acme); });
}

}  // namespace certfleet::http
