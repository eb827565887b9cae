#include "renewal/renewal_service.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>

#include "core/log.h"
#include "core/thread_name.h"
#include "store/audit_repo.h"
#include "store/certificates_repo.h"
#include "store/hosts_repo.h"
#include "store/jobs_repo.h"
#include "store/renewals_repo.h"

namespace certfleet::renewal {
namespace {

namespace json = boost::json;

// Serializes the pumps of all nodes on PostgreSQL, so that together they keep the limit.
constexpr int64_t kPumpLockKey = 0x63667277;  // "cfrw"
// Overdue attempts one pump times out; the next pump takes the rest.
constexpr int kMaxOverduePerPump = 1000;
// Waiting hosts asked about in one statement.
constexpr size_t kWaiterChunk = 1000;
// Steps an agent may name in a failure report (the agent's steps of a renewal task).
constexpr std::string_view kSteps[] = {"key", "csr", "submit", "write", "verify", "reload", "swap", "report"};

void AppendHistory(store::RenewalRecord& r, int64_t now, json::object entry) {
  json::value history = json::parse(r.history);
  entry.emplace("at", now);
  entry.emplace("attempt", r.attempt);
  if (!entry.contains("state")) entry.emplace("state", store::RenewalStateName(r.state));
  history.as_array().push_back(std::move(entry));
  r.history = json::serialize(history);
  r.updated_at = now;
}

// Hosts listed by name in a digest (mail and event); the rest are counted.
constexpr size_t kMaxDigestListed = 1000;

// What a run did, as its digest tells it.
struct Digest {
  store::RenewalRunRecord run;
  std::vector<std::string> renewed;
  std::vector<store::RenewalRecord> failed;
  int64_t waiting = 0;   // hosts whose renewal date has passed, at the time of the digest
  int64_t ended_at = 0;  // its last renewal's end
};

Result<Digest> DigestOf(store::Tx& tx, int64_t run_id, int64_t now) {
  Digest d;
  CF_ASSIGN_OR_RETURN(auto runs, store::ListRenewalRuns(tx, run_id + 1, 1));
  if (runs.empty() || runs.front().run.id != run_id) {
    return MakeError(ErrorCode::kNotFound, fmt::format("no renewal run {}", run_id));
  }
  d.run = runs.front().run;
  store::RenewalFilter filter;
  filter.run_id = run_id;
  filter.limit = static_cast<int>(std::max<int64_t>(d.run.total, 1));
  CF_ASSIGN_OR_RETURN(auto renewals, store::ListRenewals(tx, filter));
  d.ended_at = d.run.created_at;
  for (auto& r : renewals) {
    d.ended_at = std::max(d.ended_at, r.finished_at.value_or(r.updated_at));
    if (r.state == store::RenewalState::kValidated) d.renewed.push_back(r.host_id);
    if (r.state == store::RenewalState::kFailed) d.failed.push_back(std::move(r));
  }
  std::sort(d.renewed.begin(), d.renewed.end());
  std::sort(d.failed.begin(), d.failed.end(), [](const auto& a, const auto& b) { return a.host_id < b.host_id; });
  CF_ASSIGN_OR_RETURN(d.waiting, store::CountDueHosts(tx, now));
  return d;
}

json::object DigestJson(const Digest& d) {
  json::array failures;
  for (size_t i = 0; i < d.failed.size() && i < kMaxDigestListed; ++i) {
    const auto& r = d.failed[i];
    failures.push_back({{"host_id", r.host_id},
                        {"renewal_id", r.id},
                        {"step", r.failed_step.value_or("")},
                        {"error", r.error.value_or("")}});
  }
  return {{"run_id", d.run.id},
          {"trigger", d.run.trigger},
          {"started_at", d.run.created_at},
          {"ended_at", d.ended_at},
          {"duration_seconds", static_cast<double>(d.ended_at - d.run.created_at) / 1000.0},
          {"total", d.run.total},
          {"renewed", static_cast<int64_t>(d.renewed.size())},
          {"failed", static_cast<int64_t>(d.failed.size())},
          {"failures", std::move(failures)},
          {"waiting", d.waiting}};
}

// Whether an attempt of `r` issued `serial` (its history keeps each failed attempt's).
bool IssuedIn(const store::RenewalRecord& r, std::string_view serial) {
  boost::system::error_code ec;
  const json::value history = json::parse(r.history, ec);
  if (ec || !history.is_array()) return false;
  for (const auto& entry : history.get_array()) {
    const json::value* s = entry.is_object() ? entry.get_object().if_contains("serial") : nullptr;
    if (s != nullptr && s->is_string() && s->get_string() == serial) return true;
  }
  return false;
}

// The step that was due when an attempt in `state` ran out of time.
std::string_view StepDue(store::RenewalState state) {
  if (state == store::RenewalState::kAwaitingCsr) return "csr";
  if (state == store::RenewalState::kIssued) return "deploy";
  return "validate";
}

// At most RenewalService::kMaxError bytes, cut at a UTF-8 character's start.
std::string Truncated(std::string_view text) {
  if (text.size() <= RenewalService::kMaxError) return std::string(text);
  size_t n = RenewalService::kMaxError;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  return std::string(text.substr(0, n));
}

}  // namespace

RenewalService::RenewalService(store::Store& store, HostService& hosts, AgentService& agents, mail::Mailer* mailer,
                               const Clock& clock, Options options)
    : store_(store), hosts_(hosts), agents_(agents), mailer_(mailer), clock_(clock), options_(std::move(options)) {}

// Stop() throws only when a thread cannot be joined or memory runs out: terminating is right.
RenewalService::~RenewalService() { Stop(); }  // NOLINT(bugprone-exception-escape)

Result<RunStarted> RenewalService::StartRun(const RunScope& scope, std::string_view trigger, std::string_view actor) {
  if (scope.hosts.size() > kMaxRunHosts) {
    return MakeError(ErrorCode::kInvalidArgument,
                     fmt::format("at most {} hosts in one run (all: true takes every host)", kMaxRunHosts));
  }
  const int64_t now = clock_.NowMillis();
  auto started = store::Write(store_, [&](store::Tx& tx) -> Result<RunStarted> {
    store::RenewalSelection selection;
    if (!scope.hosts.empty()) {
      CF_ASSIGN_OR_RETURN(auto known, store::HostsHaveCertificate(tx, scope.hosts));
      for (const auto& h : scope.hosts) {
        if (!known.contains(h)) return MakeError(ErrorCode::kInvalidArgument, fmt::format("no host {}", h));
      }
      selection.host_ids = scope.hosts;
    }
    selection.all = scope.all;
    selection.due_by = now;
    RunStarted out;
    CF_ASSIGN_OR_RETURN(
        out.run_id, store::InsertRenewalRun(tx, {0, std::string(trigger), std::string(actor), 0, now, std::nullopt}));
    const std::string first = json::serialize(json::array{
        json::object{{"at", now}, {"attempt", 0}, {"state", store::RenewalStateName(store::RenewalState::kQueued)}}});
    CF_ASSIGN_OR_RETURN(out.queued, store::QueueRenewals(tx, out.run_id, selection, options_.max_attempts, first, now));
    CF_RETURN_IF_ERROR(store::SetRenewalRunTotal(tx, out.run_id, out.queued));
    CF_RETURN_IF_ERROR(
        store::AppendAudit(tx, now, actor, "renewal.run", fmt::format("renewal_run:{}", out.run_id),
                           json::serialize(json::object{{"trigger", trigger},
                                                        {"queued", out.queued},
                                                        {"all", scope.all},
                                                        {"hosts", static_cast<int64_t>(scope.hosts.size())}})));
    return out;
  });
  if (started.ok()) Wake();
  return started;
}

Result<int> RenewalService::Pump() {
  CF_ASSIGN_OR_RETURN(auto hosts, PumpStarted());
  return static_cast<int>(hosts.size());
}

Result<std::vector<std::string>> RenewalService::PumpStarted() {
  const int64_t now = clock_.NowMillis();
  return store::Write(store_, [&](store::Tx& tx) -> Result<std::vector<std::string>> {
    CF_RETURN_IF_ERROR(store::LockForTransaction(tx, kPumpLockKey));
    CF_ASSIGN_OR_RETURN(auto overdue, store::OverdueRenewals(tx, now, kMaxOverduePerPump));
    for (const auto& seen : overdue) {
      // Read again under the host's lock: the agent's report may have just committed.
      CF_RETURN_IF_ERROR(HostService::Lock(tx, seen.host_id));
      CF_ASSIGN_OR_RETURN(auto r, store::FindRenewal(tx, seen.id));
      if (!r || r->state != seen.state || r->attempt != seen.attempt) continue;
      const std::string error =
          fmt::format("the agent did not finish before the deadline (it was {})", store::RenewalStateName(r->state));
      CF_RETURN_IF_ERROR(FailAttempt(tx, *r, r->attempt, StepDue(r->state), error, "certfleet", now));
    }
    std::vector<std::string> started;
    CF_ASSIGN_OR_RETURN(int64_t active, store::CountActiveRenewals(tx));
    const int64_t free = options_.concurrency - active;
    if (free <= 0) return started;
    CF_ASSIGN_OR_RETURN(auto startable, store::StartableRenewals(tx, now, static_cast<int>(free)));
    std::vector<std::string> ids;
    ids.reserve(startable.size());
    for (const auto& r : startable) ids.push_back(r.host_id);
    CF_ASSIGN_OR_RETURN(auto has_certificate, store::HostsHaveCertificate(tx, ids));
    for (auto& r : startable) {
      const int stored_attempt = r.attempt;
      ++r.attempt;
      if (!has_certificate[r.host_id]) {
        // Its agent cannot authenticate: no attempt can succeed until it enrolls.
        r.attempt = r.max_attempts;
        CF_RETURN_IF_ERROR(FailAttempt(tx, r, stored_attempt, "enroll",
                                       "the host has no certificate: its agent has not enrolled (certfleet host token)",
                                       "certfleet", now));
        continue;
      }
      r.state = store::RenewalState::kAwaitingCsr;
      r.due_at = now + Millis(options_.deadline);
      r.serial.reset();
      r.not_after.reset();
      AppendHistory(r, now, {});
      CF_RETURN_IF_ERROR(store::UpdateRenewal(tx, r));
      started.push_back(r.host_id);
    }
    return started;
  });
}

Result<void> RenewalService::FailAttempt(store::Tx& tx, store::RenewalRecord& r, int stored_attempt,
                                         std::string_view step, std::string_view error, std::string_view actor,
                                         int64_t now) {
  // Written only over the state it was read in: a CSR's issuance (which takes no host lock)
  // may have moved it on since.
  const store::RenewalState read_state = r.state;
  auto update = [&]() -> Result<void> {
    CF_ASSIGN_OR_RETURN(bool updated, store::UpdateRenewalFrom(tx, r, read_state, stored_attempt));
    if (!updated)
      return MakeError(ErrorCode::kFailedPrecondition, fmt::format("renewal {} changed meanwhile; try again", r.id));
    return Ok();
  };
  if (r.serial) CF_RETURN_IF_ERROR(RevokeLater(tx, *r.serial, now));
  AppendHistory(r, now,
                {{"state", "attempt_failed"},
                 {"step", step},
                 {"error", error},
                 {"serial", r.serial ? json::value(*r.serial) : nullptr}});
  r.serial.reset();
  r.not_after.reset();
  if (r.attempt < r.max_attempts) {
    // Backoff doubles per attempt: base, 2 base, 4 base, ... up to the cap.
    const int shift = std::min(r.attempt - 1, 30);
    r.state = store::RenewalState::kQueued;
    r.due_at = now + std::min(Millis(options_.backoff) << std::max(shift, 0), Millis(options_.backoff_max));
    AppendHistory(r, now, {});
    return update();
  }
  r.state = store::RenewalState::kFailed;
  r.failed_step = std::string(step);
  r.error = std::string(error);
  r.finished_at = now;
  AppendHistory(r, now, {});
  CF_RETURN_IF_ERROR(update());
  CF_ASSIGN_OR_RETURN(auto host, store::FindHost(tx, r.host_id));
  if (host && host->status != store::HostStatus::kRevoked) {
    host->status = store::HostStatus::kFailed;
    host->last_run = r.id;
    host->last_error = fmt::format("{}: {}", step, error);
    host->updated_at = now;
    CF_RETURN_IF_ERROR(store::UpdateHost(tx, *host));
  }
  const json::object details{
      {"renewal_id", r.id}, {"host_id", r.host_id}, {"step", step}, {"error", error}, {"attempts", r.attempt}};
  CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "renewal.fail", "host:" + r.host_id, json::serialize(details)));
  CF_RETURN_IF_ERROR(store::AppendEvent(tx, now, "renewal/failed", json::serialize(details)));
  if (options_.notify_mode == NotifyMode::kDigest) return Ok();
  store::NewJob notify;
  notify.kind = std::string(kNotifyJob);
  notify.payload = json::serialize(json::object{{"renewal_id", r.id}});
  notify.run_at = now;
  notify.dedupe_key = fmt::format("renewal-notify:{}", r.id);
  CF_RETURN_IF_ERROR(store::EnqueueJob(tx, notify, now));
  return Ok();
}

