// W5 routes: S3 event notifications, runs on demand, warehouse settings, status and
// deliveries.
#include <curl/curl.h>
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>

#include "distribution/distribution_service.h"
#include "distribution/sns.h"
#include "http/api.h"
#include "http/json.h"
#include "store/distribution_repo.h"

namespace certfleet::http {
namespace {

namespace json = boost::json;

// An S3 event batch holds at most a few records; 1 MiB is far beyond any real one.
constexpr size_t kEventsBodyLimit = size_t{1024} * 1024;
// A resend names at most 10,000 gateway EUIs of a few dozen bytes.
constexpr size_t kResendBodyLimit = size_t{1024} * 1024;
constexpr size_t kMaxEventRecords = 1000;
constexpr size_t kMaxKeyChars = 1024;
// Bounds what a settings body may hold before the service checks it.
constexpr size_t kMaxListItems = 1000;
constexpr size_t kMaxField = 1024;

std::string Str(const json::value* v) { return v && v->is_string() ? std::string(v->as_string()) : std::string(); }

// S3 event keys are URL-encoded with '+' for spaces.
std::string DecodeEventKey(std::string key) {
  for (auto& c : key) {
    if (c == '+') c = ' ';
  }
  int len = 0;
  char* decoded = curl_easy_unescape(nullptr, key.data(), static_cast<int>(key.size()), &len);
  std::string out(decoded ? decoded : "", decoded ? static_cast<size_t>(len) : 0);
  curl_free(decoded);
  return out;
}

// The objects an S3 event notification ({"Records": [...]}) says were created; `skipped`
// counts the other records (removals change nothing to send).
Result<std::vector<blob::ObjectInfo>> CreatedObjects(const ApiContext& ctx, const json::object& event,
                                                     int64_t& skipped) {
  const json::value* records = event.if_contains("Records");
  if (!records || !records->is_array()) {
    return MakeError(ErrorCode::kInvalidArgument, "expected an S3 event notification with a Records array");
  }
  if (records->as_array().size() > kMaxEventRecords) {
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("at most {} records per event", kMaxEventRecords));
  }
  std::vector<blob::ObjectInfo> objects;
  for (const auto& r : records->as_array()) {
    const json::object* rec = r.if_object();
    const json::value* s3 = rec ? rec->if_contains("s3") : nullptr;
    const json::value* object = s3 && s3->is_object() ? s3->as_object().if_contains("object") : nullptr;
    if (!object || !object->is_object()) return MakeError(ErrorCode::kInvalidArgument, "each record needs s3.object");
    if (!Str(rec->if_contains("eventName")).starts_with("ObjectCreated")) {
      ++skipped;
      continue;
    }
    const json::object& o = object->as_object();
    blob::ObjectInfo info;
    info.key = DecodeEventKey(Str(o.if_contains("key")));
    if (info.key.empty() || info.key.size() > kMaxKeyChars) {
      return MakeError(ErrorCode::kInvalidArgument, "s3.object.key must be 1 to 1024 characters");
    }
    info.etag = Str(o.if_contains("eTag"));
    if (info.etag.empty()) info.etag = Str(o.if_contains("sequencer"));
    if (const json::value* size = o.if_contains("size"); size && size->is_int64()) info.size = size->as_int64();
    // Never later than now: a time from the future would make every real event after it look
    // older than what is recorded, and be ignored.
    const int64_t now = ctx.clock.NowMillis();
    info.last_modified_millis = std::min(ParseRfc3339(Str(rec->if_contains("eventTime"))).value_or(now), now);
    objects.push_back(std::move(info));
  }
  return objects;
}

// An SNS message (x-amz-sns-message-type set): verified by its signature, not a token. A
// subscription is confirmed; a notification carries an S3 event notification as its Message.
Result<json::object> SnsEvents(const ApiContext& ctx, const Request& req) {
  if (ctx.sns == nullptr) return MakeError(ErrorCode::kPermissionDenied, "SNS messages are not taken here");
  CF_ASSIGN_OR_RETURN(distribution::SnsMessage m, ctx.sns->Verify(req.body));
  if (m.type == "SubscriptionConfirmation") {
    CF_RETURN_IF_ERROR(ctx.sns->Confirm(m));
    return json::object{{"confirmed", m.topic_arn}};
  }
  if (m.type != "Notification") return json::object{{"type", m.type}};
  CF_ASSIGN_OR_RETURN(json::object event, ParseJsonObject(m.message));
  if (const json::value* e = event.if_contains("Event"); e && e->is_string() && e->get_string() == "s3:TestEvent") {
    return json::object{{"test_event", true}};  // what S3 sends when the notification is set up
  }
  int64_t skipped = 0;
  CF_ASSIGN_OR_RETURN(auto objects, CreatedObjects(ctx, event, skipped));
  CF_ASSIGN_OR_RETURN(int64_t marked, ctx.distribution->MarkChanged(objects));
  return json::object{{"marked_pending", marked}, {"objects", objects.size()}, {"skipped_events", skipped}};
}

Result<Response> Events(const ApiContext& ctx, const Request& req) {
  if (req.Header("x-amz-sns-message-type")) {
    CF_ASSIGN_OR_RETURN(json::object out, SnsEvents(ctx, req));
    return JsonResponse(out.contains("marked_pending") ? 202 : 200, out);
  }
  CF_ASSIGN_OR_RETURN(json::object event, ParseJsonObject(req.body));
  int64_t skipped = 0;
  CF_ASSIGN_OR_RETURN(auto objects, CreatedObjects(ctx, event, skipped));
  CF_ASSIGN_OR_RETURN(int64_t marked, ctx.distribution->MarkChanged(objects));
  return JsonResponse(
      202, json::object{{"marked_pending", marked}, {"objects", objects.size()}, {"skipped_events", skipped}});
}

Response Run(const ApiContext& ctx, const Request& req) {
  auto id = ctx.distribution->RequestRun(req.principal.Actor());
  if (!id.ok()) return Fail(req, id.error());
  return JsonResponse(202, json::object{{"job_id", *id}, {"job", fmt::format("/v1/jobs/{}", *id)}});
}

// {"gateways"?: [EUI...], "failed_only"?: bool}: the records set back to PENDING_EMAIL.
Result<Response> Resend(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(json::object body, ParseJsonObject(req.body.empty() ? "{}" : req.body));
  std::vector<std::string> gateways;
  if (const json::value* g = body.if_contains("gateways"); g && !g->is_null()) {
    if (!g->is_array()) return MakeError(ErrorCode::kInvalidArgument, "gateways must be an array of gateway EUIs");
    for (const json::value& eui : g->get_array()) {
      if (!eui.is_string() || eui.get_string().empty() || eui.get_string().size() > kMaxField) {
        return MakeError(ErrorCode::kInvalidArgument, "gateways must be an array of gateway EUIs");
      }
      gateways.emplace_back(eui.get_string());
    }
  }
  bool failed_only = false;
  if (const json::value* f = body.if_contains("failed_only"); f && !f->is_null()) {
    if (!f->is_bool()) return MakeError(ErrorCode::kInvalidArgument, "failed_only must be true or false");
    failed_only = f->get_bool();
  }
  const std::string& warehouse = req.params.at("name");
  CF_ASSIGN_OR_RETURN(int64_t marked,
                      ctx.distribution->Resend(warehouse, gateways, failed_only, req.principal.Actor()));
  return JsonResponse(200, json::object{{"warehouse", warehouse}, {"marked", marked}});
}

json::object WarehouseJson(const store::WarehouseSettings& w) {
  return {{"name", w.name},
          {"recipients", json::value_from(w.recipients)},
          {"zip_encrypted", w.zip_password.has_value()},
          {"updated_at", OptTime(w.updated_at)},
          {"updated_by", w.updated_by}};
}

Response PutWarehouse(const ApiContext& ctx, const Request& req) {
  auto body = ParseJsonObject(req.body);
  if (!body.ok()) return Fail(req, body.error());
  std::vector<std::string> recipients;
  const json::value* list = body->if_contains("recipients");
  if (!list || !list->is_array() || list->as_array().size() > kMaxListItems) {
    return ErrorResponse(400, "invalid_argument", "recipients must be an array of mail addresses");
  }
  for (const auto& r : list->as_array()) {
    if (!r.is_string() || r.as_string().size() > kMaxField) {
      return ErrorResponse(400, "invalid_argument", "recipients must be an array of mail addresses");
    }
    recipients.emplace_back(r.as_string());
  }
  distribution::DistributionService::PasswordChange password;
  using Kind = distribution::DistributionService::PasswordChange::Kind;
  if (const json::value* pw = body->if_contains("zip_password"); pw && pw->is_null()) {
    password.kind = Kind::kRemove;
  } else if (pw) {
    // No control characters: a NUL would end the password libzip is given.
    auto text = OptionalString(*body, "zip_password", kMaxField);
    if (!text.ok()) return Fail(req, text.error());
    password = {Kind::kSet, **text};
  }
  auto saved =
      ctx.distribution->PutWarehouse(req.params.at("name"), std::move(recipients), password, req.principal.Actor());
  if (!saved.ok()) return Fail(req, saved.error());
  return JsonResponse(200, WarehouseJson(*saved));
}

Response ListWarehouses(const ApiContext& ctx, const Request& req) {
  auto rows = ctx.distribution->Warehouses();
  if (!rows.ok()) return Fail(req, rows.error());
  json::array items;
  for (const auto& w : *rows) items.push_back(WarehouseJson(w));
  return JsonResponse(200, PageJson(std::move(items), std::nullopt));
}

Response Status(const ApiContext& ctx, const Request& req) {
  auto page = ParsePage(req);
  if (!page.ok()) return Fail(req, page.error());
  store::RecordFilter f;
  f.limit = page->limit;
  auto warehouse = QueryParam(req, "warehouse", 64);
  auto status = EnumParam<store::DistributionStatus>(req, "status", store::kDistributionStatusNames);
  if (!warehouse.ok()) return Fail(req, warehouse.error());
  if (!status.ok()) return Fail(req, status.error());
  f.warehouse = *warehouse;
  f.status = *status;
  if (page->after) {
    const size_t sep = page->after->find('/');
    if (sep == std::string::npos)
      return ErrorResponse(400, "invalid_argument", "next is not a cursor from a previous page");
    f.after = std::make_pair(page->after->substr(0, sep), page->after->substr(sep + 1));
  }
  auto rows = ctx.distribution->Records(f);
  if (!rows.ok()) return Fail(req, rows.error());
  json::array items;
  for (const auto& r : *rows) {
    items.push_back(json::object{{"warehouse", r.warehouse},
                                 {"gateway_eui", r.gateway_eui},
                                 {"status", store::DistributionStatusName(r.status)},
                                 {"last_modified", OptTime(r.last_modified)},
                                 {"last_emailed", OptTime(r.last_emailed)},
                                 {"attempts", r.attempts},
                                 {"last_error", OptStr(r.last_error)}});
  }
  auto next =
      NextCursor(rows->size(), f.limit, [&] { return rows->back().warehouse + "/" + rows->back().gateway_eui; });
  return JsonResponse(200, PageJson(std::move(items), next));
}

Response Deliveries(const ApiContext& ctx, const Request& req) {
  auto page = ParsePage(req);
  if (!page.ok()) return Fail(req, page.error());
  auto before = AfterNumber(*page);
  auto warehouse = QueryParam(req, "warehouse", 64);
  if (!before.ok()) return Fail(req, before.error());
  if (!warehouse.ok()) return Fail(req, warehouse.error());
  auto rows = ctx.distribution->Deliveries(*warehouse, *before, page->limit);
  if (!rows.ok()) return Fail(req, rows.error());
  json::array items;
  for (const auto& d : *rows) {
    items.push_back(json::object{{"id", d.id},
                                 {"at", OptTime(d.at)},
                                 {"warehouse", d.warehouse},
                                 {"message_id", d.message_id},
                                 {"recipients", json::value_from(d.recipients)},
                                 {"subject", d.subject},
                                 {"zip_name", d.zip_name},
                                 {"zip_bytes", d.zip_bytes},
                                 {"message_bytes", d.message_bytes},
                                 {"part", d.part},
                                 {"parts", d.parts},
                                 {"gateways", json::value_from(d.gateways)}});
  }
  auto next = NextCursor(rows->size(), page->limit, [&] { return std::to_string(rows->back().id); });
  return JsonResponse(200, PageJson(std::move(items), next));
}

// Per warehouse, from this node's runs: each family's header, then its lines, in one pass.
std::string WarehouseMetrics(const ApiContext& ctx) {
  std::string gateways =
      "# HELP certfleet_distribution_warehouse_gateways_total Gateways mailed or failed per warehouse, by this "
      "node's runs.\n# TYPE certfleet_distribution_warehouse_gateways_total counter\n";
  std::string mails =
      "# HELP certfleet_distribution_warehouse_mails_total Mails per warehouse by outcome, by this node's runs.\n"
      "# TYPE certfleet_distribution_warehouse_mails_total counter\n";
  std::string bytes =
      "# HELP certfleet_distribution_warehouse_bytes_total Bytes of the mails sent per warehouse, by this node's "
      "runs.\n# TYPE certfleet_distribution_warehouse_bytes_total counter\n";
  for (const auto& [warehouse, t] : ctx.distribution->WarehouseCounters()) {
    const std::string w = EscapeLabel(warehouse);
    gateways += fmt::format(
        "certfleet_distribution_warehouse_gateways_total{{warehouse=\"{0}\",outcome=\"mailed\"}} {1}\n"
        "certfleet_distribution_warehouse_gateways_total{{warehouse=\"{0}\",outcome=\"failed\"}} {2}\n",
        w, t.gateways_sent, t.gateways_failed);
    mails += fmt::format(
        "certfleet_distribution_warehouse_mails_total{{warehouse=\"{0}\",outcome=\"sent\"}} {1}\n"
        "certfleet_distribution_warehouse_mails_total{{warehouse=\"{0}\",outcome=\"failed\"}} {2}\n",
        w, t.mails_sent, t.mails_failed);
    bytes += fmt::format("certfleet_distribution_warehouse_bytes_total{{warehouse=\"{}\"}} {}\n", w, t.bytes_sent);
  }
  return gateways + mails + bytes;
}

std::string DistributionMetrics(const ApiContext& ctx) {
  std::string out = WarehouseMetrics(ctx) +
                    "# HELP certfleet_distribution_records Distribution records by status.\n"
                    "# TYPE certfleet_distribution_records gauge\n";
  auto counts = ctx.distribution->RecordCounts();
  if (counts.ok()) {
    for (const auto& [status, n] : *counts) {
      out += fmt::format("certfleet_distribution_records{{status=\"{}\"}} {}\n", EscapeLabel(status), n);
    }
  }
  const auto& c = ctx.distribution->counters();
  out += fmt::format(
      "# HELP certfleet_distribution_mails_total Distribution mails by outcome.\n"
      "# TYPE certfleet_distribution_mails_total counter\n"
      "certfleet_distribution_mails_total{{outcome=\"sent\"}} {}\n"
      "certfleet_distribution_mails_total{{outcome=\"failed\"}} {}\n"
      "# HELP certfleet_distribution_mail_bytes_total Bytes of distribution mails sent.\n"
      "# TYPE certfleet_distribution_mail_bytes_total counter\n"
      "certfleet_distribution_mail_bytes_total {}\n",
      c.mails_sent.load(), c.mails_failed.load(), c.bytes_sent.load());
  return out;
}

}  // namespace

