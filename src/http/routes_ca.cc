// W1 routes: the CA hierarchy and its inventory, revocation, CRLs and OCSP.
#include <fmt/format.h>

#include <boost/json.hpp>
#include <charconv>
#include <ctime>

#include "ca/ca_service.h"
#include "core/crypto.h"
#include "http/api.h"
#include "http/json.h"
#include "issuance/issuer.h"
#include "pki/crl.h"
#include "pki/csr.h"
#include "pki/key_backend.h"
#include "pki/ocsp.h"
#include "pki/profile.h"
#include "store/certificates_repo.h"

namespace certfleet::http {
namespace {

namespace json = boost::json;

// A creation body: a CSR of at most 16 KiB plus a few short fields.
constexpr size_t kCreateBodyLimit = size_t{64} * 1024;
constexpr size_t kMaxField = 256;
constexpr size_t kMaxSans = 100;
constexpr std::string_view kRootParent = "Root";
// A CA certificate is a few KiB; a chain of eight of them fits in the activation body.
constexpr size_t kMaxCertificatePem = size_t{16} * 1024;
constexpr size_t kMaxChainPem = kMaxCertificatePem * 8;
constexpr size_t kActivateBodyLimit = kMaxCertificatePem + kMaxChainPem + 1024;

// A list cursor is "<created_at>.<serial>" (base64url on the wire, see NextCursor).
std::optional<store::CertificateCursor> CertificateCursorFrom(std::string_view text) {
  const size_t dot = text.find('.');
  if (dot == std::string_view::npos || dot == 0) return std::nullopt;
  store::CertificateCursor cursor;
  const std::string_view millis = text.substr(0, dot);
  auto [end, ec] = std::from_chars(millis.data(), millis.data() + millis.size(), cursor.created_at);
  if (ec != std::errc() || end != millis.data() + millis.size()) return std::nullopt;
  cursor.serial = text.substr(dot + 1);
  if (cursor.serial.empty() || cursor.serial.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return std::nullopt;
  }
  return cursor;
}

}  // namespace

json::object CertificateJson(const store::CertificateRecord& c) {
  return {{"serial", c.serial},
          {"fqdn", c.fqdn},
          {"type", CertTypeName(c.type)},
          {"subject_kind", store::SubjectKindName(c.subject_kind)},
          {"parent_fqdn", c.parent_fqdn},
          {"status", store::CertStatusName(c.status)},
          {"not_before", FormatRfc3339(c.not_before)},
          {"not_after", FormatRfc3339(c.not_after)},
          {"fingerprint", c.fingerprint},
          {"certificate_pem", c.certificate_pem},
          {"revoked_at", OptTime(c.revoked_at)},
          {"revocation_reason",
           c.revocation_reason ? json::value(pki::RevocationReasonName(*c.revocation_reason)) : json::value(nullptr)},
          {"created_at", FormatRfc3339(c.created_at)},
          {"created_by", c.created_by}};
}

namespace {

// A name given plain or, as the seed does, base64-encoded ("Um9vdA==" is "Root").
std::string PlainOrBase64Name(const std::string& value) {
  if (value == kRootParent || value.find('.') != std::string::npos) return value;
  auto decoded = Base64Decode(value);
  if (decoded && (*decoded == kRootParent || pki::IsValidDnsName(*decoded))) return *decoded;
  return value;
}

Result<ca::CreateRequest> ParseCreate(pki::CertType type, const Request& req) {
  CF_ASSIGN_OR_RETURN(json::object body, ParseJsonObject(req.body));
  ca::CreateRequest r;
  r.type = type;
  CF_ASSIGN_OR_RETURN(auto fqdn, OptionalString(body, "fqdn", kMaxField));
  r.fqdn = fqdn.value_or("");
  CF_ASSIGN_OR_RETURN(r.parent_fqdn, OptionalString(body, "parent_fqdn", kMaxField));
  CF_ASSIGN_OR_RETURN(r.csr_pem, OptionalString(body, "csr_pem", pki::kMaxCsrBytes, Text::kLines));
  CF_ASSIGN_OR_RETURN(auto country, OptionalString(body, "country", kMaxField));
  CF_ASSIGN_OR_RETURN(auto state, OptionalString(body, "state", kMaxField));
  CF_ASSIGN_OR_RETURN(auto org, OptionalString(body, "organization", kMaxField));
  r.country = country.value_or("");
  r.state = state.value_or("");
  r.organization = org.value_or("");
  CF_ASSIGN_OR_RETURN(r.key_type, OptionalString(body, "key_type", 32));
  CF_ASSIGN_OR_RETURN(auto key_backend, OptionalString(body, "key_backend", 32));
  r.key_backend = key_backend.value_or("");
  if (auto it = body.find("validity_days"); it != body.end() && !it->value().is_null()) {
    if (!it->value().is_int64()) return MakeError(ErrorCode::kInvalidArgument, "validity_days must be an integer");
    r.validity_days = it->value().as_int64();
  }
  if (auto it = body.find("sans"); it != body.end() && !it->value().is_null()) {
    if (!it->value().is_array() || it->value().as_array().size() > kMaxSans) {
      return MakeError(ErrorCode::kInvalidArgument, fmt::format("sans must be an array of at most {} names", kMaxSans));
    }
    for (const auto& v : it->value().as_array()) {
      if (!v.is_string() || v.as_string().size() > kMaxField) {
        return MakeError(ErrorCode::kInvalidArgument, "sans must hold DNS names");
      }
      r.sans.emplace_back(v.as_string());
    }
  }
  if ((type == pki::CertType::kRoot || type == pki::CertType::kIntermediate) && !r.sans.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "sans are for server and device certificates");
  }
  return r;
}

Response IssuedResponse(const issuance::Issued& issued) {
  json::object out = CertificateJson(issued.record);
  out["chain_pem"] = issued.chain_pem;
  out["validity_clamped"] = issued.validity_clamped;
  if (issued.private_key_pem) out["private_key_pem"] = *issued.private_key_pem;
  return NoStore(JsonResponse(201, out));  // may hold a private key
}

// Asynchronous: the server thread is free while the certificate waits for its commit.
void Create(const ApiContext& ctx, pki::CertType type, const Request& req, const Responder& respond) {
  auto parsed = ParseCreate(type, req);
  if (!parsed.ok()) return respond([e = parsed.error(), id = req.request_id] { return Fail(id, e); });
  ctx.ca->CreateAsync(*parsed, req.principal.Actor(), [respond, id = req.request_id](Result<issuance::Issued> created) {
    respond([created = std::move(created), id]() -> Response {
      if (!created.ok()) return Fail(id, created.error());
      return IssuedResponse(*created);
    });
  });
}

Response List(const ApiContext& ctx, const Request& req) {
  auto page = ParsePage(req);
  if (!page.ok()) return Fail(req, page.error());
  store::CertificateFilter filter;
  filter.limit = page->limit;
  if (page->after) {
    auto cursor = CertificateCursorFrom(*page->after);
    if (!cursor) return ErrorResponse(400, "invalid_argument", "next is not a cursor from a previous page");
    filter.after = std::move(*cursor);
  }
  auto parent = QueryParam(req, "parent", kMaxField);
  auto type = EnumParam<CertType>(req, "type", kCertTypeNames);
  auto status = EnumParam<store::CertStatus>(req, "status", store::kCertStatusNames);
  auto expires = QueryParam(req, "expires_before", 40);
  for (const auto* r : {&parent, &expires}) {
    if (!r->ok()) return Fail(req, r->error());
  }
  if (!type.ok()) return Fail(req, type.error());
  if (!status.ok()) return Fail(req, status.error());
  if (*parent) filter.parent_fqdn = PlainOrBase64Name(**parent);
  filter.type = *type;
  filter.status = *status;
  if (*expires) {
    auto millis = ParseRfc3339(**expires);
    if (!millis) return ErrorResponse(400, "invalid_argument", "expires_before must be an RFC 3339 time");
    filter.expires_before = *millis;
  }
  auto rows = ctx.issuer->List(filter);
  if (!rows.ok()) return Fail(req, rows.error());
  json::array items;
  for (const auto& c : *rows) items.push_back(CertificateJson(c));
  auto next = NextCursor(rows->size(), filter.limit,
                         [&] { return fmt::format("{}.{}", rows->back().created_at, rows->back().serial); });
  return JsonResponse(200, PageJson(std::move(items), next));
}

Response Get(const ApiContext& ctx, const Request& req) {
  const std::string& id = req.params.at("id");
  auto found = ctx.issuer->Get(id);
  if (!found.ok() && found.error().code == ErrorCode::kNotFound) {
    if (auto decoded = Base64Decode(id); decoded && pki::IsValidDnsName(*decoded)) found = ctx.issuer->Get(*decoded);
  }
  if (!found.ok()) return Fail(req, found.error());
  auto chain = ctx.issuer->ChainOf(*found);
  if (!chain.ok()) return Fail(req, chain.error());
  json::object out = CertificateJson(*found);
  out["chain_pem"] = *chain;
  return JsonResponse(200, out);
}

Response Revoke(const ApiContext& ctx, const Request& req) {
  auto body = ParseJsonObject(req.body.empty() ? "{}" : req.body);
  if (!body.ok()) return Fail(req, body.error());
  auto reason = OptionalString(*body, "reason", 40);
  if (!reason.ok()) return Fail(req, reason.error());
  bool cascade = false;
  if (auto it = body->find("cascade"); it != body->end() && !it->value().is_null()) {
    if (!it->value().is_bool()) return ErrorResponse(400, "invalid_argument", "cascade must be true or false");
    cascade = it->value().as_bool();
  }
  auto revoked =
      ctx.issuer->Revoke(req.params.at("serial"), reason->value_or("unspecified"), cascade, req.principal.Actor());
  if (!revoked.ok()) return Fail(req, revoked.error());
  json::object out = CertificateJson(revoked->record);
  out["newly_revoked"] = revoked->newly_revoked;
  return JsonResponse(200, out);
}

// The certificate's successor: {"csr_pem"?, "key_type"?, "validity_days"?, "keep"?}.
void Renew(const ApiContext& ctx, const Request& req, const Responder& respond) {
  auto renewed = [&]() -> Result<issuance::Issued> {
    CF_ASSIGN_OR_RETURN(json::object body, ParseJsonObject(req.body.empty() ? "{}" : req.body));
    ca::RenewRequest r;
    CF_ASSIGN_OR_RETURN(r.csr_pem, OptionalString(body, "csr_pem", pki::kMaxCsrBytes, Text::kLines));
    CF_ASSIGN_OR_RETURN(r.key_type, OptionalString(body, "key_type", 32));
    if (auto it = body.find("validity_days"); it != body.end() && !it->value().is_null()) {
      if (!it->value().is_int64()) return MakeError(ErrorCode::kInvalidArgument, "validity_days must be an integer");
      r.validity_days = it->value().as_int64();
    }
    if (auto it = body.find("keep"); it != body.end() && !it->value().is_null()) {
      if (!it->value().is_bool()) return MakeError(ErrorCode::kInvalidArgument, "keep must be true or false");
      r.keep = it->value().as_bool();
    }
    return ctx.ca->Renew(req.params.at("serial"), r, req.principal.Actor());
  }();
  respond([renewed = std::move(renewed), id = req.request_id]() -> Response {
    if (!renewed.ok()) return Fail(id, renewed.error());
    return IssuedResponse(*renewed);
  });
}

json::object PendingCaJson(const store::PendingCaRecord& p) {
  return {{"fqdn", p.fqdn},
          {"status", "pending"},
          {"key_backend", pki::KeyBackendOf(p.key_ref)},
          {"csr_pem", p.csr_pem},
          {"parent_hint", p.parent_hint ? json::value(*p.parent_hint) : json::value(nullptr)},
          {"created_by", p.created_by},
          {"created_at", FormatRfc3339(p.created_at)}};
}

// {"fqdn", "parent_hint"?, "key_type"?, "key_backend"?}: a pending intermediate and its CSR.
Response RequestIntermediateCsr(const ApiContext& ctx, const Request& req) {
  auto pending = [&]() -> Result<store::PendingCaRecord> {
    CF_ASSIGN_OR_RETURN(json::object body, ParseJsonObject(req.body));
    ca::CaCsrRequest r;
    CF_ASSIGN_OR_RETURN(r.fqdn, RequiredString(body, "fqdn", kMaxField));
    CF_ASSIGN_OR_RETURN(r.parent_hint, OptionalString(body, "parent_hint", kMaxField));
    CF_ASSIGN_OR_RETURN(r.key_type, OptionalString(body, "key_type", 32));
    CF_ASSIGN_OR_RETURN(auto backend, OptionalString(body, "key_backend", 32));
    r.key_backend = backend.value_or("");
    return ctx.ca->RequestIntermediate(r, req.principal.Actor());
  }();
  if (!pending.ok()) return Fail(req, pending.error());
  return JsonResponse(201, PendingCaJson(*pending));
}

Response ListPendingCas(const ApiContext& ctx, const Request& req) {
  auto pending = ctx.issuer->PendingCas();
  if (!pending.ok()) return Fail(req, pending.error());
  json::array items;
  for (const auto& p : *pending) items.push_back(PendingCaJson(p));
  return JsonResponse(200, json::object{{"items", std::move(items)}});
}

// {"certificate_pem", "chain_pem"?}: the pending CA's certificate, signed elsewhere, and its
// issuers up to the root; answers every certificate recorded, the activated CA last.
Response ActivateCa(const ApiContext& ctx, const Request& req) {
  auto written = [&]() -> Result<std::vector<store::CertificateRecord>> {
    CF_ASSIGN_OR_RETURN(json::object body, ParseJsonObject(req.body));
    CF_ASSIGN_OR_RETURN(std::string cert, RequiredString(body, "certificate_pem", kMaxCertificatePem, Text::kLines));
    CF_ASSIGN_OR_RETURN(auto chain, OptionalString(body, "chain_pem", kMaxChainPem, Text::kLines));
    return ctx.issuer->ActivateCa(req.params.at("fqdn"), cert, chain.value_or(""), req.principal.Actor());
  }();
  if (!written.ok()) return Fail(req, written.error());
  json::array items;
  for (const auto& c : *written) items.push_back(CertificateJson(c));
  return JsonResponse(201, json::object{{"certificates", std::move(items)}});
}

// How long an HTTP cache in front may serve a CRL or a GET's OCSP answer: also how long it
// may go on serving one from before a revocation, so short, yet long enough to take a
// popular CA's load (RFC 5019 6.2 asks for a max-age between thisUpdate and nextUpdate).
constexpr int64_t kMaxAgeSeconds = 60;

std::string HttpDate(int64_t millis) {
  const time_t t = static_cast<time_t>(millis / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char out[64];
  return std::string(out, std::strftime(out, sizeof(out), "%a, %d %b %Y %H:%M:%S GMT", &tm));
}

// Lets HTTP caches keep `res`, a signed answer valid from `this_update` to `next_update`, for
// kMaxAgeSeconds at most; one past its nextUpdate not at all.
void CacheUntil(Response& res, int64_t this_update, int64_t next_update, int64_t now) {
  if (next_update <= now) {
    res.headers.emplace_back("Cache-Control", "no-cache");
    return;
  }
  const int64_t max_age = std::min(kMaxAgeSeconds, (next_update - now) / 1000);
  res.headers.emplace_back("Cache-Control", fmt::format("max-age={}, public, no-transform, must-revalidate", max_age));
  res.headers.emplace_back("Last-Modified", HttpDate(this_update));
  res.headers.emplace_back("Expires", HttpDate(now + max_age * 1000));
  res.headers.emplace_back("ETag", fmt::format("\"{}\"", Sha256Hex(res.body)));
}

Response Crl(const ApiContext& ctx, const Request& req) {
  std::string name = req.params.at("name");
  constexpr std::string_view kSuffix = ".crl";
  if (!name.ends_with(kSuffix)) return ErrorResponse(404, "not_found", "CRLs are at /crl/<ca fqdn>.crl");
  name.resize(name.size() - kSuffix.size());
  auto crl = ctx.issuer->Crl(name);
  if (!crl.ok()) return Fail(req, crl.error());
  Response res;
  res.content_type = "application/pkix-crl";
  res.body = std::move(crl->der);
  CacheUntil(res, crl->this_update_millis, crl->next_update_millis, ctx.clock.NowMillis());
  return res;
}

Response OcspAnswer(const ApiContext& ctx, std::string_view der, bool cacheable) {
  Response res;
  res.content_type = "application/ocsp-response";
  res.body = ctx.issuer->Ocsp(der);
  // GET answers are for HTTP caches (RFC 5019 6.2); one that echoes a nonce answers its
  // request only, and an error answers nothing for long.
  const auto times = pki::OcspResponseTimes(res.body);
  if (cacheable && times && !times->has_nonce) {
    CacheUntil(res, times->this_update_millis, times->next_update_millis, ctx.clock.NowMillis());
  } else {
    res.headers.emplace_back("Cache-Control", "no-cache");
  }
  return res;
}

}  // namespace

void AddCaRoutes(Router& router, const ApiContext& ctx) {
  const ApiContext* c = &ctx;
  const RouteOptions create{Access::kOperator, false, kCreateBodyLimit};
  for (auto type :
       {pki::CertType::kRoot, pki::CertType::kIntermediate, pki::CertType::kServer, pki::CertType::kDevice}) {
    const std::string name(pki::CertTypeName(type));
    auto handler = [c, type](Request& r, const Responder& respond) { Create(*c, type, r, respond); };
    router.AddAsync("POST", "/v1/certificates/" + name, create, handler);
    router.AddAsync("POST", "/certificates/" + name, create, handler);  // the seed's path
  }
  for (const char* base : {"/v1/certificates", "/certificates"}) {
    router.Add("GET", base, {Access::kReader}, [c](Request& r) { return List(*c, r); });
    // {*id}: a base64 fqdn may hold '/'.
    router.Add("GET", std::string(base) + "/{*id}", {Access::kReader}, [c](Request& r) { return Get(*c, r); });
  }
  router.Add("POST", "/v1/certificates/{serial}/revoke", {Access::kOperator},
             [c](Request& r) { return Revoke(*c, r); });
  router.AddAsync("POST", "/v1/certificates/{serial}/renew", create,
                  [c](Request& r, const Responder& respond) { Renew(*c, r, respond); });
  router.Add("POST", "/v1/cas/intermediate/csr", {Access::kAdmin},
             [c](Request& r) { return RequestIntermediateCsr(*c, r); });
  router.Add("GET", "/v1/cas/pending", {Access::kReader}, [c](Request& r) { return ListPendingCas(*c, r); });
  router.Add("POST", "/v1/cas/{fqdn}/certificate", {Access::kAdmin, false, kActivateBodyLimit},
             [c](Request& r) { return ActivateCa(*c, r); });
  // Relying parties fetch these over plain HTTP too (server.http_listen): nginx staples
  // OCSP only from http:// URLs, and CRLs and OCSP answers are signed.
  router.Add("GET", "/crl/{name}", {.access = Access::kPublic, .plain_http = true},
             [c](Request& r) { return Crl(*c, r); });
  router.Add("POST", "/ocsp", {.access = Access::kPublic, .body_limit = pki::kMaxOcspRequestBytes, .plain_http = true},
             [c](Request& r) { return OcspAnswer(*c, r.body, /*cacheable=*/false); });
  router.Add("GET", "/ocsp/{*request}", {.access = Access::kPublic, .plain_http = true}, [c](Request& r) {
    auto der = Base64Decode(r.params.at("request"));
    return OcspAnswer(*c, der ? *der : std::string(), /*cacheable=*/true);
  });
}

}  // namespace certfleet::http