Result<void> RenewalService::DeleteHost(std::string_view host_id, bool revoke, std::string_view actor) {
  CF_ASSIGN_OR_RETURN(store::HostRecord host, hosts_.Get(host_id));
  if (revoke && host.serial && host.status != store::HostStatus::kRevoked) {
    CF_RETURN_IF_ERROR(agents_.Revoke(host.host_id, "cessationOfOperation", actor));
  }
  const int64_t now = clock_.NowMillis();
  return store_.Transact([&](store::Tx& tx) -> Result<void> {
    CF_RETURN_IF_ERROR(HostService::Lock(tx, host.host_id));
    // What its attempt issued goes as a failed attempt's does.
    CF_ASSIGN_OR_RETURN(auto open,
                        EndOpenRenewal(tx, host.host_id, "the host was deleted",
                                       revoke ? std::optional(now + Millis(options_.grace)) : std::nullopt, now));
    CF_ASSIGN_OR_RETURN(bool deleted, store::DeleteHost(tx, host.host_id));
    if (!deleted) return NoSuchHost(host.host_id);
    const json::object details{{"revoked", revoke && host.serial ? json::value(*host.serial) : nullptr},
                               {"open_renewal", open ? json::value(*open) : nullptr}};
    CF_RETURN_IF_ERROR(
        store::AppendAudit(tx, now, actor, "host.delete", "host:" + host.host_id, json::serialize(details)));
    return Ok();
  });
}