void AddDistributionRoutes(Router& router, const ApiContext& ctx) {
  const ApiContext* c = &ctx;
  // An SNS message carries its own credential, its signature: the handler checks it.
  auto from_sns = [](const Request& r) { return r.Header("x-amz-sns-message-type").has_value(); };
  router.Add("POST", "/v1/distribution/events", {Access::kOperator, false, kEventsBodyLimit, from_sns},
             [c](Request& r) { return Events(*c, r); });
  router.Add("POST", "/v1/distribution/run", {Access::kOperator}, [c](Request& r) { return Run(*c, r); });
  router.Add("POST", "/v1/distribution/warehouses/{name}/resend", {Access::kOperator, false, kResendBodyLimit},
             [c](Request& r) { return Resend(*c, r); });
  router.Add("PUT", "/v1/distribution/warehouses/{name}", {Access::kAdmin},
             [c](Request& r) { return PutWarehouse(*c, r); });
  router.Add("GET", "/v1/distribution/warehouses", {Access::kReader},
             [c](Request& r) { return ListWarehouses(*c, r); });
  router.Add("GET", "/v1/distribution/status", {Access::kReader}, [c](Request& r) { return Status(*c, r); });
  router.Add("GET", "/v1/distribution/deliveries", {Access::kReader}, [c](Request& r) { return Deliveries(*c, r); });
  ctx.metrics.AddCollector([c] { return DistributionMetrics(*c); });
}

}  // namespace certfleet::http
