// W3 routes: imports of supplier manifests, and the product profiles they apply (registry
// objects, served through the registry's routes).
#include <fmt/format.h>

#include <boost/json.hpp>
#include <filesystem>

#include "bulk/import_service.h"
#include "core/crypto.h"
#include "core/files.h"
#include "http/api.h"
#include "http/json.h"
#include "registry/registry.h"

namespace certfleet::http {
namespace {

namespace json = boost::json;

// Manifests sent over HTTP are held in memory while they arrive; larger ones go through
// `certfleet import FILE` or the inbound store, which read them from a file.
constexpr size_t kManifestBodyLimit = size_t{256} * 1024 * 1024;
constexpr size_t kMaxQueryName = 128;

json::object ImportJson(const store::ImportRecord& r, int64_t now) {
  const int64_t end = r.finished_at.value_or(now);
  const double seconds = r.started_at ? static_cast<double>(end - *r.started_at) / 1000.0 : 0.0;
  const double rate = seconds > 0 ? static_cast<double>(r.counts.seen) / seconds : 0.0;
  // The rest of the manifest at the pace of what was read so far.
  const double read = static_cast<double>(r.read_permille) / 1000.0;
  json::value eta = nullptr;
  if (r.state == "running" && read > 0 && read < 1) eta = seconds * (1 - read) / read;
  return {{"id", r.id},
          {"supplier", r.supplier},
          {"profile", r.profile},
          {"bundle_type", r.bundle_type.empty() ? json::value(nullptr) : json::value(r.bundle_type)},
          {"state", r.state},
          {"counts",
           {{"seen", r.counts.seen},
            {"imported", r.counts.imported},
            {"already_present", r.counts.already_present},
            {"rejected", r.counts.rejected},
            {"conflicts", r.counts.conflicts}}},
          {"rate_per_second", rate},
          {"read_fraction", read},
          {"eta_seconds", eta},
          {"error", OptStr(r.error)},
          {"created_by", r.created_by},
          {"created_at", FormatRfc3339(r.created_at)},
          {"started_at", OptTime(r.started_at)},
          {"finished_at", OptTime(r.finished_at)}};
}

Response Start(const ApiContext& ctx, const Request& req) {
  auto supplier = QueryParam(req, "supplier", kMaxQueryName);
  auto profile = QueryParam(req, "profile", kMaxQueryName);
  auto bundle = QueryParam(req, "bundle_type", 8);
  for (const auto* r : {&supplier, &profile, &bundle}) {
    if (!r->ok()) return Fail(req, r->error());
  }
  if (!*supplier || !*profile) return ErrorResponse(400, "invalid_argument", "supplier and profile are required");
  if (req.body.empty()) return ErrorResponse(400, "invalid_argument", "the body is the manifest; it is empty");
  // The manifest goes to a file that the import reads as a stream (Start moves it), readable
  // by certfleet alone from the start.
  const std::string path = (std::filesystem::temp_directory_path() / ("certfleet-upload-" + RandomToken(12))).string();
  if (!WriteFileAtomically(path, req.body, 0600).ok()) {
    return Fail(req, MakeError(ErrorCode::kUnavailable, "cannot write the manifest to a temporary file"));
  }
  auto started = ctx.imports->Start(**supplier, **profile, bundle->value_or(""), path, req.principal.Actor());
  std::error_code ec;
  std::filesystem::remove(path, ec);  // left only if Start refused before moving it
  if (!started.ok()) return Fail(req, started.error());
  return JsonResponse(202, ImportJson(*started, ctx.clock.NowMillis()));
}

Response List(const ApiContext& ctx, const Request& req) {
  auto page = ParsePage(req);
  if (!page.ok()) return Fail(req, page.error());
  auto before = AfterNumber(*page);
  if (!before.ok()) return Fail(req, before.error());
  auto rows = ctx.imports->List(*before, page->limit);
  if (!rows.ok()) return Fail(req, rows.error());
  json::array items;
  for (const auto& r : *rows) items.push_back(ImportJson(r, ctx.clock.NowMillis()));
  auto next = NextCursor(rows->size(), page->limit, [&] { return std::to_string(rows->back().id); });
  return JsonResponse(200, PageJson(std::move(items), next));
}

Response Get(const ApiContext& ctx, const Request& req) {
  auto id = PathId(req);
  if (!id.ok()) return Fail(req, id.error());
  auto r = ctx.imports->Get(*id);
  if (!r.ok()) return Fail(req, r.error());
  return JsonResponse(200, ImportJson(*r, ctx.clock.NowMillis()));
}

Response Rows(const ApiContext& ctx, const Request& req) {
  auto id = PathId(req);
  if (!id.ok()) return Fail(req, id.error());
  auto page = ParsePage(req);
  if (!page.ok()) return Fail(req, page.error());
  auto after = AfterNumber(*page);
  auto status = QueryParam(req, "status", 20);
  if (!after.ok()) return Fail(req, after.error());
  if (!status.ok()) return Fail(req, status.error());
  if (*status && **status != "rejected" && **status != "conflict") {
    return ErrorResponse(400, "invalid_argument", "status must be rejected or conflict");
  }
  auto rows = ctx.imports->Rows(*id, *status, after->value_or(0), page->limit);
  if (!rows.ok()) return Fail(req, rows.error());
  json::array items;
  for (const auto& r : *rows) {
    items.push_back(json::object{{"index", r.index},
                                 {"status", r.status},
                                 {"thing_name", r.thing_name},
                                 {"fingerprint", r.fingerprint},
                                 {"reason", r.reason}});
  }
  auto next = NextCursor(rows->size(), page->limit, [&] { return std::to_string(rows->back().index); });
  return JsonResponse(200, PageJson(std::move(items), next));
}

Response Cancel(const ApiContext& ctx, const Request& req) {
  auto id = PathId(req);
  if (!id.ok()) return Fail(req, id.error());
  auto r = ctx.imports->Cancel(*id, req.principal.Actor());
  if (!r.ok()) return Fail(req, r.error());
  return JsonResponse(200, ImportJson(*r, ctx.clock.NowMillis()));
}

json::object VerifierJson(const store::ImportVerifier& v) {
  return {{"id", v.id},
          {"subject", v.subject},
          {"fingerprint", v.fingerprint},
          {"not_after", FormatRfc3339(v.not_after)},
          {"source", v.source ? json::value(v.source->substr(0, v.source->rfind(' '))) : json::value("api")},
          {"created_by", v.created_by},
          {"created_at", FormatRfc3339(v.created_at)},
          {"certificate_pem", v.certificate_pem}};
}

// A Microchip manifest signer: the PEM certificate as the body (application/x-pem-file), or
// {"certificate_pem": "..."}.
Result<Response> AddVerifier(const ApiContext& ctx, const Request& req) {
  std::string pem;
  if (MediaType(req) == "application/json") {
    CF_ASSIGN_OR_RETURN(json::object body, ParseJsonObject(req.body));
    CF_ASSIGN_OR_RETURN(pem,
                        RequiredString(body, "certificate_pem", bulk::ImportService::kMaxVerifierBytes, Text::kLines));
  } else {
    pem = req.body;
  }
  CF_ASSIGN_OR_RETURN(auto v, ctx.imports->AddVerifier(pem, std::nullopt, req.principal.Actor()));
  return JsonResponse(201, VerifierJson(v));
}

Result<Response> ListVerifiers(const ApiContext& ctx) {
  CF_ASSIGN_OR_RETURN(auto verifiers, ctx.imports->ListVerifiers());
  json::array items;
  for (const auto& v : verifiers) items.push_back(VerifierJson(v));
  return JsonResponse(200, json::object{{"items", std::move(items)},
                                        {"verifier_dir", static_cast<int64_t>(ctx.imports->DirectoryVerifiers())}});
}

Result<Response> RemoveVerifier(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(int64_t id, PathId(req));
  CF_RETURN_IF_ERROR(ctx.imports->RemoveVerifier(id, req.principal.Actor()));
  return Response{204, "application/json", "", {}};
}

}  // namespace

void AddBulkRoutes(Router& router, const ApiContext& ctx) {
  const ApiContext* c = &ctx;
  // Before /v1/imports/{id}: the first route that matches answers.
  router.Add("POST", "/v1/imports/verifiers", {Access::kOperator, false, bulk::ImportService::kMaxVerifierBytes * 2},
             [c](Request& r) { return AddVerifier(*c, r); });
  router.Add("GET", "/v1/imports/verifiers", {Access::kReader}, [c](Request&) { return ListVerifiers(*c); });
  router.Add("DELETE", "/v1/imports/verifiers/{id}", {Access::kOperator},
             [c](Request& r) { return RemoveVerifier(*c, r); });
  router.Add("POST", "/v1/imports", {Access::kOperator, false, kManifestBodyLimit},
             [c](Request& r) { return Start(*c, r); });
  router.Add("GET", "/v1/imports", {Access::kReader}, [c](Request& r) { return List(*c, r); });
  router.Add("GET", "/v1/imports/{id}", {Access::kReader}, [c](Request& r) { return Get(*c, r); });
  router.Add("GET", "/v1/imports/{id}/rows", {Access::kReader}, [c](Request& r) { return Rows(*c, r); });
  router.Add("POST", "/v1/imports/{id}/cancel", {Access::kOperator}, [c](Request& r) { return Cancel(*c, r); });
  AddRegistryKindRoutes(router, ctx, {registry::Kind::kProfile, "profiles", ""});
}

}  // namespace certfleet::http