Result<store::HostRecord> RenewalService::RevokeHost(std::string_view host_id, std::string_view reason,
                                                     std::string_view actor) {
  CF_ASSIGN_OR_RETURN(store::HostRecord host, agents_.Revoke(host_id, reason, actor));
  const int64_t now = clock_.NowMillis();
  CF_RETURN_IF_ERROR(store::Write(store_, [&](store::Tx& tx) -> Result<void> {
    CF_RETURN_IF_ERROR(HostService::Lock(tx, host.host_id));
    CF_RETURN_IF_ERROR(EndOpenRenewal(tx, host.host_id, "the host was revoked", now, now));
    return Ok();
  }));
  return host;
}

Result<std::optional<int64_t>> RenewalService::EndOpenRenewal(store::Tx& tx, std::string_view host_id,
                                                              std::string_view why, std::optional<int64_t> revoke_at,
                                                              int64_t now) {
  CF_ASSIGN_OR_RETURN(auto open, store::OpenRenewalOf(tx, host_id));
  if (!open) return std::optional<int64_t>();
  if (open->serial && revoke_at)
    CF_RETURN_IF_ERROR(issuance::RevokeSupersededAfter(tx, *open->serial, *revoke_at, now));
  open->state = store::RenewalState::kFailed;
  open->error = std::string(why);
  open->finished_at = now;
  AppendHistory(*open, now, {{"error", why}});
  CF_RETURN_IF_ERROR(store::UpdateRenewal(tx, *open));
  return std::optional<int64_t>(open->id);
}

