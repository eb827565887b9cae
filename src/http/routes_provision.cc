// W2 routes: device keys, provisioning (with delayed retrieval), provisioning templates and CA rotation.
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>

#include "core/crypto.h"
#include "http/api.h"
#include "http/json.h"
#include "pki/csr.h"
#include "provision/device_registry.h"
#include "provision/provision_service.h"
#include "registry/registry.h"
#include "store/certificates_repo.h"

namespace certfleet::http {
namespace {

namespace json = boost::json;

// A key upload of 100,000 devices with RSA-2048 keys is about 50 MB; more goes in several.
constexpr size_t kKeysBodyLimit = size_t{64} * 1024 * 1024;
// A provisioning body: one CSR (at most 16 KiB), as PEM in JSON at worst.
constexpr size_t kProvisionBodyLimit = size_t{64} * 1024;
constexpr size_t kMaxQueryName = 253;

Response RateLimited(int64_t retry_after, std::string_view what) {
  Response res = ErrorResponse(429, "resource_exhausted",
                               fmt::format("too many requests from this {}; retry after {} s", what, retry_after));
  res.headers.emplace_back("Retry-After", std::to_string(retry_after));
  return res;
}

// ---- device keys ----

json::object DeviceJson(const store::DeviceRecord& d) {
  return {{"device_id", d.device_id},
          {"public_key_pem", pki::PemEncode("PUBLIC KEY", d.public_key)},
          {"key_sha256", d.key_sha256},
          {"batch", d.batch},
          {"status", d.status},
          {"created_at", FormatRfc3339(d.created_at)},
          {"updated_at", FormatRfc3339(d.updated_at)}};
}

Response RegisterKeys(const ApiContext& ctx, const Request& req) {
  const std::string type = MediaType(req);
  provision::UploadFormat format = provision::UploadFormat::kJson;
  if (type == "text/csv") {
    format = provision::UploadFormat::kCsv;
  } else if (!type.empty() && type != "application/json") {
    return ErrorResponse(415, "unsupported_media_type", "send application/json or text/csv");
  }
  auto report = ctx.devices->RegisterKeys(req.body, format, req.principal.Actor());
  if (!report.ok()) return Fail(req, report.error());
  json::array rejections;
  for (const auto& r : report->rejections) {
    rejections.push_back(json::object{{"row", r.row}, {"device_id", r.device_id}, {"reason", r.reason}});
  }
  return JsonResponse(200, json::object{{"inserted", report->inserted},
                                        {"unchanged", report->unchanged},
                                        {"replaced", report->replaced},
                                        {"rejected", report->rejected},
                                        {"rejections", std::move(rejections)}});
}

Response GetDevice(const ApiContext& ctx, const Request& req) {
  auto d = ctx.devices->Get(req.params.at("id"));
  if (!d.ok()) return Fail(req, d.error());
  return JsonResponse(200, DeviceJson(*d));
}

Response ListDevices(const ApiContext& ctx, const Request& req) {
  auto page = ParsePage(req);
  if (!page.ok()) return Fail(req, page.error());
  auto batch = QueryParam(req, "batch", provision::kMaxBatchBytes);
  auto status = QueryParam(req, "status", 20);
  if (!batch.ok()) return Fail(req, batch.error());
  if (!status.ok()) return Fail(req, status.error());
  if (*status && **status != store::kDeviceRegistered && **status != store::kDeviceProvisioned &&
      **status != store::kDeviceDisabled) {
    return ErrorResponse(400, "invalid_argument", "status must be registered, provisioned or disabled");
  }
  store::DeviceFilter filter{*batch, *status, page->after, page->limit};
  auto rows = ctx.devices->List(filter);
  if (!rows.ok()) return Fail(req, rows.error());
  json::array items;
  for (const auto& d : *rows) items.push_back(DeviceJson(d));
  auto next = NextCursor(rows->size(), filter.limit, [&] { return rows->back().device_id; });
  return JsonResponse(200, PageJson(std::move(items), next));
}

// {"revoke": true} in an optional body: the device's active certificates are revoked too.
Result<bool> RevokeAsked(const Request& req) {
  CF_ASSIGN_OR_RETURN(json::object body, ParseJsonObject(req.body.empty() ? "{}" : req.body));
  const json::value* revoke = body.if_contains("revoke");
  if (revoke == nullptr || revoke->is_null()) return false;
  if (!revoke->is_bool()) return MakeError(ErrorCode::kInvalidArgument, "revoke must be true or false");
  return revoke->get_bool();
}

json::array Serials(const std::vector<std::string>& serials) { return json::array(serials.begin(), serials.end()); }

Result<Response> DisableDevice(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(bool revoke, RevokeAsked(req));
  CF_ASSIGN_OR_RETURN(store::DeviceRecord d, ctx.devices->Disable(req.params.at("id"), req.principal.Actor()));
  std::vector<std::string> revoked;
  if (revoke) {
    CF_ASSIGN_OR_RETURN(revoked, ctx.provision->RevokeDevice(d.device_id, req.principal.Actor()));
  }
  json::object out = DeviceJson(d);
  out["revoked"] = Serials(revoked);
  return JsonResponse(200, out);
}

Result<Response> EnableDevice(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(store::DeviceRecord d, ctx.devices->Enable(req.params.at("id"), req.principal.Actor()));
  return JsonResponse(200, DeviceJson(d));
}

Result<Response> DeleteDevice(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(bool revoke, RevokeAsked(req));
  const std::string& id = req.params.at("id");
  CF_RETURN_IF_ERROR(ctx.devices->Get(id));
  // Revoked first: a failure leaves the device there, and the request can be repeated.
  std::vector<std::string> revoked;
  if (revoke) {
    CF_ASSIGN_OR_RETURN(revoked, ctx.provision->RevokeDevice(id, req.principal.Actor()));
  }
  CF_RETURN_IF_ERROR(ctx.devices->Delete(id, req.principal.Actor()));
  return JsonResponse(200, json::object{{"device_id", id}, {"deleted", true}, {"revoked", Serials(revoked)}});
}

// ---- provisioning ----

// The CSR as the seed sends it, in the device-csr header (PEM with "\n" escapes, or base64
// of the PEM), else the body (application/pkcs10 DER or PEM, or JSON {csr}).
Result<std::string> CsrFrom(const Request& req) {
  if (auto header = req.Header("device-csr")) {
    std::string value(*header);
    if (value.find("-----BEGIN") != std::string::npos) {
      for (size_t pos; (pos = value.find("\\n")) != std::string::npos;) value.replace(pos, 2, "\n");
      return value;
    }
    auto decoded = Base64Decode(value);
    if (!decoded) return MakeError(ErrorCode::kInvalidArgument, "device-csr is neither a PEM CSR nor base64 of one");
    return std::move(*decoded);
  }
  if (req.body.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "no CSR: send it in the device-csr header or in the body");
  }
  const std::string type = MediaType(req);
  if (type == "application/json" || (type.empty() && req.body.front() == '{')) {
    CF_ASSIGN_OR_RETURN(json::object body, ParseJsonObject(req.body));
    return RequiredString(body, "csr", pki::kMaxCsrBytes, Text::kLines);
  }
  return req.body;
}

json::object ProvisionedJson(const provision::Provisioned& p) {
  return {{"certificate_pem", p.record.certificate_pem},
          {"chain_pem", p.chain_pem},
          {"thing_name", p.thing_name},
          {"endpoint", p.endpoint},
          {"serial", p.record.serial},
          {"not_after", FormatRfc3339(p.record.not_after)}};
}

// The client's address without its port ("10.0.0.7:51234" -> "10.0.0.7", "::1:443" -> "::1"):
// limits count per address, whatever connections it opens.
std::string_view ClientAddress(const Request& req) {
  std::string_view a = req.remote_address;
  return a.substr(0, std::min(a.rfind(':'), a.size()));
}

void Provision(const ApiContext& ctx, const Request& req, const Responder& respond) {
  auto answer = [&](Response res) { respond([res = std::move(res)] { return res; }); };
  if (auto wait = ctx.provision->AdmitAddress(ClientAddress(req))) return answer(RateLimited(*wait, "address"));
  bool deferred = false;
  if (auto prefer = req.Header("prefer"); prefer && prefer->find("respond-async") != std::string_view::npos) {
    deferred = true;
  }
  if (auto it = req.query.find("delivery"); it != req.query.end()) {
    if (it->second != "url" && it->second != "inline") {
      return answer(ErrorResponse(400, "invalid_argument", "delivery must be inline or url"));
    }
    deferred = it->second == "url";
  }
  auto data = CsrFrom(req);
  if (!data.ok()) return answer(Fail(req, data.error()));
  auto csr = provision::ProvisionService::ReadCsr(*data);
  if (!csr.ok()) return answer(Fail(req, csr.error()));
  // By device id and key: CSRs for the device made with another key (refused further on) do
  // not use up the device's own requests.
  if (auto wait = ctx.provision->AdmitDevice(csr->common_name + "/" + Sha256Hex(csr->spki_der))) {
    return answer(RateLimited(*wait, "device"));
  }
  ctx.provision->ProvisionAsync(
      std::move(*csr), [respond, deferred, svc = ctx.provision, id = req.request_id](Result<provision::Provisioned> r) {
        respond([r = std::move(r), deferred, svc, id]() -> Response {
          if (!r.ok()) return Fail(id, r.error());
          if (!deferred) return JsonResponse(200, ProvisionedJson(*r));
          provision::RetrieveLink link = svc->MakeRetrieveLink(r->record.serial);
          return JsonResponse(202, json::object{{"retrieve_url", link.url},
                                                {"expires_at", FormatRfc3339(link.expires_at)},
                                                {"thing_name", r->thing_name},
                                                {"endpoint", r->endpoint}});
        });
      });
}

Response Retrieve(const ApiContext& ctx, const Request& req) {
  const std::string& serial = req.params.at("serial");
  auto expires = req.query.find("expires");
  auto signature = req.query.find("signature");
  if (expires == req.query.end() || signature == req.query.end()) {
    return ErrorResponse(403, "permission_denied", "this URL is not signed");
  }
  switch (ctx.provision->CheckRetrieveLink(serial, expires->second, signature->second)) {
    case provision::LinkCheck::kTampered:
      return ErrorResponse(403, "permission_denied", "this URL's signature does not match");
    case provision::LinkCheck::kExpired:
      return ErrorResponse(410, "gone", "this URL has expired; provision again for a new one");
    case provision::LinkCheck::kValid:
      break;
  }
  auto pem = ctx.provision->ChainPem(serial);
  if (!pem.ok()) return Fail(req, pem.error());
  Response res;
  res.content_type = "application/x-pem-file";
  res.body = std::move(*pem);
  return res;
}

Response RotateCa(const ApiContext& ctx, const Request& req) {
  auto body = ParseJsonObject(req.body.empty() ? "{}" : req.body);
  if (!body.ok()) return Fail(req, body.error());
  auto fqdn = OptionalString(*body, "fqdn", kMaxQueryName);
  if (!fqdn.ok()) return Fail(req, fqdn.error());
  auto rotated = ctx.provision->RotateCa(req.params.at("fqdn"), fqdn->value_or(""), req.principal.Actor());
  if (!rotated.ok()) return Fail(req, rotated.error());
  json::object out = CertificateJson(rotated->created.record);
  out["chain_pem"] = rotated->created.chain_pem;
  out["replaces"] = req.params.at("fqdn");
  out["templates_moved"] = rotated->templates_moved;
  return JsonResponse(201, out);
}

}  // namespace

