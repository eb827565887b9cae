// W4 routes: the hosts whose certificates certfleet-agent renews, and the agent protocol.
#include <fmt/format.h>

#include <boost/json.hpp>

#include "core/clock.h"
#include "http/api.h"
#include "http/json.h"
#include "pki/csr.h"

namespace certfleet::http {
namespace {

namespace json = boost::json;

// A host's registration is a few paths and names; 64 KiB leaves room for 100 long SANs.
constexpr size_t kHostBodyLimit = size_t{64} * 1024;
constexpr size_t kMaxSan = 253;  // a DNS name's length

json::object HostJson(const renewal::HostService& hosts, const store::HostRecord& h) {
  const renewal::HostSettings s = hosts.SettingsOf(h);
  return {
      {"host_id", h.host_id},
      {"status", h.status},
      {"cert_path", s.cert_path},
      {"key_path", s.key_path},
      {"cacert_path", s.cacert_path},
      {"sans", json::value_from(s.sans)},
      {"key_type", s.key_type},
      {"profile", s.profile},
      {"renewal_threshold_days", s.threshold_days},
      {"reload_command", OptStr(s.reload_command)},
      {"certificate", h.serial ? json::value(json::object{{"serial", *h.serial}, {"not_after", OptTime(h.not_after)}})
                               : json::value(nullptr)},
      {"renewal_date", FormatRfc3339(h.renew_at)},
      {"last_run", h.last_run ? json::value(*h.last_run) : json::value(nullptr)},
      {"last_error", OptStr(h.last_error)},
      {"created_at", FormatRfc3339(h.created_at)},
      {"updated_at", FormatRfc3339(h.updated_at)}};
}

Result<renewal::HostSpec> ParseHostSpec(const json::object& body) {
  renewal::HostSpec spec;
  CF_ASSIGN_OR_RETURN(spec.host_id, RequiredString(body, "host_id", renewal::HostService::kMaxHostId));
  CF_ASSIGN_OR_RETURN(spec.cert_path, OptionalString(body, "cert_path", renewal::HostService::kMaxPath));
  CF_ASSIGN_OR_RETURN(spec.key_path, OptionalString(body, "key_path", renewal::HostService::kMaxPath));
  CF_ASSIGN_OR_RETURN(spec.cacert_path, OptionalString(body, "cacert_path", renewal::HostService::kMaxPath));
  CF_ASSIGN_OR_RETURN(spec.key_type, OptionalString(body, "key_type", 16));
  CF_ASSIGN_OR_RETURN(spec.profile, OptionalString(body, "profile", 16));
  CF_ASSIGN_OR_RETURN(spec.reload_command, OptionalString(body, "reload_command", renewal::HostService::kMaxCommand));
  if (const json::value* sans = body.if_contains("sans"); sans && !sans->is_null()) {
    if (!sans->is_array()) return MakeError(ErrorCode::kInvalidArgument, "sans must be an array of strings");
    for (const auto& san : sans->get_array()) {
      if (!san.is_string() || san.get_string().size() > kMaxSan) {
        return MakeError(ErrorCode::kInvalidArgument,
                         fmt::format("sans must be an array of strings of at most {} characters", kMaxSan));
      }
      spec.sans.emplace_back(san.get_string());
      if (spec.sans.size() > renewal::HostService::kMaxSans) break;  // the service says why
    }
  }
  if (const json::value* days = body.if_contains("renewal_threshold_days"); days && !days->is_null()) {
    if (!days->is_int64()) return MakeError(ErrorCode::kInvalidArgument, "renewal_threshold_days must be an integer");
    spec.renewal_threshold_days = days->get_int64();
  }
  return spec;
}

Response Create(const ApiContext& ctx, const Request& req) {
  auto body = ParseJsonObject(req.body);
  if (!body.ok()) return Fail(req, body.error());
  auto spec = ParseHostSpec(*body);
  if (!spec.ok()) return Fail(req, spec.error());
  auto made = ctx.hosts->Create(*spec, req.principal.Actor());
  if (!made.ok()) return Fail(req, made.error());
  return JsonResponse(201, HostJson(*ctx.hosts, *made));
}

Response List(const ApiContext& ctx, const Request& req) {
  auto page = ParsePage(req);
  if (!page.ok()) return Fail(req, page.error());
  auto status = QueryParam(req, "status", 16);
  auto due = QueryParam(req, "due_before", 40);
  if (!status.ok()) return Fail(req, status.error());
  if (!due.ok()) return Fail(req, due.error());
  store::HostFilter filter;
  filter.limit = page->limit;
  filter.after = page->after;
  if (*status) {
    if (**status != "enrolling" && **status != "active" && **status != "failed" && **status != "revoked") {
      return ErrorResponse(400, "invalid_argument", "status must be enrolling, active, failed or revoked");
    }
    filter.status = **status;
  }
  if (*due) {
    auto when = ParseRfc3339(**due);
    if (!when) return ErrorResponse(400, "invalid_argument", "due_before must be an RFC 3339 time");
    filter.due_before = *when;
  }
  auto hosts = ctx.hosts->List(filter);
  if (!hosts.ok()) return Fail(req, hosts.error());
  json::array items;
  for (const auto& h : *hosts) items.push_back(HostJson(*ctx.hosts, h));
  auto next = NextCursor(hosts->size(), page->limit, [&] { return hosts->back().host_id; });
  return JsonResponse(200, PageJson(std::move(items), next));
}

Response Get(const ApiContext& ctx, const Request& req) {
  auto h = ctx.hosts->Get(req.params.at("id"));
  if (!h.ok()) return Fail(req, h.error());
  return JsonResponse(200, HostJson(*ctx.hosts, *h));
}

Response Revoke(const ApiContext& ctx, const Request& req) {
  auto body = ParseJsonObject(req.body.empty() ? "{}" : req.body);
  if (!body.ok()) return Fail(req, body.error());
  auto reason = OptionalString(*body, "reason", 40);
  if (!reason.ok()) return Fail(req, reason.error());
  auto h = ctx.agents->Revoke(req.params.at("id"), reason->value_or("cessationOfOperation"), req.principal.Actor());
  if (!h.ok()) return Fail(req, h.error());
  return JsonResponse(200, HostJson(*ctx.hosts, *h));
}

// The agent's first request: its bootstrap token as the bearer, its host id and CSR.
Response Enroll(const ApiContext& ctx, const Request& req) {
  auto token = req.BearerToken();
  if (!token) {
    return ErrorResponse(401, "unauthenticated", "send Authorization: Bearer <enrollment token>");
  }
  auto body = ParseJsonObject(req.body);
  if (!body.ok()) return Fail(req, body.error());
  auto host_id = RequiredString(*body, "host_id", renewal::HostService::kMaxHostId);
  auto csr = RequiredString(*body, "csr", pki::kMaxCsrBytes);
  if (!host_id.ok()) return Fail(req, host_id.error());
  if (!csr.ok()) return Fail(req, csr.error());
  auto enrolled = ctx.agents->Enroll(*host_id, *token, *csr);
  if (!enrolled.ok()) return Fail(req, enrolled.error());
  const renewal::HostSettings& s = enrolled->settings;
  return JsonResponse(201, json::object{{"host_id", *host_id},
                                        {"serial", enrolled->record.serial},
                                        {"not_after", FormatRfc3339(enrolled->record.not_after)},
                                        {"certificate", enrolled->certificate_pem},
                                        {"chain", enrolled->chain_pem},
                                        {"cert_path", s.cert_path},
                                        {"key_path", s.key_path},
                                        {"cacert_path", s.cacert_path},
                                        {"reload_command", OptStr(s.reload_command)}});
}

}  // namespace

void AddRenewalRoutes(Router& router, const ApiContext& ctx) {
  const ApiContext* c = &ctx;
  router.Add("POST", "/v1/hosts", {Access::kOperator, false, kHostBodyLimit},
             [c](Request& r) { return Create(*c, r); });
  router.Add("GET", "/v1/hosts", {Access::kReader}, [c](Request& r) { return List(*c, r); });
  router.Add("GET", "/v1/hosts/{id}", {Access::kReader}, [c](Request& r) { return Get(*c, r); });
  router.Add("POST", "/v1/hosts/{id}/revoke", {Access::kOperator, false, kHostBodyLimit},
             [c](Request& r) { return Revoke(*c, r); });
  // Public: the enrollment token is the credential, checked by the agent service.
  router.Add("POST", "/v1/agent/enroll", {Access::kPublic, false, kHostBodyLimit},
             [c](Request& r) { return Enroll(*c, r); });
}

}  // namespace certfleet::http