Result<void> RenewalService::RevokeLater(store::Tx& tx, const std::string& serial, int64_t now) {
  CF_RETURN_IF_ERROR(issuance::RevokeSupersededAfter(tx, serial, now + Millis(options_.grace), now));
  return Ok();
}

Result<std::optional<RenewalTask>> RenewalService::TaskFor(std::string_view host_id) {
  return store::Read(store_, [&](store::Tx& tx) -> Result<std::optional<RenewalTask>> {
    CF_ASSIGN_OR_RETURN(auto open, store::OpenRenewalOf(tx, host_id));
    if (!open || open->state != store::RenewalState::kAwaitingCsr) return std::optional<RenewalTask>();
    CF_ASSIGN_OR_RETURN(auto host, store::FindHost(tx, host_id));
    if (!host) return NoSuchHost(host_id);
    return std::optional<RenewalTask>(
        RenewalTask{open->id, open->attempt, open->due_at, host->host_id, hosts_.SettingsOf(*host)});
  });
}

void RenewalService::WaitForTask(const std::string& host_id, int64_t wait_ms, std::function<void(bool)> ready) {
  std::lock_guard lock(mu_);
  if (stopping_) {
    ready(false);
    return;
  }
  waiters_.emplace(host_id, Waiter{clock_.NowMillis() + wait_ms, std::move(ready)});
}

Result<Enrolled> RenewalService::SubmitCsr(const store::HostRecord& host, int64_t renewal_id,
                                           const std::string& csr_pem) {
  CF_ASSIGN_OR_RETURN(store::RenewalRecord r, Get(renewal_id));
  if (r.host_id != host.host_id) return MakeError(ErrorCode::kNotFound, fmt::format("no renewal {}", renewal_id));
  // The same CSR again after its answer was lost: the certificate of this attempt, once.
  if (r.state == store::RenewalState::kIssued && r.serial) return agents_.IssuedBefore(host, *r.serial, csr_pem);
  if (r.state != store::RenewalState::kAwaitingCsr) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     fmt::format("renewal {} is {}, not awaiting a CSR", renewal_id, store::RenewalStateName(r.state)));
  }
  const int attempt = r.attempt;
  return agents_.Issue(host, csr_pem, /*renewing=*/true, "renewal.issue",
                       [&](store::Tx& tx, const store::CertificateRecord& cert) -> Result<void> {
                         const int64_t now = clock_.NowMillis();
                         CF_ASSIGN_OR_RETURN(auto current, store::FindRenewal(tx, renewal_id));
                         if (!current || current->state != store::RenewalState::kAwaitingCsr ||
                             current->attempt != attempt || current->due_at < now) {
                           return MakeError(ErrorCode::kFailedPrecondition,
                                            fmt::format("renewal {} no longer awaits this CSR (deadline passed or "
                                                        "attempt over)",
                                                        renewal_id));
                         }
                         current->state = store::RenewalState::kIssued;
                         current->serial = cert.serial;
                         current->not_after = cert.not_after;
                         AppendHistory(*current, now, {{"serial", cert.serial}});
                         // Unless the pump timed the attempt out meanwhile (it takes no
                         // issuance's lock): then nothing is issued.
                         CF_ASSIGN_OR_RETURN(
                             bool updated,
                             store::UpdateRenewalFrom(tx, *current, store::RenewalState::kAwaitingCsr, attempt));
                         if (!updated) {
                           return MakeError(ErrorCode::kFailedPrecondition,
                                            fmt::format("renewal {} timed out as its CSR came", renewal_id));
                         }
                         return Ok();
                       });
}

