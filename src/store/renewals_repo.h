#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/enum_names.h"
#include "core/result.h"
#include "store/hosts_repo.h"
#include "store/store.h"

namespace certfleet::store {

// States of a renewal (W4). queued: waiting for a slot (or for its retry's backoff);
// awaiting_csr: its task is offered to the host's agent; issued: the agent's CSR was signed;
// deployed: the agent wrote the new files beside the old ones; validated: the agent checked
// and swapped them in (the end); failed: out of attempts (the end).
enum class RenewalState { kQueued, kAwaitingCsr, kIssued, kDeployed, kValidated, kFailed };
inline constexpr std::string_view kRenewalStateNames[] = {"queued",   "awaiting_csr", "issued",
                                                          "deployed", "validated",    "failed"};
constexpr std::string_view RenewalStateName(RenewalState state) { return EnumName(state, kRenewalStateNames); }
constexpr bool IsFinal(RenewalState state) {
  return state == RenewalState::kValidated || state == RenewalState::kFailed;
}

// A run: the renewals one firing of the schedule, one request or one agent started.
struct RenewalRunRecord {
  int64_t id = 0;
  std::string trigger;  // schedule, manual, agent
  std::string actor;
  int64_t total = 0;  // renewals it started
  int64_t created_at = 0;
  std::optional<int64_t> finished_at;  // when it ended and its digest was queued
};

// The renewal of one host's certificate: a durable job whose state its agent advances.
struct RenewalRecord {
  int64_t id = 0;
  int64_t run_id = 0;
  std::string host_id;
  RenewalState state = RenewalState::kQueued;
  int attempt = 0;  // attempts started
  int max_attempts = 0;
  // queued: when it may start; awaiting_csr/issued/deployed: the deadline of the attempt.
  int64_t due_at = 0;
  std::optional<std::string> serial;      // issued in this attempt
  std::optional<std::string> old_serial;  // the host's certificate when it started
  std::optional<int64_t> not_after;       // of `serial`
  std::optional<std::string> failed_step;
  std::optional<std::string> error;
  std::string history = "[]";  // JSON array of {at, state, attempt, step?, error?}
  int64_t created_at = 0;
  int64_t updated_at = 0;
  std::optional<int64_t> finished_at;
};

Result<int64_t> InsertRenewalRun(Tx& tx, const RenewalRunRecord& run);
Result<void> SetRenewalRunTotal(Tx& tx, int64_t run_id, int64_t total);
// What a run renews: these hosts, every host, or the hosts due by `due_by` (renew_at index).
struct RenewalSelection {
  std::vector<std::string> host_ids;
  bool all = false;
  int64_t due_by = 0;
};
// Queues a renewal (`history` its first entry) for each selected host that is not revoked
// and has no renewal open; returns how many it queued.
Result<int64_t> QueueRenewals(Tx& tx, int64_t run_id, const RenewalSelection& selection, int max_attempts,
                              std::string_view history, int64_t now);

Result<std::optional<RenewalRecord>> FindRenewal(Tx& tx, int64_t id);
// The host's renewal that is not yet validated or failed.
Result<std::optional<RenewalRecord>> OpenRenewalOf(Tx& tx, std::string_view host_id);
// Writes every field but id, run_id, host_id and created_at.
Result<void> UpdateRenewal(Tx& tx, const RenewalRecord& r);
// The same if the renewal is still in `state` at `attempt` (as it was read); false if another
// transaction changed it since (on PostgreSQL the row's latest version is the one compared).
Result<bool> UpdateRenewalFrom(Tx& tx, const RenewalRecord& r, RenewalState state, int attempt);

// Renewals in states awaiting_csr, issued or deployed.
Result<int64_t> CountActiveRenewals(Tx& tx);
// Queued renewals whose due_at is at most `now`, oldest first.
Result<std::vector<RenewalRecord>> StartableRenewals(Tx& tx, int64_t now, int limit);
// Active renewals whose deadline passed.
Result<std::vector<RenewalRecord>> OverdueRenewals(Tx& tx, int64_t now, int limit);
// Of `host_ids`, those with a renewal awaiting its CSR: (host id, renewal id).
Result<std::vector<std::pair<std::string, int64_t>>> HostsWithTasks(Tx& tx, const std::vector<std::string>& host_ids);

struct RenewalFilter {
  std::optional<RenewalState> state;
  std::optional<int64_t> run_id;
  std::optional<std::string> host_id;
  std::optional<int64_t> before_id;  // cursor: renewals with a smaller id (newest first)
  int limit = 100;
};
Result<std::vector<RenewalRecord>> ListRenewals(Tx& tx, const RenewalFilter& filter);

// A run with how many of its renewals are in each state.
struct RenewalRunSummary {
  RenewalRunRecord run;
  std::vector<std::pair<std::string, int64_t>> states;
};
// Newest first; `before_id` a cursor as above.
Result<std::vector<RenewalRunSummary>> ListRenewalRuns(Tx& tx, std::optional<int64_t> before_id, int limit);

// Runs not marked ended whose renewals have all ended (validated or failed), oldest first.
Result<std::vector<int64_t>> EndedRuns(Tx& tx, int limit);
// Marks the run ended at `now`: false if it was before (another node did).
Result<bool> EndRun(Tx& tx, int64_t run_id, int64_t now);
// Renewals in each state, over every run.
Result<std::map<RenewalState, int64_t>> CountRenewalsByState(Tx& tx);
// Hosts not revoked whose renewal date is at most `now`: still waiting for a renewal.
Result<int64_t> CountDueHosts(Tx& tx, int64_t now);
// Hosts not revoked whose certificate expires by each of `horizons` (ms), in that order.
Result<std::vector<int64_t>> CountHostsExpiringBy(Tx& tx, const std::vector<int64_t>& horizons);
// Hosts in each status.
Result<std::map<HostStatus, int64_t>> CountHostsByStatus(Tx& tx);

}  // namespace certfleet::store
