// Routes of the platform itself: health, metrics, audit log, jobs and API tokens.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <boost/json.hpp>

#include "core/log.h"
#include "events/webhooks.h"
#include "http/api.h"
#include "http/json.h"
#include "store/audit_repo.h"
#include "store/jobs_repo.h"
#include "store/tokens_repo.h"

namespace certfleet::http {
namespace {

namespace json = boost::json;

// last_used_at is written at most this often per token, so reads do not all become writes.
constexpr int64_t kLastUsedResolutionMs = 60'000;
constexpr size_t kMaxNameLength = 200;
constexpr size_t kMaxCursorChains = 64;  // an audit cursor names each chain at most once: 8

json::object JobJson(const store::Job& j) {
  json::value payload = json::parse(j.payload);
  const double percent =
      j.progress_total > 0 ? 100.0 * static_cast<double>(j.progress_done) / static_cast<double>(j.progress_total) : 0;
  return {{"id", j.id},
          {"kind", j.kind},
          {"state", store::JobStateName(j.state)},
          {"payload", payload},
          {"run_at", FormatRfc3339(j.run_at)},
          {"attempts", j.attempts},
          {"max_attempts", j.max_attempts},
          {"lease_owner", OptStr(j.lease_owner)},
          {"lease_expires_at", OptTime(j.lease_expires_at)},
          {"last_error", OptStr(j.last_error)},
          {"progress", {{"done", j.progress_done}, {"total", j.progress_total}, {"percent", percent}}},
          {"created_at", FormatRfc3339(j.created_at)},
          {"updated_at", FormatRfc3339(j.updated_at)},
          {"finished_at", OptTime(j.finished_at)}};
}

json::object TokenJson(const store::ApiToken& t) {
  return {{"id", t.id},
          {"name", t.name},
          {"role", store::RoleName(t.role)},
          {"created_at", FormatRfc3339(t.created_at)},
          {"created_by", t.created_by},
          {"last_used_at", OptTime(t.last_used_at)},
          {"revoked_at", OptTime(t.revoked_at)}};
}

Response Healthz(const Request&) { return JsonResponse(200, json::object{{"status", "ok"}}); }

Response Readyz(const ApiContext& ctx, const Request& req) {
  // A node taken out before it stops: its balancer sends the next connections elsewhere.
  if (ctx.draining && ctx.draining()) return ErrorResponse(503, "unavailable", "this node is shutting down");
  Result<void> ping = ctx.store.Ping();
  if (!ping.ok()) {
    log::Warn("not ready: store unreachable", {{"request_id", req.request_id}, {"error", ping.error().message}});
    return ErrorResponse(503, "unavailable", "the store is unreachable");
  }
  return JsonResponse(200, json::object{{"status", "ready"}});
}

Result<Response> ListAudit(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(Page page, ParsePage(req));
  store::AuditFilter filter;
  filter.limit = page.limit;
  // The cursor: the last row read of each chain, comma-separated.
  if (page.after) {
    for (size_t start = 0;;) {
      const size_t comma = page.after->find(',', start);
      if (filter.after.size() == kMaxCursorChains)
        return MakeError(ErrorCode::kInvalidArgument, "next: too many chains");
      CF_ASSIGN_OR_RETURN(int64_t seq, ParseInt(std::string_view(*page.after).substr(start, comma - start), "next"));
      if (seq < 1) return MakeError(ErrorCode::kInvalidArgument, "next is not a cursor from a previous page");
      filter.after.push_back(seq);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  CF_ASSIGN_OR_RETURN(filter.actor, QueryParam(req, "actor", kMaxNameLength));
  CF_ASSIGN_OR_RETURN(filter.action, QueryParam(req, "action", kMaxNameLength));
  CF_ASSIGN_OR_RETURN(auto rows, store::Read(ctx.store, [&](store::Tx& tx) { return store::ListAudit(tx, filter); }));
  json::array items;
  for (const auto& e : rows.entries) {
    json::value details = json::parse(e.details);
    items.push_back(json::object{{"seq", e.seq},
                                 {"chain", store::AuditChainOf(e.seq)},
                                 {"at", FormatRfc3339(e.at)},
                                 {"actor", e.actor},
                                 {"action", e.action},
                                 {"object", e.object},
                                 {"details", details},
                                 {"prev_hash", e.prev_hash},
                                 {"hash", e.hash}});
  }
  std::string cursor = fmt::format("{}", fmt::join(rows.next, ","));
  json::object out = PageJson(std::move(items), NextCursor(rows.entries.size(), filter.limit, [&] { return cursor; }));
  // Where a reader at the end resumes later to read what was appended since (next is null then).
  out["cursor"] = cursor.empty() ? json::value(nullptr) : json::value(Base64UrlEncode(cursor));
  return JsonResponse(200, std::move(out));
}

Result<Response> ListJobs(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(Page page, ParsePage(req));
  store::JobFilter filter;
  filter.limit = page.limit;
  CF_ASSIGN_OR_RETURN(filter.before_id, AfterNumber(page));
  if (auto it = req.query.find("state"); it != req.query.end()) {
    CF_ASSIGN_OR_RETURN(filter.state, store::ParseJobState(it->second));
  }
  CF_ASSIGN_OR_RETURN(filter.kind, QueryParam(req, "kind", kMaxNameLength));
  CF_ASSIGN_OR_RETURN(auto jobs, store::Read(ctx.store, [&](store::Tx& tx) { return store::ListJobs(tx, filter); }));
  json::array items;
  for (const auto& j : jobs) items.push_back(JobJson(j));
  return JsonResponse(200, PageJson(std::move(items), NextCursor(jobs.size(), filter.limit,
                                                                 [&] { return std::to_string(jobs.back().id); })));
}

Result<Response> GetJob(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(int64_t id, PathId(req));
  CF_ASSIGN_OR_RETURN(auto job, store::Read(ctx.store, [&](store::Tx& tx) { return store::GetJob(tx, id); }));
  if (!job) return MakeError(ErrorCode::kNotFound, fmt::format("no job {}", id));
  return JsonResponse(200, JobJson(*job));
}

Result<Response> RetryJob(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(int64_t id, PathId(req));
  CF_ASSIGN_OR_RETURN(
      auto job, store::Write(ctx.store, [&](store::Tx& tx) -> Result<store::Job> {
        const int64_t now = ctx.clock.NowMillis();
        CF_ASSIGN_OR_RETURN(bool retried, store::RetryDeadJob(tx, id, now));
        CF_ASSIGN_OR_RETURN(auto job, store::GetJob(tx, id));
        if (!job) return MakeError(ErrorCode::kNotFound, fmt::format("no job {}", id));
        if (!retried) {
          return MakeError(ErrorCode::kFailedPrecondition, fmt::format("job {} is {}; only dead jobs can be retried",
                                                                       id, store::JobStateName(job->state)));
        }
        CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, req.principal.Actor(), "job.retry", fmt::format("job:{}", id),
                                              json::serialize(json::object{{"kind", job->kind}})));
        return *job;
      }));
  return JsonResponse(200, JobJson(job));
}

Result<Response> CreateToken(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(json::object body, ParseJsonObject(req.body));
  CF_ASSIGN_OR_RETURN(std::string role_name, RequiredString(body, "role", 20));
  CF_ASSIGN_OR_RETURN(store::Role role, store::ParseRole(role_name));
  CF_ASSIGN_OR_RETURN(auto name, OptionalString(body, "name", TokenService::kMaxNameLength));
  CF_ASSIGN_OR_RETURN(store::NewToken token, ctx.api_tokens.Create(role, name.value_or(""), req.principal.Actor()));
  json::object out = TokenJson(token.record);
  out["token"] = token.bearer;
  return NoStore(JsonResponse(201, out));
}

Result<Response> ListTokens(const ApiContext& ctx, const Request&) {
  CF_ASSIGN_OR_RETURN(auto tokens, ctx.api_tokens.List());
  json::array items;
  for (const auto& t : tokens) items.push_back(TokenJson(t));
  return JsonResponse(200, json::object{{"items", std::move(items)}});
}

Result<Response> RevokeToken(const ApiContext& ctx, const Request& req) {
  CF_RETURN_IF_ERROR(ctx.api_tokens.Revoke(req.params.at("id"), req.principal.Actor()));
  ctx.tokens.Clear();
  Response res;
  res.status = 204;
  return res;
}

std::string JobCountsText(store::Store& store) {
  auto counts = store::Read(store, [](store::Tx& tx) { return store::CountJobs(tx); });
  std::string out = "# HELP certfleet_jobs Jobs in the job table by kind and state.\n# TYPE certfleet_jobs gauge\n";
  if (!counts.ok()) return out;
  for (const auto& c : *counts) {
    out += fmt::format("certfleet_jobs{{kind=\"{}\",state=\"{}\"}} {}\n", EscapeLabel(c.kind),
                       store::JobStateName(c.state), c.count);
  }
  return out;
}

// Each webhook URL's state, from the store (the same on every node).
std::string WebhookText(events::WebhookDispatcher& webhooks) {
  auto states = webhooks.States();
  std::string failing =
      "# HELP certfleet_webhook_failing 1 while a webhook URL's last delivery failed (it is tried again every "
      "webhooks.every_seconds).\n# TYPE certfleet_webhook_failing gauge\n";
  std::string last =
      "# HELP certfleet_webhook_last_event The id of the last event a webhook URL took.\n"
      "# TYPE certfleet_webhook_last_event gauge\n";
  if (!states.ok()) return failing + last;
  for (size_t i = 0; i < states->size(); ++i) {
    const auto& s = (*states)[i];
    // The index (from 1, in webhooks.urls' order) tells apart URLs shown alike.
    const std::string labels = fmt::format("index=\"{}\",url=\"{}\"", i + 1, EscapeLabel(s.url));
    failing += fmt::format("certfleet_webhook_failing{{{}}} {}\n", labels, s.cursor.last_error ? 1 : 0);
    last += fmt::format("certfleet_webhook_last_event{{{}}} {}\n", labels, s.cursor.last_event_id);
  }
  return failing + last;
}

}  // namespace

Authenticator MakeStoreAuthenticator(store::Store& store, const Clock& clock, TokenCache& cache) {
  return [&store, &clock, &cache](std::string_view bearer) -> Result<std::optional<Principal>> {
    const int64_t now = clock.NowMillis();
    if (auto cached = cache.Find(bearer, now)) return cached;
    const uint64_t generation = cache.Generation();
    CF_ASSIGN_OR_RETURN(auto token,
                        store::Read(store, [&](store::Tx& tx) { return store::AuthenticateBearer(tx, bearer); }));
    if (!token) return std::optional<Principal>();
    if (!token->last_used_at || *token->last_used_at < now - kLastUsedResolutionMs) {
      Result<void> touched = store::TouchApiToken(store, token->id, now);
      if (!touched.ok()) log::Warn("recording token use", {{"error", touched.error().message}});
    }
    Principal principal{true, token->id, token->name, token->role};
    cache.Put(bearer, principal, now, generation);
    return std::optional<Principal>(std::move(principal));
  };
}

void AddSystemRoutes(Router& router, const ApiContext& ctx) {
  const ApiContext* c = &ctx;
  router.Add("GET", "/healthz", {Access::kPublic}, Healthz);
  router.Add("GET", "/readyz", {Access::kPublic}, [c](Request& r) { return Readyz(*c, r); });
  router.Add("GET", "/metrics", {Access::kReader}, [c](Request&) {
    Response res;
    res.content_type = "text/plain; version=0.0.4";
    res.body = c->metrics.Render();
    return res;
  });
  ctx.metrics.AddCollector([c] { return JobCountsText(c->store); });
  if (ctx.webhooks != nullptr) ctx.metrics.AddCollector([c] { return WebhookText(*c->webhooks); });
  router.Add("GET", "/v1/audit", {Access::kAdmin}, [c](Request& r) { return ListAudit(*c, r); });
  router.Add("GET", "/v1/jobs", {Access::kReader}, [c](Request& r) { return ListJobs(*c, r); });
  router.Add("GET", "/v1/jobs/{id}", {Access::kReader}, [c](Request& r) { return GetJob(*c, r); });
  router.Add("POST", "/v1/jobs/{id}/retry", {Access::kOperator}, [c](Request& r) { return RetryJob(*c, r); });
  router.Add("POST", "/v1/tokens", {Access::kAdmin}, [c](Request& r) { return CreateToken(*c, r); });
  router.Add("GET", "/v1/tokens", {Access::kAdmin}, [c](Request& r) { return ListTokens(*c, r); });
  router.Add("DELETE", "/v1/tokens/{id}", {Access::kAdmin}, [c](Request& r) { return RevokeToken(*c, r); });
}

}  // namespace certfleet::http