Result<store::RenewalRecord> RenewalService::Report(const store::HostRecord& host, int64_t renewal_id,
                                                    store::RenewalState state, std::string_view step,
                                                    std::string_view error) {
  const bool failed = state == store::RenewalState::kFailed;
  if (state != store::RenewalState::kDeployed && state != store::RenewalState::kValidated && !failed) {
    return MakeError(ErrorCode::kInvalidArgument, "state must be deployed, validated or failed");
  }
  if (failed && std::find(std::begin(kSteps), std::end(kSteps), step) == std::end(kSteps)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "step must be one of key, csr, submit, write, verify, reload, swap, report");
  }
  const std::string actor = "host:" + host.host_id;
  bool finished = false;
  auto reported = store::Write(store_, [&](store::Tx& tx) -> Result<store::RenewalRecord> {
    finished = false;
    const int64_t now = clock_.NowMillis();
    CF_RETURN_IF_ERROR(HostService::Lock(tx, host.host_id));
    CF_ASSIGN_OR_RETURN(auto r, store::FindRenewal(tx, renewal_id));
    if (!r || r->host_id != host.host_id) {
      return MakeError(ErrorCode::kNotFound, fmt::format("no renewal {}", renewal_id));
    }
    if (r->state == state) return std::move(*r);  // a report sent again
    const bool issued = r->state == store::RenewalState::kIssued || r->state == store::RenewalState::kDeployed;
    if (failed) {
      if (!issued && r->state != store::RenewalState::kAwaitingCsr) {
        return MakeError(ErrorCode::kFailedPrecondition,
                         fmt::format("renewal {} is {}", renewal_id, store::RenewalStateName(r->state)));
      }
      CF_RETURN_IF_ERROR(FailAttempt(tx, *r, r->attempt, step, Truncated(error), actor, now));
      finished = true;
      return std::move(*r);
    }
    if (!issued || (state == store::RenewalState::kDeployed && r->state != store::RenewalState::kIssued)) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       fmt::format("renewal {} is {}: it cannot become {}", renewal_id,
                                   store::RenewalStateName(r->state), store::RenewalStateName(state)));
    }
    if (state == store::RenewalState::kDeployed) {
      r->state = state;
      AppendHistory(*r, now, {});
      CF_RETURN_IF_ERROR(store::UpdateRenewal(tx, *r));
      return std::move(*r);
    }
    CF_ASSIGN_OR_RETURN(auto h, store::FindHost(tx, host.host_id));
    if (!h) return NoSuchHost(host.host_id);
    CF_RETURN_IF_ERROR(Validate(tx, *h, *r, now));
    finished = true;
    return std::move(*r);
  });
  if (reported.ok() && finished) Wake();
  return reported;
}

Result<std::optional<std::string>> RenewalService::TakeCertificate(store::Tx& tx, store::HostRecord& h,
                                                                   const std::string& serial, int64_t not_after,
                                                                   int64_t now) {
  std::optional<std::string> replaced;
  if (h.serial && *h.serial != serial) {
    replaced = h.serial;
    CF_RETURN_IF_ERROR(RevokeLater(tx, *replaced, now));
  }
  hosts_.SetCertificate(h, serial, not_after, now);
  CF_RETURN_IF_ERROR(store::UpdateHost(tx, h));
  return replaced;
}

Result<void> RenewalService::Validate(store::Tx& tx, store::HostRecord& h, store::RenewalRecord& r, int64_t now) {
  // A host revoked meanwhile keeps the certificate it was revoked with: the renewal's is
  // revoked with its end (RevokeHost).
  if (h.status == store::HostStatus::kRevoked) {
    return MakeError(ErrorCode::kFailedPrecondition, fmt::format("host {} is revoked", h.host_id));
  }
  // The host's certificate is the new one from now on.
  r.state = store::RenewalState::kValidated;
  h.last_run = r.id;
  CF_ASSIGN_OR_RETURN(auto replaced, TakeCertificate(tx, h, *r.serial, *r.not_after, now));
  if (replaced) r.old_serial = std::move(replaced);
  r.finished_at = now;
  AppendHistory(r, now, {});
  CF_RETURN_IF_ERROR(store::UpdateRenewal(tx, r));
  return store::AppendAudit(
      tx, now, "host:" + h.host_id, "renewal.validate", "host:" + h.host_id,
      json::serialize(json::object{{"renewal_id", r.id},
                                   {"serial", *r.serial},
                                   {"old_serial", r.old_serial ? json::value(*r.old_serial) : nullptr}}));
}

