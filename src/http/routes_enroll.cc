// EST (RFC 7030) at /.well-known/est/ and /.well-known/est/{label}/, and the operator's side
// of enrollment: /v1/enrollment/profiles, /v1/enrollment/secrets, /v1/enrollment/requests.
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>

#include "core/text.h"
#include "enroll/cmp.h"
#include "enroll/enroll_service.h"
#include "enroll/est.h"
#include "http/api.h"
#include "http/json.h"
#include "registry/objects.h"

namespace certfleet::http {
namespace {

namespace json = boost::json;
namespace est = enroll::est;

using enroll::kMaxLabel;
constexpr std::string_view kPkixCmp = "application/pkixcmp";
// A CMP request: a certificate template or CSR, its protection and a few extra certificates.
constexpr size_t kCmpBodyLimit = size_t{64} * 1024;
constexpr size_t kMaxSecretId = 64;
constexpr int64_t kDefaultSecretTtlHours = int64_t{24} * 7;  // a week: a device usually enrolls the day it is installed

std::string LabelOf(const Request& req) {
  auto it = req.params.find("label");
  return it == req.params.end() ? std::string(enroll::kDefaultLabel) : it->second;
}

// An EST error: JSON as every certfleet error, with the challenge RFC 7030 3.2.3 asks for on 401.
Response EstFail(const Request& req, const Error& e) {
  Response res = Fail(req, e);
  if (res.status == 401) res.headers.emplace_back("WWW-Authenticate", "Basic realm=\"certfleet EST\"");
  return res;
}

Response EstBody(std::string_view content_type, std::string_view der) {
  Response res;
  res.content_type = std::string(content_type);
  res.body = est::Base64Body(der);
  res.headers.emplace_back("Content-Transfer-Encoding", "base64");
  return res;
}

Response CaCerts(const ApiContext& ctx, const Request& req) {
  auto pem = ctx.enroll->CaCertificatesPem(LabelOf(req));
  if (!pem.ok()) return EstFail(req, pem.error());
  auto pkcs7 = est::CertsOnly(*pem);
  if (!pkcs7.ok()) return EstFail(req, pkcs7.error());
  return EstBody(est::kPkcs7Type, *pkcs7);
}

Response CsrAttrs(const ApiContext& ctx, const Request& req) {
  auto profile = ctx.enroll->FindProfile(LabelOf(req));
  if (!profile.ok()) return EstFail(req, profile.error());
  return EstBody(est::kCsrAttrsType, est::CsrAttributes(*profile));
}

enroll::Credentials CredentialsOf(const Request& req) {
  enroll::Credentials c;
  if (req.peer) {
    c.tls_certificates = req.peer->certificates;
    c.channel_binding = req.peer->channel_binding;
  }
  c.secret = req.BasicCredentials();
  return c;
}

void Enroll(const ApiContext& ctx, const Request& req, const Responder& respond, enroll::Operation operation) {
  auto der = est::BodyDer(req.body);
  if (!der.ok()) {
    return respond([res = EstFail(req, der.error())] { return res; });
  }
  enroll::EnrollRequest request;
  request.label = LabelOf(req);
  request.operation = operation;
  request.csr = std::move(*der);
  request.credentials = CredentialsOf(req);
  request.protocol = "est";
  const std::string request_id = req.request_id;
  ctx.enroll->EnrollAsync(std::move(request), [respond, request_id, operation,
                                               retry = ctx.enroll->retry_after()](Result<enroll::Enrolled> r) {
    respond([r = std::move(r), request_id, operation, retry]() -> Response {
      auto fail = [&](const Error& e) {
        Request shown;
        shown.request_id = request_id;
        return EstFail(shown, e);
      };
      if (!r.ok()) return fail(r.error());
      if (r->pending) {
        // RFC 7030 4.2.3: accepted, to be asked again after Retry-After.
        Response res;
        res.status = 202;
        res.content_type.clear();
        res.headers.emplace_back("Retry-After", std::to_string(retry.count()));
        return res;
      }
      if (operation == enroll::Operation::kServerKeygen) {
        Response res;
        auto body = est::ServerKeygenBody(r->private_key_pem.value_or(""), r->record.certificate_pem, res.content_type);
        if (!body.ok()) return fail(body.error());
        res.body = std::move(*body);
        return NoStore(std::move(res));
      }
      auto pkcs7 = est::CertsOnly(r->record.certificate_pem);
      if (!pkcs7.ok()) return fail(pkcs7.error());
      return EstBody(est::kCertsOnlyType, *pkcs7);
    });
  });
}

// Lightweight CMP over HTTP (RFC 6712): a DER PKIMessage in, one out, with 200 also when it
// refuses (a CMP error message is the refusal the client reads). Processed on the CMP
// server's threads: an enrollment waits for the store's commit.
void Cmp(const ApiContext& ctx, const Request& req, const Responder& respond) {
  if (MediaType(req) != kPkixCmp) {
    Response res =
        Fail(req, MakeError(ErrorCode::kInvalidArgument, fmt::format("send the PKIMessage as {}", kPkixCmp)));
    return respond([res = std::move(res)] { return res; });
  }
  ctx.cmp->HandleAsync(LabelOf(req), req.body, [respond, request_id = req.request_id](Result<std::string> answer) {
    respond([answer = std::move(answer), request_id]() -> Response {
      if (!answer.ok()) return Fail(request_id, answer.error());
      Response res;
      res.content_type = std::string(kPkixCmp);
      res.body = *answer;
      return res;
    });
  });
}

// /v1/enrollment/...: the operator's side.
Result<Response> ListProfiles(const ApiContext& ctx) {
  CF_ASSIGN_OR_RETURN(auto profiles, ctx.enroll->ListProfiles());
  json::array items;
  for (const auto& p : profiles) items.push_back(enroll::ProfileJson(p));
  return JsonResponse(200, json::object{{"items", std::move(items)}});
}

Result<Response> GetProfile(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(auto profile, ctx.enroll->FindProfile(req.params.at("label")));
  return JsonResponse(200, enroll::ProfileJson(profile));
}

Result<Response> PutProfile(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(json::object body, ParseJsonObject(req.body));
  CF_ASSIGN_OR_RETURN(auto put, ctx.enroll->PutProfile(req.params.at("label"), body, req.principal.Actor()));
  return JsonResponse(put.created ? 201 : 200, enroll::ProfileJson(put.profile));
}

Response NoContent() {
  Response res;
  res.status = 204;
  res.content_type.clear();
  return res;
}

Result<Response> DeleteProfile(const ApiContext& ctx, const Request& req) {
  CF_RETURN_IF_ERROR(ctx.enroll->DeleteProfile(req.params.at("label"), req.principal.Actor()));
  return NoContent();
}

json::object SecretJson(const store::EnrollSecretRecord& s) {
  return {{"id", s.id},
          {"profile", s.profile},
          {"device_id", OptStr(s.device_id)},
          {"batch", OptStr(s.batch)},
          {"expires_at", FormatRfc3339(s.expires_at)},
          {"used_at", OptTime(s.used_at)},
          {"used_by", OptStr(s.used_by)},
          {"revoked_at", OptTime(s.revoked_at)},
          {"created_by", s.created_by},
          {"created_at", FormatRfc3339(s.created_at)}};
}

Result<Response> CreateSecrets(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(json::object body, ParseJsonObject(req.body));
  CF_ASSIGN_OR_RETURN(std::string profile, RequiredString(body, "profile", kMaxLabel));
  CF_ASSIGN_OR_RETURN(auto device_id, OptionalString(body, "device_id", registry::kMaxDeviceIdBytes));
  CF_ASSIGN_OR_RETURN(auto batch, OptionalString(body, "batch", kMaxNameBytes));
  int64_t count = 1;
  int64_t ttl_hours = kDefaultSecretTtlHours;
  for (auto [key, out] : {std::pair<std::string_view, int64_t*>{"count", &count}, {"ttl_hours", &ttl_hours}}) {
    if (const json::value* v = body.if_contains(key); v && !v->is_null()) {
      if (!v->is_int64()) return MakeError(ErrorCode::kInvalidArgument, fmt::format("{} must be an integer", key));
      *out = v->as_int64();
    }
  }
  if (count > INT32_MAX || count < 0 || ttl_hours < 0 || ttl_hours > INT32_MAX) {
    return MakeError(ErrorCode::kInvalidArgument, "count or ttl_hours is out of range");
  }
  auto minted = ctx.enroll->CreateSecrets(profile, device_id, batch, static_cast<int>(count),
                                          std::chrono::hours(ttl_hours), req.principal.Actor());
  if (!minted.ok() && minted.error().code == ErrorCode::kNotFound) {
    return MakeError(ErrorCode::kInvalidArgument, minted.error().message);
  }
  if (!minted.ok()) return minted.error();
  json::array items;
  for (const auto& m : *minted) {
    json::object o = SecretJson(m.record);
    o["secret"] = m.secret;
    items.push_back(std::move(o));
  }
  return NoStore(JsonResponse(201, json::object{{"items", std::move(items)}}));
}

Result<Response> ListSecrets(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(Page page, ParsePage(req));
  CF_ASSIGN_OR_RETURN(auto profile, QueryParam(req, "profile", kMaxLabel));
  CF_ASSIGN_OR_RETURN(auto secrets, ctx.enroll->ListSecrets(profile, page.after.value_or(""), page.limit));
  json::array items;
  for (const auto& s : secrets) items.push_back(SecretJson(s));
  auto next = NextCursor(secrets.size(), page.limit, [&] { return secrets.back().id; });
  return JsonResponse(200, PageJson(std::move(items), std::move(next)));
}

Result<Response> RevokeSecret(const ApiContext& ctx, const Request& req) {
  const std::string& id = req.params.at("id");
  if (id.size() > kMaxSecretId) return MakeError(ErrorCode::kNotFound, "no such enrollment secret");
  CF_RETURN_IF_ERROR(ctx.enroll->RevokeSecret(id, req.principal.Actor()));
  return NoContent();
}

json::object RequestJson(const store::EnrollRequestRecord& r) {
  return {{"id", r.id},
          {"profile", r.profile},
          {"device_id", r.device_id},
          {"state", r.state},
          {"csr_pem", r.csr_pem},
          {"serial", OptStr(r.serial)},
          {"created_at", FormatRfc3339(r.created_at)},
          {"decided_at", OptTime(r.decided_at)},
          {"decided_by", OptStr(r.decided_by)}};
}

constexpr std::string_view kRequestStates[] = {"pending", "approved", "rejected", "issued"};

Result<Response> ListRequests(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(Page page, ParsePage(req));
  CF_ASSIGN_OR_RETURN(auto before, AfterNumber(page));
  CF_ASSIGN_OR_RETURN(auto state, QueryParam(req, "state", kMaxLabel));
  if (state && std::find(std::begin(kRequestStates), std::end(kRequestStates), *state) == std::end(kRequestStates)) {
    return MakeError(ErrorCode::kInvalidArgument, "state must be pending, approved, rejected or issued");
  }
  CF_ASSIGN_OR_RETURN(auto requests, ctx.enroll->ListRequests(state, before, page.limit));
  json::array items;
  for (const auto& r : requests) items.push_back(RequestJson(r));
  auto next = NextCursor(requests.size(), page.limit, [&] { return std::to_string(requests.back().id); });
  return JsonResponse(200, PageJson(std::move(items), std::move(next)));
}

Result<Response> Decide(const ApiContext& ctx, const Request& req, bool approve) {
  CF_ASSIGN_OR_RETURN(int64_t id, PathId(req));
  CF_ASSIGN_OR_RETURN(auto decided, ctx.enroll->Decide(id, approve, req.principal.Actor()));
  return JsonResponse(200, RequestJson(decided));
}

}  // namespace

void AddEnrollRoutes(Router& router, const ApiContext& ctx) {
  const ApiContext* c = &ctx;
  const RouteOptions est_post{Access::kPublic, false, est::kMaxBodyBytes};
  // Each EST operation at /.well-known/est/ (the profile "default") and under a label.
  const Handler cacerts = [c](Request& r) -> Result<Response> { return CaCerts(*c, r); };
  const Handler csrattrs = [c](Request& r) -> Result<Response> { return CsrAttrs(*c, r); };
  auto enroll_as = [c](enroll::Operation operation) -> AsyncHandler {
    return [c, operation](Request& r, const Responder& respond) { Enroll(*c, r, respond, operation); };
  };
  router.Add("GET", "/.well-known/est/cacerts", {Access::kPublic}, cacerts);
  router.Add("GET", "/.well-known/est/{label}/cacerts", {Access::kPublic}, cacerts);
  router.Add("GET", "/.well-known/est/csrattrs", {Access::kPublic}, csrattrs);
  router.Add("GET", "/.well-known/est/{label}/csrattrs", {Access::kPublic}, csrattrs);
  router.AddAsync("POST", "/.well-known/est/simpleenroll", est_post, enroll_as(enroll::Operation::kEnroll));
  router.AddAsync("POST", "/.well-known/est/{label}/simpleenroll", est_post, enroll_as(enroll::Operation::kEnroll));
  router.AddAsync("POST", "/.well-known/est/simplereenroll", est_post, enroll_as(enroll::Operation::kReenroll));
  router.AddAsync("POST", "/.well-known/est/{label}/simplereenroll", est_post, enroll_as(enroll::Operation::kReenroll));
  router.AddAsync("POST", "/.well-known/est/serverkeygen", est_post, enroll_as(enroll::Operation::kServerKeygen));
  router.AddAsync("POST", "/.well-known/est/{label}/serverkeygen", est_post,
                  enroll_as(enroll::Operation::kServerKeygen));
  if (ctx.cmp) {
    // RFC 9483 6.1: /.well-known/cmp serves the profile "default", /p/<label> the others.
    // Over plain HTTP too (server.http_listen), as CMP clients commonly send it: every
    // message is protected by its own MAC or signature, and so is every answer.
    const RouteOptions cmp_post{.access = Access::kPublic, .body_limit = kCmpBodyLimit, .plain_http = true};
    router.AddAsync("POST", "/.well-known/cmp", cmp_post,
                    [c](Request& r, const Responder& respond) { Cmp(*c, r, respond); });
    router.AddAsync("POST", "/.well-known/cmp/p/{label}", cmp_post,
                    [c](Request& r, const Responder& respond) { Cmp(*c, r, respond); });
  }
  router.Add("GET", "/v1/enrollment/profiles", {Access::kReader}, [c](Request&) { return ListProfiles(*c); });
  router.Add("GET", "/v1/enrollment/profiles/{label}", {Access::kReader},
             [c](Request& r) { return GetProfile(*c, r); });
  router.Add("PUT", "/v1/enrollment/profiles/{label}", {Access::kAdmin}, [c](Request& r) { return PutProfile(*c, r); });
  router.Add("DELETE", "/v1/enrollment/profiles/{label}", {Access::kAdmin},
             [c](Request& r) { return DeleteProfile(*c, r); });
  router.Add("POST", "/v1/enrollment/secrets", {Access::kOperator}, [c](Request& r) { return CreateSecrets(*c, r); });
  router.Add("GET", "/v1/enrollment/secrets", {Access::kOperator}, [c](Request& r) { return ListSecrets(*c, r); });
  router.Add("DELETE", "/v1/enrollment/secrets/{id}", {Access::kOperator},
             [c](Request& r) { return RevokeSecret(*c, r); });
  router.Add("GET", "/v1/enrollment/requests", {Access::kReader}, [c](Request& r) { return ListRequests(*c, r); });
  router.Add("POST", "/v1/enrollment/requests/{id}/approve", {Access::kOperator},
             [c](Request& r) { return Decide(*c, r, true); });
  router.Add("POST", "/v1/enrollment/requests/{id}/reject", {Access::kOperator},
             [c](Request& r) { return Decide(*c, r, false); });
}

}  // namespace certfleet::http