void AddProvisionRoutes(Router& router, const ApiContext& ctx) {
  const ApiContext* c = &ctx;
  router.Add("POST", "/v1/devices/keys", {Access::kOperator, false, kKeysBodyLimit},
             [c](Request& r) { return RegisterKeys(*c, r); });
  router.Add("GET", "/v1/devices", {Access::kReader}, [c](Request& r) { return ListDevices(*c, r); });
  router.Add("GET", "/v1/devices/{id}", {Access::kReader}, [c](Request& r) { return GetDevice(*c, r); });
  router.Add("POST", "/v1/devices/{id}/enable", {Access::kOperator}, [c](Request& r) { return EnableDevice(*c, r); });
  router.Add("DELETE", "/v1/devices/{id}", {Access::kOperator}, [c](Request& r) { return DeleteDevice(*c, r); });
  router.Add("POST", "/v1/devices/{id}/disable", {Access::kOperator}, [c](Request& r) { return DisableDevice(*c, r); });

  router.AddAsync("POST", "/v1/provision", {Access::kPublic, false, kProvisionBodyLimit},
                  [c](Request& r, const Responder& respond) { Provision(*c, r, respond); });
  router.Add("GET", "/v1/provision/certificates/{serial}", {Access::kPublic},
             [c](Request& r) { return Retrieve(*c, r); });

  AddRegistryKindRoutes(router, ctx, {registry::Kind::kTemplate, "provisioning-templates", "ca_fqdn"});

  router.Add("POST", "/v1/cas/{fqdn}/rotate", {Access::kOperator}, [c](Request& r) { return RotateCa(*c, r); });
}

}  // namespace certfleet::http