Result<store::HostRecord> RenewalService::AuthenticateAgent(std::string_view serial, std::string_view fingerprint) {
  CF_ASSIGN_OR_RETURN(store::HostRecord host, agents_.Authenticate(serial, fingerprint));
  if (!host.serial || *host.serial == serial) return host;
  enum class Seen { kNothing, kValidated, kAdopted };
  Seen seen = Seen::kNothing;
  std::optional<std::string> replaced;
  auto taken = store::Write(store_, [&](store::Tx& tx) -> Result<store::HostRecord> {
    seen = Seen::kNothing;
    const int64_t now = clock_.NowMillis();
    CF_RETURN_IF_ERROR(HostService::Lock(tx, host.host_id));
    CF_ASSIGN_OR_RETURN(auto h, store::FindHost(tx, host.host_id));
    if (!h) return NoSuchHost(host.host_id);
    // Only a host at work takes a certificate this way: not one revoked, nor one reactivated
    // (enrolling again, with a token).
    if (!h->serial || *h->serial == serial ||
        (h->status != store::HostStatus::kActive && h->status != store::HostStatus::kFailed)) {
      return std::move(*h);
    }
    CF_ASSIGN_OR_RETURN(auto presented, store::FindCertificate(tx, serial));
    CF_ASSIGN_OR_RETURN(auto current, store::FindCertificate(tx, *h->serial));
    // An older certificate of the host (still active until its revocation): it authenticates
    // and changes nothing.
    if (!presented || presented->status != store::CertStatus::kActive ||
        (current && presented->created_at <= current->created_at)) {
      return std::move(*h);
    }
    // A newer one is in use: the agent switches to a renewal's certificate only once it has
    // swapped it in, reloaded and kept it, which is what `validated` reports.
    CF_ASSIGN_OR_RETURN(auto open, store::OpenRenewalOf(tx, h->host_id));
    if (open && open->serial == presented->serial &&
        (open->state == store::RenewalState::kIssued || open->state == store::RenewalState::kDeployed)) {
      CF_RETURN_IF_ERROR(Validate(tx, *h, *open, now));
      seen = Seen::kValidated;
      return std::move(*h);
    }
    // The certificate of an attempt that ended without the agent's report (lost, or after the
    // deadline), waiting for its revocation: the host keeps it instead. Not once that
    // revocation runs (or ran), nor one an operator ordered.
    CF_ASSIGN_OR_RETURN(bool kept, issuance::KeepSuperseded(tx, presented->serial));
    if (!kept) return std::move(*h);
    replaced = h->serial;
    const json::object details{{"serial", presented->serial},
                               {"old_serial", *replaced},
                               {"open_renewal", open ? json::value(open->id) : nullptr}};
    if (open && !open->serial && IssuedIn(*open, presented->serial)) {
      // Its renewal, retried since: done, with this certificate.
      open->serial = presented->serial;
      open->not_after = presented->not_after;
      CF_RETURN_IF_ERROR(Validate(tx, *h, *open, now));
    } else {
      CF_RETURN_IF_ERROR(TakeCertificate(tx, *h, presented->serial, presented->not_after, now));
    }
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, "host:" + h->host_id, "renewal.adopt", "host:" + h->host_id,
                                          json::serialize(details)));
    seen = Seen::kAdopted;
    return std::move(*h);
  });
  if (!taken.ok()) {
    // The agent is who it says; what its certificate tells is looked at again next time.
    log::Warn("recording the certificate an agent uses", {{"host_id", host.host_id}, {"error", taken.error().message}});
    return host;
  }
  if (seen == Seen::kAdopted) {
    log::Warn("an agent uses the certificate of a renewal attempt that ended without its report: it is now the host's",
              {{"host_id", host.host_id}, {"serial", std::string(serial)}, {"old_serial", replaced.value_or("")}});
  }
  if (seen != Seen::kNothing) Wake();
  return taken;
}

Result<store::RenewalRecord> RenewalService::Get(int64_t renewal_id) {
  CF_ASSIGN_OR_RETURN(auto r, store::Read(store_, [&](store::Tx& tx) { return store::FindRenewal(tx, renewal_id); }));
  if (!r) return MakeError(ErrorCode::kNotFound, fmt::format("no renewal {}", renewal_id));
  return std::move(*r);
}

Result<std::vector<store::RenewalRecord>> RenewalService::List(const store::RenewalFilter& filter) {
  return store::Read(store_, [&](store::Tx& tx) { return store::ListRenewals(tx, filter); });
}

Result<std::vector<store::RenewalRunSummary>> RenewalService::Runs(std::optional<int64_t> before_id, int limit) {
  return store::Read(store_, [&](store::Tx& tx) { return store::ListRenewalRuns(tx, before_id, limit); });
}

Result<void> RenewalService::NotifyFailure(int64_t renewal_id) {
  if (mailer_ == nullptr || options_.notify.empty()) return Ok();
  CF_ASSIGN_OR_RETURN(store::RenewalRecord r, Get(renewal_id));
  mail::Message m;
  m.from = options_.sender;
  m.to = options_.notify;
  m.subject = fmt::format("certfleet: renewal of {} failed at step {}", r.host_id, r.failed_step.value_or("?"));
  m.text = fmt::format(
      "The certificate of host {} was not renewed.\n\n"
      "Failed step: {}\nError: {}\nAttempts: {} of {}\nRenewal: {} (run {})\n\n"
      "The host keeps its current certificate. See GET /v1/renewals/{} for the history, and\n"
      "POST /v1/renewals/run {{\"hosts\": [\"{}\"]}} to try again.\n",
      r.host_id, r.failed_step.value_or("?"), r.error.value_or("?"), r.attempt, r.max_attempts, r.id, r.run_id, r.id,
      r.host_id);
  CF_ASSIGN_OR_RETURN(mail::Sent sent, mailer_->Send(m));
  log::Info("renewal failure notified",
            {{"renewal_id", r.id}, {"host_id", r.host_id}, {"message_id", sent.message_id}});
  return Ok();
}

