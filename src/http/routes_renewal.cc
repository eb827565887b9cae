// W4 routes: the hosts whose certificates certfleet-agent renews, and the agent protocol.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <boost/json.hpp>
#include <map>

#include "core/clock.h"
#include "core/csv.h"
#include "core/enum_names.h"
#include "core/json.h"
#include "core/text.h"
#include "http/api.h"
#include "http/json.h"
#include "pki/csr.h"
#include "renewal/agent_service.h"
#include "renewal/host_service.h"
#include "renewal/renewal_service.h"
#include "store/certificates_repo.h"

namespace certfleet::http {
namespace {

namespace json = boost::json;

// A host's registration is a few paths and names; 64 KiB leaves room for 100 long SANs.
constexpr size_t kHostBodyLimit = size_t{64} * 1024;
// A list of up to HostService::kMaxBulkHosts registrations: a few hundred bytes each.
constexpr size_t kHostListBodyLimit = size_t{16} * 1024 * 1024;
constexpr size_t kMaxSan = 253;  // a DNS name's length
// A run names at most RenewalService::kMaxRunHosts host ids of at most 253 bytes.
constexpr size_t kRunBodyLimit = size_t{3} * 1024 * 1024;
// A long poll holds a connection; a minute stays under common proxies' idle timeouts.
constexpr int64_t kMaxWaitSeconds = 60;

json::object HostJson(const renewal::HostService& hosts, const store::HostRecord& h) {
  const renewal::HostSettings s = hosts.SettingsOf(h);
  return {
      {"host_id", h.host_id},
      {"status", store::HostStatusName(h.status)},
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

// The columns of a CSV list of hosts: its header names some of these, host_id among them.
constexpr std::string_view kCsvColumns[] = {"host_id",       "sans",     "cert_path", "key_path",
                                            "cacert_path",   "key_type", "profile",   "renewal_threshold_days",
                                            "reload_command"};

// A CSV list of hosts (header first), each row as the JSON object POST /v1/hosts takes:
// empty cells follow the defaults, SANs are separated by spaces or ';'.
Result<std::vector<Result<renewal::HostSpec>>> ParseHostCsv(std::string_view text) {
  // As a JSON body's strings must be.
  if (!IsValidUtf8(text)) return MakeError(ErrorCode::kInvalidArgument, "the CSV is not valid UTF-8");
  CsvReader reader = CsvReader::OfText(text);
  std::vector<std::string> header;
  CF_ASSIGN_OR_RETURN(bool any, reader.Next(header));
  if (!any) return MakeError(ErrorCode::kInvalidArgument, "the CSV is empty: its first line names the columns");
  for (size_t i = 0; i < header.size(); ++i) {
    const std::string& column = header[i];
    if (std::find(std::begin(kCsvColumns), std::end(kCsvColumns), column) == std::end(kCsvColumns)) {
      return MakeError(ErrorCode::kInvalidArgument,
                       fmt::format("unknown CSV column '{}'; the columns are {}", Escaped(column.substr(0, 64)),
                                   fmt::join(kCsvColumns, ", ")));
    }
    if (std::find(header.begin(), header.begin() + static_cast<std::ptrdiff_t>(i), column) !=
        header.begin() + static_cast<std::ptrdiff_t>(i)) {
      return MakeError(ErrorCode::kInvalidArgument, fmt::format("the CSV column {} is named twice", column));
    }
  }
  if (std::find(header.begin(), header.end(), "host_id") == header.end()) {
    return MakeError(ErrorCode::kInvalidArgument, "the CSV's header must name a host_id column");
  }
  std::vector<Result<renewal::HostSpec>> rows;
  for (std::vector<std::string> fields;;) {
    CF_ASSIGN_OR_RETURN(bool more, reader.Next(fields));
    if (!more) break;
    if (rows.size() == renewal::HostService::kMaxBulkHosts) {
      return MakeError(ErrorCode::kInvalidArgument, fmt::format("at most {} hosts in one request; split the list",
                                                                renewal::HostService::kMaxBulkHosts));
    }
    if (fields.size() != header.size()) {
      rows.push_back(MakeError(ErrorCode::kInvalidArgument,
                               fmt::format("{} fields where the header has {}", fields.size(), header.size())));
      continue;
    }
    json::object row;
    Result<void> read = Ok();
    for (size_t i = 0; i < header.size() && read.ok(); ++i) {
      const std::string& cell = fields[i];
      if (cell.empty()) continue;
      if (header[i] == "sans") {
        json::array sans;
        for (size_t start = 0; start < cell.size();) {
          const size_t end = std::min(cell.find_first_of(" ;", start), cell.size());
          if (end > start) sans.emplace_back(cell.substr(start, end - start));
          start = end + 1;
        }
        row["sans"] = std::move(sans);
      } else if (header[i] == "renewal_threshold_days") {
        auto days = ParseInt(cell, "renewal_threshold_days");
        if (days.ok())
          row["renewal_threshold_days"] = *days;
        else
          read = days.error();
      } else {
        row[header[i]] = cell;
      }
    }
    if (!read.ok()) {
      rows.push_back(read.error());
    } else {
      rows.push_back(ParseHostSpec(row));
    }
  }
  return rows;
}

Result<std::vector<Result<renewal::HostSpec>>> ParseHostArray(const json::array& items) {
  if (items.size() > renewal::HostService::kMaxBulkHosts) {
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("at most {} hosts in one request; split the list",
                                                              renewal::HostService::kMaxBulkHosts));
  }
  std::vector<Result<renewal::HostSpec>> rows;
  rows.reserve(items.size());
  for (const auto& item : items) {
    if (!item.is_object()) {
      rows.push_back(MakeError(ErrorCode::kInvalidArgument, "each host is a JSON object"));
    } else {
      rows.push_back(ParseHostSpec(item.get_object()));
    }
  }
  return rows;
}

// Each row's outcome and the counts, in the order given (row 1 is the first host).
json::object BulkJson(const std::vector<renewal::RowResult>& results) {
  json::array rows;
  std::map<std::string_view, int64_t> counts{{"created", 0}, {"unchanged", 0}, {"rejected", 0}};
  for (size_t i = 0; i < results.size(); ++i) {
    const renewal::RowResult& r = results[i];
    const std::string_view outcome = EnumName(r.outcome, renewal::kRowOutcomeNames);
    ++counts[outcome];
    json::object row{{"row", i + 1},
                     {"host_id", r.host_id.empty() ? json::value(nullptr) : json::value(r.host_id)},
                     {"result", outcome}};
    if (r.outcome == renewal::RowOutcome::kRejected) row["error"] = r.error;
    rows.push_back(std::move(row));
  }
  json::object out;
  for (const auto& [name, n] : counts) out[name] = n;
  out["rows"] = std::move(rows);
  return out;
}

// One host (a JSON object: 201 with the host), or a list of them (a JSON array, or CSV as
// text/csv: 200 with each row's outcome).
Result<Response> Create(const ApiContext& ctx, const Request& req) {
  std::vector<Result<renewal::HostSpec>> rows;
  if (MediaType(req) == "text/csv") {
    CF_ASSIGN_OR_RETURN(rows, ParseHostCsv(req.body));
  } else {
    CF_ASSIGN_OR_RETURN(json::value body, ParseJson(req.body));
    if (!(body.is_object() || body.is_array())) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "the body must be a JSON object (a host), a JSON array of hosts, or CSV sent as text/csv");
    }
    if (body.is_object()) {
      CF_ASSIGN_OR_RETURN(renewal::HostSpec spec, ParseHostSpec(body.get_object()));
      CF_ASSIGN_OR_RETURN(store::HostRecord made, ctx.hosts->Create(spec, req.principal.Actor()));
      return JsonResponse(201, HostJson(*ctx.hosts, made));
    }
    CF_ASSIGN_OR_RETURN(rows, ParseHostArray(body.get_array()));
  }
  CF_ASSIGN_OR_RETURN(auto results, ctx.hosts->CreateMany(rows, req.principal.Actor()));
  return JsonResponse(200, BulkJson(results));
}

Response List(const ApiContext& ctx, const Request& req) {
  auto page = ParsePage(req);
  if (!page.ok()) return Fail(req, page.error());
  auto status = EnumParam<store::HostStatus>(req, "status", store::kHostStatusNames);
  auto due = QueryParam(req, "due_before", 40);
  if (!status.ok()) return Fail(req, status.error());
  if (!due.ok()) return Fail(req, due.error());
  store::HostFilter filter;
  filter.limit = page->limit;
  filter.after = page->after;
  filter.status = *status;
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
  auto h =
      ctx.renewals->RevokeHost(req.params.at("id"), reason->value_or("cessationOfOperation"), req.principal.Actor());
  if (!h.ok()) return Fail(req, h.error());
  return JsonResponse(200, HostJson(*ctx.hosts, *h));
}

// A JSON merge patch (RFC 7396) of the host's settings: a field given replaces its value,
// null returns it to the default, one not given stays.
Result<Response> Patch(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(json::object patch, ParseJsonObject(req.body));
  auto change = [&patch](const renewal::HostSpec& current) -> Result<renewal::HostSpec> {
    json::object merged = renewal::SpecJson(current);
    merged["host_id"] = current.host_id;
    for (const auto& [key, value] : patch) merged[key] = value;
    return ParseHostSpec(merged);
  };
  CF_ASSIGN_OR_RETURN(store::HostRecord h, ctx.hosts->Update(req.params.at("id"), change, req.principal.Actor()));
  return JsonResponse(200, HostJson(*ctx.hosts, h));
}

// Removes the host, revoking its certificate unless ?revoke=false.
Result<Response> Delete(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(auto revoke, QueryParam(req, "revoke", 5));
  if (revoke && *revoke != "true" && *revoke != "false") {
    return MakeError(ErrorCode::kInvalidArgument, "revoke must be true or false");
  }
  CF_RETURN_IF_ERROR(
      ctx.renewals->DeleteHost(req.params.at("id"), revoke.value_or("true") == "true", req.principal.Actor()));
  return Response{204, "application/json", "", {}};
}

// A revoked or failed host enrolls again: a new single-use token for its agent.
Result<Response> Reactivate(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(std::string token, ctx.hosts->Reactivate(req.params.at("id"), req.principal.Actor()));
  CF_ASSIGN_OR_RETURN(store::HostRecord h, ctx.hosts->Get(req.params.at("id")));
  json::object out = HostJson(*ctx.hosts, h);
  out["token"] = token;
  return NoStore(JsonResponse(200, out));
}

// The same single-use enrollment token as `certfleet host token ID`, for automation.
Response CreateToken(const ApiContext& ctx, const Request& req) {
  auto token = ctx.hosts->CreateToken(req.params.at("id"), req.principal.Actor());
  if (!token.ok()) return Fail(req, token.error());
  return NoStore(JsonResponse(201, json::object{{"host_id", req.params.at("id")}, {"token", *token}}));
}

json::object CredentialJson(const store::EnrollmentCredential& c) {
  boost::system::error_code ec;
  json::value hosts = json::parse(c.patterns, ec);
  if (ec) hosts = json::array{};
  return {{"id", c.id},
          {"hosts", std::move(hosts)},
          {"uses", c.max_uses},
          {"used", c.used},
          {"expires_at", FormatRfc3339(c.expires_at)},
          {"revoked_at", OptTime(c.revoked_at)},
          {"last_used_at", OptTime(c.last_used_at)},
          {"created_by", c.created_by},
          {"created_at", FormatRfc3339(c.created_at)}};
}

// A fleet enrollment credential: {"hosts": [patterns], "uses": N, "ttl": "72h"}; its secret
// is in the answer, once.
Result<Response> CreateCredential(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(json::object body, ParseJsonObject(req.body));
  renewal::CredentialSpec spec;
  const json::value* hosts = body.if_contains("hosts");
  if (hosts == nullptr || !hosts->is_array()) {
    return MakeError(ErrorCode::kInvalidArgument, "hosts must be an array of host ids and patterns");
  }
  for (const auto& h : hosts->get_array()) {
    if (!h.is_string() || h.get_string().size() > renewal::HostService::kMaxHostId) {
      return MakeError(ErrorCode::kInvalidArgument, "hosts must be an array of host ids and patterns");
    }
    spec.hosts.emplace_back(h.get_string());
    if (spec.hosts.size() > renewal::HostService::kMaxCredentialHosts) break;  // the service says why
  }
  const json::value* uses = body.if_contains("uses");
  if (uses == nullptr || !uses->is_int64()) return MakeError(ErrorCode::kInvalidArgument, "uses must be an integer");
  spec.uses = uses->get_int64();
  CF_ASSIGN_OR_RETURN(std::string ttl, RequiredString(body, "ttl", 16));
  CF_ASSIGN_OR_RETURN(spec.ttl, ParseDuration("ttl", ttl, renewal::HostService::kMaxCredentialTtl));
  CF_ASSIGN_OR_RETURN(renewal::MintedCredential minted, ctx.hosts->CreateCredential(spec, req.principal.Actor()));
  json::object out = CredentialJson(minted.credential);
  out["secret"] = minted.secret;
  return NoStore(JsonResponse(201, out));
}

Result<Response> ListCredentials(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(Page page, ParsePage(req));
  CF_ASSIGN_OR_RETURN(auto before, AfterNumber(page));
  CF_ASSIGN_OR_RETURN(auto credentials, ctx.hosts->ListCredentials(before, page.limit));
  json::array items;
  for (const auto& c : credentials) items.push_back(CredentialJson(c));
  auto next = NextCursor(credentials.size(), page.limit, [&] { return std::to_string(credentials.back().id); });
  return JsonResponse(200, PageJson(std::move(items), next));
}

Result<Response> RevokeCredential(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(int64_t id, PathId(req));
  CF_ASSIGN_OR_RETURN(auto c, ctx.hosts->RevokeCredential(id, req.principal.Actor()));
  return JsonResponse(200, CredentialJson(c));
}

// Renewal settings changed while serving, on every node: {"ca": fqdn}.
Result<Response> RenewalSettings(const ApiContext& ctx) {
  CF_ASSIGN_OR_RETURN(std::string ca, ctx.agents->RenewalCa());
  return JsonResponse(200, json::object{{"ca", ca.empty() ? json::value(nullptr) : json::value(ca)}});
}

Result<Response> PutRenewalSettings(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(json::object body, ParseJsonObject(req.body));
  for (const auto& [key, value] : body) {
    if (key != "ca") return MakeError(ErrorCode::kInvalidArgument, "the renewal settings are: ca");
  }
  CF_ASSIGN_OR_RETURN(std::string ca, RequiredString(body, "ca", renewal::HostService::kMaxHostId));
  CF_RETURN_IF_ERROR(ctx.renewals->SetCa(ca, req.principal.Actor()));
  return RenewalSettings(ctx);
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
  auto csr = RequiredString(*body, "csr", pki::kMaxCsrBytes, Text::kLines);
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

// The host an agent's verified client certificate speaks for.
Result<store::HostRecord> AgentHost(const ApiContext& ctx, const Request& req) {
  return ctx.renewals->AuthenticateAgent(req.client_cert->serial, req.client_cert->sha256_fingerprint);
}

json::object RenewalJson(const store::RenewalRecord& r) {
  boost::system::error_code ec;
  json::value history = json::parse(r.history, ec);
  if (ec) history = json::array{};
  return {{"id", r.id},
          {"run_id", r.run_id},
          {"host_id", r.host_id},
          {"state", store::RenewalStateName(r.state)},
          {"attempt", r.attempt},
          {"max_attempts", r.max_attempts},
          {r.finished_at || r.state == store::RenewalState::kQueued ? "due_at" : "deadline", FormatRfc3339(r.due_at)},
          {"serial", OptStr(r.serial)},
          {"old_serial", OptStr(r.old_serial)},
          {"failed_step", OptStr(r.failed_step)},
          {"error", OptStr(r.error)},
          {"history", std::move(history)},
          {"created_at", FormatRfc3339(r.created_at)},
          {"updated_at", FormatRfc3339(r.updated_at)},
          {"finished_at", OptTime(r.finished_at)}};
}

json::object RunJson(const store::RenewalRunSummary& s) {
  json::object states;
  for (const auto& [state, count] : s.states) states[state] = count;
  return {{"id", s.run.id},       {"trigger", s.run.trigger},    {"actor", s.run.actor},
          {"total", s.run.total}, {"states", std::move(states)}, {"created_at", FormatRfc3339(s.run.created_at)}};
}

Response StartRun(const ApiContext& ctx, const Request& req) {
  auto body = ParseJsonObject(req.body.empty() ? "{}" : req.body);
  if (!body.ok()) return Fail(req, body.error());
  renewal::RunScope scope;
  if (const json::value* all = body->if_contains("all"); all && !all->is_null()) {
    if (!all->is_bool()) return ErrorResponse(400, "invalid_argument", "all must be true or false");
    scope.all = all->get_bool();
  }
  if (const json::value* hosts = body->if_contains("hosts"); hosts && !hosts->is_null()) {
    if (!hosts->is_array()) return ErrorResponse(400, "invalid_argument", "hosts must be an array of host ids");
    if (hosts->get_array().size() > renewal::RenewalService::kMaxRunHosts) {
      return ErrorResponse(400, "invalid_argument",
                           fmt::format("at most {} hosts in one run", renewal::RenewalService::kMaxRunHosts));
    }
    for (const auto& h : hosts->get_array()) {
      if (!h.is_string() || h.get_string().empty() || h.get_string().size() > renewal::HostService::kMaxHostId) {
        return ErrorResponse(400, "invalid_argument", "hosts must be an array of host ids");
      }
      scope.hosts.emplace_back(h.get_string());
    }
  }
  if (scope.all && !scope.hosts.empty()) {
    return ErrorResponse(400, "invalid_argument", "give hosts or all, not both");
  }
  auto started = ctx.renewals->StartRun(scope, "manual", req.principal.Actor());
  if (!started.ok()) return Fail(req, started.error());
  return JsonResponse(201, json::object{{"run_id", started->run_id}, {"queued", started->queued}});
}

Response ListRenewals(const ApiContext& ctx, const Request& req) {
  auto page = ParsePage(req);
  if (!page.ok()) return Fail(req, page.error());
  auto before = AfterNumber(*page);
  auto state = EnumParam<store::RenewalState>(req, "state", store::kRenewalStateNames);
  auto host = QueryParam(req, "host", renewal::HostService::kMaxHostId);
  auto run = QueryParam(req, "run", 20);
  if (!state.ok()) return Fail(req, state.error());
  for (const auto* q : {&host, &run}) {
    if (!q->ok()) return Fail(req, q->error());
  }
  if (!before.ok()) return Fail(req, before.error());
  store::RenewalFilter filter;
  filter.limit = page->limit;
  filter.before_id = *before;
  filter.host_id = *host;
  filter.state = *state;
  if (*run) {
    auto id = ParseInt(**run, "run");
    if (!id.ok()) return Fail(req, id.error());
    filter.run_id = *id;
  }
  auto renewals = ctx.renewals->List(filter);
  if (!renewals.ok()) return Fail(req, renewals.error());
  // The newest runs with their counts, so that one request shows where the work stands.
  constexpr int kRunsShown = 20;
  auto runs = ctx.renewals->Runs(std::nullopt, kRunsShown);
  if (!runs.ok()) return Fail(req, runs.error());
  json::array items;
  for (const auto& r : *renewals) items.push_back(RenewalJson(r));
  json::array run_items;
  for (const auto& r : *runs) run_items.push_back(RunJson(r));
  auto next = NextCursor(renewals->size(), page->limit, [&] { return std::to_string(renewals->back().id); });
  json::object out = PageJson(std::move(items), next);
  out["runs"] = std::move(run_items);
  return JsonResponse(200, out);
}

Response GetRenewal(const ApiContext& ctx, const Request& req) {
  auto id = PathId(req);
  if (!id.ok()) return Fail(req, id.error());
  auto r = ctx.renewals->Get(*id);
  if (!r.ok()) return Fail(req, r.error());
  return JsonResponse(200, RenewalJson(*r));
}

json::object TaskJson(const renewal::RenewalTask& t) {
  const renewal::HostSettings& s = t.settings;
  return {{"renewal_id", t.renewal_id},
          {"attempt", t.attempt},
          {"deadline", FormatRfc3339(t.deadline)},
          {"host_id", t.host_id},
          {"sans", json::value_from(s.sans)},
          {"key_type", s.key_type},
          {"cert_path", s.cert_path},
          {"key_path", s.key_path},
          {"cacert_path", s.cacert_path},
          {"reload_command", OptStr(s.reload_command)}};
}

Response TaskResponse(const ApiContext& ctx, std::string_view request_id, const std::string& host_id) {
  auto task = ctx.renewals->TaskFor(host_id);
  if (!task.ok()) return Fail(request_id, task.error());
  if (!*task) return Response{204, "application/json", "", {}};
  return JsonResponse(200, TaskJson(**task));
}

// The agent's long poll: a task at once if there is one, else when one comes or after `wait`
// seconds (204).
void Tasks(const ApiContext& ctx, Request& req, const Responder& respond) {
  auto host = AgentHost(ctx, req);
  if (!host.ok()) return respond([e = host.error(), id = req.request_id] { return Fail(id, e); });
  auto wait = QueryParam(req, "wait", 4);
  if (!wait.ok()) return respond([e = wait.error(), id = req.request_id] { return Fail(id, e); });
  int64_t wait_s = 0;
  if (*wait) {
    auto n = ParseInt(**wait, "wait");
    if (!n.ok() || *n < 0 || *n > kMaxWaitSeconds) {
      return respond([id = req.request_id] {
        return Fail(id,
                    MakeError(ErrorCode::kInvalidArgument, fmt::format("wait must be 0-{} seconds", kMaxWaitSeconds)));
      });
    }
    wait_s = *n;
  }
  auto now = TaskResponse(ctx, req.request_id, host->host_id);
  if (now.status != 204 || wait_s == 0) return respond([now] { return now; });
  ctx.renewals->WaitForTask(host->host_id, wait_s * 1000,
                            [c = &ctx, respond, id = req.request_id, host_id = host->host_id](bool) {
                              respond([c, id, host_id] { return TaskResponse(*c, id, host_id); });
                            });
}

// What every agent request on one of its renewals carries: who it is (its certificate),
// which renewal (the path) and a JSON body.
struct AgentCall {
  store::HostRecord host;
  int64_t renewal_id = 0;
  json::object body;
};

Result<AgentCall> ParseAgentCall(const ApiContext& ctx, const Request& req) {
  AgentCall call;
  CF_ASSIGN_OR_RETURN(call.host, AgentHost(ctx, req));
  CF_ASSIGN_OR_RETURN(call.renewal_id, PathId(req));
  CF_ASSIGN_OR_RETURN(call.body, ParseJsonObject(req.body));
  return call;
}

Response SubmitCsr(const ApiContext& ctx, const Request& req) {
  auto call = ParseAgentCall(ctx, req);
  if (!call.ok()) return Fail(req, call.error());
  auto csr = RequiredString(call->body, "csr", pki::kMaxCsrBytes, Text::kLines);
  if (!csr.ok()) return Fail(req, csr.error());
  auto issued = ctx.renewals->SubmitCsr(call->host, call->renewal_id, *csr);
  if (!issued.ok()) return Fail(req, issued.error());
  return JsonResponse(201, json::object{{"renewal_id", call->renewal_id},
                                        {"serial", issued->record.serial},
                                        {"not_after", FormatRfc3339(issued->record.not_after)},
                                        {"certificate", issued->certificate_pem},
                                        {"chain", issued->chain_pem}});
}

Response ReportStatus(const ApiContext& ctx, const Request& req) {
  auto call = ParseAgentCall(ctx, req);
  if (!call.ok()) return Fail(req, call.error());
  auto state = RequiredString(call->body, "state", 16);
  auto step = OptionalString(call->body, "step", 16);
  // Longer errors are cut to what the renewal keeps.
  auto error = OptionalString(call->body, "error", renewal::RenewalService::kMaxError * 4, Text::kLines);
  if (!state.ok()) return Fail(req, state.error());
  if (!step.ok()) return Fail(req, step.error());
  if (!error.ok()) return Fail(req, error.error());
  std::optional<store::RenewalState> reported = ParseEnum<store::RenewalState>(*state, store::kRenewalStateNames);
  if (!reported) return ErrorResponse(400, "invalid_argument", "state must be deployed, validated or failed");
  auto r = ctx.renewals->Report(call->host, call->renewal_id, *reported, step->value_or(""), error->value_or(""));
  if (!r.ok()) return Fail(req, r.error());
  return JsonResponse(200, RenewalJson(*r));
}

// An agent whose certificate is near its end asks for a renewal itself.
Response SelfRenew(const ApiContext& ctx, const Request& req) {
  auto host = AgentHost(ctx, req);
  if (!host.ok()) return Fail(req, host.error());
  renewal::RunScope scope;
  scope.hosts = {host->host_id};
  auto started = ctx.renewals->StartRun(scope, "agent", "host:" + host->host_id);
  if (!started.ok()) return Fail(req, started.error());
  return JsonResponse(started->queued > 0 ? 201 : 200,
                      json::object{{"run_id", started->run_id}, {"queued", started->queued}});
}

// W4 in Prometheus text: renewals by state, hosts by status and by expiry, from the store
// (the same on every node); the durations of the runs this node ended.
std::string RenewalMetricsText(renewal::RenewalService& renewals) {
  std::string out;
  if (auto f = renewals.CurrentFigures(); f.ok()) {
    out += "# HELP certfleet_renewals Renewals (W4) by state, over every run.\n# TYPE certfleet_renewals gauge\n";
    for (size_t i = 0; i < std::size(store::kRenewalStateNames); ++i) {
      const auto state = static_cast<store::RenewalState>(i);
      out += fmt::format("certfleet_renewals{{state=\"{}\"}} {}\n", store::RenewalStateName(state),
                         f->renewals.contains(state) ? f->renewals.at(state) : 0);
    }
    out += "# HELP certfleet_hosts Hosts (W4) by status.\n# TYPE certfleet_hosts gauge\n";
    for (size_t i = 0; i < std::size(store::kHostStatusNames); ++i) {
      const auto status = static_cast<store::HostStatus>(i);
      out += fmt::format("certfleet_hosts{{status=\"{}\"}} {}\n", store::HostStatusName(status),
                         f->hosts.contains(status) ? f->hosts.at(status) : 0);
    }
    out +=
        "# HELP certfleet_hosts_expiring Hosts (W4) not revoked whose certificate expires within the window (or has "
        "expired).\n# TYPE certfleet_hosts_expiring gauge\n";
    out += fmt::format("certfleet_hosts_expiring{{within=\"7d\"}} {}\ncertfleet_hosts_expiring{{within=\"30d\"}} {}\n",
                       f->expiring_7d, f->expiring_30d);
  }
  const renewal::RenewalService::RunDurations d = renewals.EndedRunDurations();
  out +=
      "# HELP certfleet_renewal_run_duration_seconds From a renewal run's start to its last renewal's end, for the "
      "runs this node ended.\n# TYPE certfleet_renewal_run_duration_seconds histogram\n";
  for (size_t i = 0; i < d.kBuckets.size(); ++i) {
    out += fmt::format("certfleet_renewal_run_duration_seconds_bucket{{le=\"{}\"}} {}\n", d.kBuckets[i], d.counts[i]);
  }
  out += fmt::format(
      "certfleet_renewal_run_duration_seconds_bucket{{le=\"+Inf\"}} {}\ncertfleet_renewal_run_duration_seconds_sum "
      "{}\ncertfleet_renewal_run_duration_seconds_count {}\n",
      d.count, d.sum, d.count);
  return out;
}

}  // namespace

void AddRenewalRoutes(Router& router, const ApiContext& ctx) {
  const ApiContext* c = &ctx;
  router.Add("POST", "/v1/hosts", {Access::kOperator, false, kHostListBodyLimit},
             [c](Request& r) { return Create(*c, r); });
  router.Add("POST", "/v1/enrollment-credentials", {Access::kOperator, false, kHostBodyLimit},
             [c](Request& r) { return CreateCredential(*c, r); });
  router.Add("GET", "/v1/enrollment-credentials", {Access::kReader},
             [c](Request& r) { return ListCredentials(*c, r); });
  router.Add("DELETE", "/v1/enrollment-credentials/{id}", {Access::kOperator},
             [c](Request& r) { return RevokeCredential(*c, r); });
  router.Add("GET", "/v1/hosts", {Access::kReader}, [c](Request& r) { return List(*c, r); });
  router.Add("GET", "/v1/hosts/{id}", {Access::kReader}, [c](Request& r) { return Get(*c, r); });
  router.Add("POST", "/v1/hosts/{id}/revoke", {Access::kOperator, false, kHostBodyLimit},
             [c](Request& r) { return Revoke(*c, r); });
  router.Add("POST", "/v1/hosts/{id}/token", {Access::kOperator}, [c](Request& r) { return CreateToken(*c, r); });
  router.Add("PATCH", "/v1/hosts/{id}", {Access::kOperator, false, kHostBodyLimit},
             [c](Request& r) { return Patch(*c, r); });
  router.Add("DELETE", "/v1/hosts/{id}", {Access::kOperator}, [c](Request& r) { return Delete(*c, r); });
  router.Add("POST", "/v1/hosts/{id}/reactivate", {Access::kOperator}, [c](Request& r) { return Reactivate(*c, r); });
  // Public: the enrollment token is the credential, checked by the agent service.
  router.Add("POST", "/v1/agent/enroll", {Access::kPublic, false, kHostBodyLimit},
             [c](Request& r) { return Enroll(*c, r); });
  if (ctx.renewals == nullptr) return;
  ctx.metrics.AddCollector([c] { return RenewalMetricsText(*c->renewals); });
  router.Add("POST", "/v1/renewals/run", {Access::kOperator, false, kRunBodyLimit},
             [c](Request& r) { return StartRun(*c, r); });
  router.Add("GET", "/v1/renewals", {Access::kReader}, [c](Request& r) { return ListRenewals(*c, r); });
  router.Add("GET", "/v1/renewal/settings", {Access::kReader}, [c](Request&) { return RenewalSettings(*c); });
  router.Add("PUT", "/v1/renewal/settings", {Access::kAdmin, false, kHostBodyLimit},
             [c](Request& r) { return PutRenewalSettings(*c, r); });
  router.Add("GET", "/v1/renewals/{id}", {Access::kReader}, [c](Request& r) { return GetRenewal(*c, r); });
  // The agent protocol: no token, the agent's certificate (mutual TLS) is the credential.
  router.AddAsync("GET", "/v1/agent/tasks", {Access::kPublic, true, kHostBodyLimit},
                  [c](Request& r, const Responder& respond) { Tasks(*c, r, respond); });
  router.Add("POST", "/v1/agent/renewals/{id}/csr", {Access::kPublic, true, kHostBodyLimit},
             [c](Request& r) { return SubmitCsr(*c, r); });
  router.Add("POST", "/v1/agent/renewals/{id}/status", {Access::kPublic, true, kHostBodyLimit},
             [c](Request& r) { return ReportStatus(*c, r); });
  router.Add("POST", "/v1/agent/renew", {Access::kPublic, true, kHostBodyLimit},
             [c](Request& r) { return SelfRenew(*c, r); });
}

}  // namespace certfleet::http