Result<int> RenewalService::EndRuns() {
  constexpr int kRunsPerCall = 100;
  CF_ASSIGN_OR_RETURN(auto ended,
                      store::Read(store_, [](store::Tx& tx) { return store::EndedRuns(tx, kRunsPerCall); }));
  int count = 0;
  for (int64_t run_id : ended) {
    const int64_t now = clock_.NowMillis();
    std::optional<Digest> digest;
    CF_RETURN_IF_ERROR(store::Write(store_, [&](store::Tx& tx) -> Result<void> {
      digest.reset();
      CF_ASSIGN_OR_RETURN(bool mine, store::EndRun(tx, run_id, now));
      if (!mine) return Ok();  // another node ended it
      CF_ASSIGN_OR_RETURN(digest, DigestOf(tx, run_id, now));
      if (digest->run.total == 0) return Ok();  // nothing was due: nothing to tell
      CF_RETURN_IF_ERROR(store::AppendEvent(tx, now, "renewal/run-finished", json::serialize(DigestJson(*digest))));
      if (options_.notify_mode == NotifyMode::kEach) return Ok();
      store::NewJob job;
      job.kind = std::string(kDigestJob);
      job.payload = json::serialize(json::object{{"run_id", run_id}});
      job.run_at = now;
      job.dedupe_key = fmt::format("renewal-digest:{}", run_id);
      CF_RETURN_IF_ERROR(store::EnqueueJob(tx, job, now));
      return Ok();
    }));
    if (!digest || digest->run.total == 0) continue;
    ++count;
    const double seconds = static_cast<double>(digest->ended_at - digest->run.created_at) / 1000.0;
    {
      std::lock_guard lock(durations_mu_);
      for (size_t i = 0; i < RunDurations::kBuckets.size(); ++i) {
        if (seconds <= RunDurations::kBuckets[i]) ++durations_.counts[i];
      }
      ++durations_.count;
      durations_.sum += seconds;
    }
    log::Info("renewal run ended", {{"run_id", run_id},
                                    {"renewed", static_cast<int64_t>(digest->renewed.size())},
                                    {"failed", static_cast<int64_t>(digest->failed.size())},
                                    {"waiting", digest->waiting},
                                    {"seconds", seconds}});
  }
  return count;
}

Result<void> RenewalService::MailDigest(int64_t run_id) {
  if (mailer_ == nullptr || options_.notify.empty()) return Ok();
  const int64_t now = clock_.NowMillis();
  CF_ASSIGN_OR_RETURN(Digest d, store::Read(store_, [&](store::Tx& tx) { return DigestOf(tx, run_id, now); }));
  mail::Message m;
  m.from = options_.sender;
  m.to = options_.notify;
  m.subject = fmt::format("certfleet: renewal run {} ended: {} renewed, {} failed, {} waiting", d.run.id,
                          d.renewed.size(), d.failed.size(), d.waiting);
  std::string text = fmt::format(
      "Renewal run {} ({}, started {}) ended {}: {} of {} hosts renewed, {} failed.\n"
      "Hosts whose renewal date has passed and are still waiting: {}.\n",
      d.run.id, d.run.trigger, FormatRfc3339(d.run.created_at), FormatRfc3339(d.ended_at), d.renewed.size(),
      d.run.total, d.failed.size(), d.waiting);
  if (!d.failed.empty()) {
    text += fmt::format("\nFailed ({}), each keeping its current certificate:\n", d.failed.size());
    for (size_t i = 0; i < d.failed.size() && i < kMaxDigestListed; ++i) {
      const auto& r = d.failed[i];
      text += fmt::format("  {}  step {}: {}\n", r.host_id, r.failed_step.value_or("?"), r.error.value_or("?"));
    }
    if (d.failed.size() > kMaxDigestListed) {
      text += fmt::format("  ... and {} more: GET /v1/renewals?run={}&state=failed\n",
                          d.failed.size() - kMaxDigestListed, d.run.id);
    }
    text += "POST /v1/renewals/run {\"hosts\": [...]} tries them again.\n";
  }
  if (!d.renewed.empty()) {
    text += fmt::format("\nRenewed ({}):\n", d.renewed.size());
    for (size_t i = 0; i < d.renewed.size() && i < kMaxDigestListed; ++i) text += "  " + d.renewed[i] + "\n";
    if (d.renewed.size() > kMaxDigestListed) {
      text +=
          fmt::format("  ... and {} more: GET /v1/renewals?run={}\n", d.renewed.size() - kMaxDigestListed, d.run.id);
    }
  }
  m.text = std::move(text);
  CF_ASSIGN_OR_RETURN(mail::Sent sent, mailer_->Send(m));
  log::Info("renewal digest mailed", {{"run_id", d.run.id}, {"message_id", sent.message_id}});
  return Ok();
}

Result<RenewalService::Figures> RenewalService::CurrentFigures() {
  constexpr int64_t kDayMs = int64_t{24} * 3600 * 1000;
  const int64_t now = clock_.NowMillis();
  return store::Read(store_, [&](store::Tx& tx) -> Result<Figures> {
    Figures f;
    CF_ASSIGN_OR_RETURN(f.renewals, store::CountRenewalsByState(tx));
    CF_ASSIGN_OR_RETURN(f.hosts, store::CountHostsByStatus(tx));
    CF_ASSIGN_OR_RETURN(auto expiring, store::CountHostsExpiringBy(tx, {now + 7 * kDayMs, now + 30 * kDayMs}));
    f.expiring_7d = expiring.at(0);
    f.expiring_30d = expiring.at(1);
    return f;
  });
}

RenewalService::RunDurations RenewalService::EndedRunDurations() const {
  std::lock_guard lock(durations_mu_);
  return durations_;
}

void RenewalService::Start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void RenewalService::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  AnswerWaiters({}, false);
}

void RenewalService::Wake() {
  {
    std::lock_guard lock(mu_);
    woken_ = true;
  }
  cv_.notify_all();
}

Result<void> RenewalService::TrustAgentsThrough(TrustSink apply) {
  {
    std::lock_guard lock(trust_mu_);
    trust_sink_ = std::move(apply);
    trusted_.clear();
  }
  return RefreshTrust();
}

Result<void> RenewalService::SetCa(std::string_view fqdn, std::string_view actor) {
  CF_RETURN_IF_ERROR(agents_.SetRenewalCa(fqdn, actor));
  return RefreshTrust();
}

Result<void> RenewalService::RefreshTrust() {
  std::lock_guard lock(trust_mu_);
  if (!trust_sink_) return Ok();
  CF_ASSIGN_OR_RETURN(std::string bundle, agents_.TrustBundle());
  if (bundle == trusted_) return Ok();
  CF_RETURN_IF_ERROR(trust_sink_(bundle));
  trusted_ = std::move(bundle);
  int64_t certificates = 0;
  for (size_t at = 0; (at = trusted_.find("-----BEGIN CERTIFICATE", at)) != std::string::npos; ++at) ++certificates;
  log::Info("agents' CAs trusted", {{"certificates", certificates}});
  return Ok();
}

void RenewalService::Loop() {
  NameThisThread("cf-renewal");
  TimePoint next_tick = clock_.Now();
  TimePoint next_trust = clock_.Now() + kTrustRefresh;
  for (;;) {
    bool tick = false;
    {
      std::unique_lock lock(mu_);
      clock_.WaitUntil(cv_, lock, next_tick, [&] { return woken_ || stopping_; });
      if (stopping_) return;
      woken_ = false;
      if (clock_.Now() >= next_tick) {
        tick = true;
        next_tick = clock_.Now() + options_.tick;
      }
    }
    if (tick && clock_.Now() >= next_trust) {
      next_trust = clock_.Now() + kTrustRefresh;
      if (auto refreshed = RefreshTrust(); !refreshed.ok()) {
        log::Error("refreshing the agents' CAs failed", {{"error", refreshed.error().message}});
      }
    }
    auto started = PumpStarted();
    if (!started.ok()) log::Error("renewal pump failed", {{"error", started.error().message}});
    if (tick) {
      if (auto ended = EndRuns(); !ended.ok())
        log::Error("ending renewal runs failed", {{"error", ended.error().message}});
    }
    // On a tick, also the tasks other nodes started for the agents waiting here.
    AnswerWaiters(started.ok() ? std::move(*started) : std::vector<std::string>{}, tick);
  }
}

void RenewalService::AnswerWaiters(std::vector<std::string> ready_hosts, bool check_store) {
  if (check_store) {
    std::vector<std::string> waiting;
    {
      std::lock_guard lock(mu_);
      for (auto it = waiters_.begin(); it != waiters_.end(); it = waiters_.upper_bound(it->first)) {
        waiting.push_back(it->first);
      }
    }
    for (size_t i = 0; i < waiting.size(); i += kWaiterChunk) {
      std::vector<std::string> chunk(
          waiting.begin() + static_cast<std::ptrdiff_t>(i),
          waiting.begin() + static_cast<std::ptrdiff_t>(std::min(i + kWaiterChunk, waiting.size())));
      auto with_tasks = store::Read(store_, [&](store::Tx& tx) { return store::HostsWithTasks(tx, chunk); });
      if (!with_tasks.ok()) {
        log::Error("checking tasks of waiting agents", {{"error", with_tasks.error().message}});
        break;
      }
      for (auto& [host, id] : *with_tasks) ready_hosts.push_back(host);
    }
  }
  std::vector<std::pair<std::function<void(bool)>, bool>> answers;
  {
    std::lock_guard lock(mu_);
    for (const auto& host : ready_hosts) {
      auto [first, last] = waiters_.equal_range(host);
      for (auto it = first; it != last; ++it) answers.emplace_back(std::move(it->second.ready), true);
      waiters_.erase(first, last);
    }
    const int64_t now = clock_.NowMillis();
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (stopping_ || it->second.until <= now) {
        answers.emplace_back(std::move(it->second.ready), false);
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& [ready, has_task] : answers) ready(has_task);
}

}  // namespace certfleet::renewal
