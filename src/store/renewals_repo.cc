#include "store/renewals_repo.h"

#include <fmt/format.h>

#include <map>

#include "store/hosts_repo.h"

namespace certfleet::store {
namespace {

constexpr std::string_view kColumns =
    "id, run_id, host_id, state, attempt, max_attempts, due_at, serial, old_serial, not_after, failed_step, "
    "error, history, created_at, updated_at, finished_at";

// The states of a renewal at work, as an SQL list.
constexpr std::string_view kActiveStates = "('awaiting_csr', 'issued', 'deployed')";

Result<RenewalRecord> FromRow(const Row& r) {
  RenewalRecord x;
  x.id = r.Int(0);
  x.run_id = r.Int(1);
  x.host_id = r.Text(2);
  CF_ASSIGN_OR_RETURN(x.state, r.Enum<RenewalState>(3, "renewals.state", kRenewalStateNames));
  x.attempt = static_cast<int>(r.Int(4));
  x.max_attempts = static_cast<int>(r.Int(5));
  x.due_at = r.Int(6);
  x.serial = r.OptText(7);
  x.old_serial = r.OptText(8);
  x.not_after = r.OptInt(9);
  x.failed_step = r.OptText(10);
  x.error = r.OptText(11);
  x.history = r.Text(12);
  x.created_at = r.Int(13);
  x.updated_at = r.Int(14);
  x.finished_at = r.OptInt(15);
  return x;
}

Result<std::vector<RenewalRecord>> Renewals(Tx& tx, const std::string& where, const Params& params) {
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT " + std::string(kColumns) + " FROM renewals " + where, params));
  std::vector<RenewalRecord> out;
  out.reserve(rows.size());
  for (const auto& r : rows) {
    CF_ASSIGN_OR_RETURN(RenewalRecord x, FromRow(r));
    out.push_back(std::move(x));
  }
  return out;
}

Result<std::optional<RenewalRecord>> First(Result<std::vector<RenewalRecord>> found) {
  if (!found.ok()) return found.error();
  if (found->empty()) return std::optional<RenewalRecord>();
  return std::optional<RenewalRecord>(std::move(found->front()));
}

constexpr std::string_view kUpdateRenewal =
    "UPDATE renewals SET state = ?, attempt = ?, max_attempts = ?, due_at = ?, serial = ?, "
    "old_serial = ?, not_after = ?, failed_step = ?, error = ?, history = ?, updated_at = ?, "
    "finished_at = ? WHERE id = ?";

Params RenewalParams(const RenewalRecord& r) {
  return {std::string(RenewalStateName(r.state)),
          int64_t{r.attempt},
          int64_t{r.max_attempts},
          r.due_at,
          OptionalValue(r.serial),
          OptionalValue(r.old_serial),
          OptionalValue(r.not_after),
          OptionalValue(r.failed_step),
          OptionalValue(r.error),
          r.history,
          r.updated_at,
          OptionalValue(r.finished_at),
          r.id};
}
}  // namespace

Result<int64_t> InsertRenewalRun(Tx& tx, const RenewalRunRecord& run) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("INSERT INTO renewal_runs (trigger, actor, total, created_at) VALUES (?, "
                                            "?, ?, ?) RETURNING id",
                                            {run.trigger, run.actor, run.total, run.created_at}));
  return row->Int(0);
}

Result<void> SetRenewalRunTotal(Tx& tx, int64_t run_id, int64_t total) {
  CF_RETURN_IF_ERROR(tx.Exec("UPDATE renewal_runs SET total = ? WHERE id = ?", {total, run_id}));
  return Ok();
}

Result<int64_t> QueueRenewals(Tx& tx, int64_t run_id, const RenewalSelection& selection, int max_attempts,
                              std::string_view history, int64_t now) {
  Params params{run_id,
                int64_t{max_attempts},
                now,
                std::string(history),
                now,
                now,
                std::string(HostStatusName(HostStatus::kRevoked))};
  std::string where = "status <> ?";
  if (!selection.host_ids.empty()) {
    where += " AND " + InValues(tx, "host_id", selection.host_ids, params);
  } else if (!selection.all) {
    where += " AND renew_at <= ?";
    params.emplace_back(selection.due_by);
  }
  // The open-renewal index turns a host that has one into a conflict: skipped.
  return tx.Exec(fmt::format("INSERT INTO renewals (run_id, host_id, state, attempt, max_attempts, due_at, history, "
                             "created_at, updated_at) SELECT ?, host_id, 'queued', 0, ?, ?, ?, ?, ? FROM hosts WHERE "
                             "{} ON CONFLICT DO NOTHING",
                             where),
                 params);
}

Result<std::optional<RenewalRecord>> FindRenewal(Tx& tx, int64_t id) {
  return First(Renewals(tx, "WHERE id = ?", {id}));
}

Result<std::optional<RenewalRecord>> OpenRenewalOf(Tx& tx, std::string_view host_id) {
  return First(Renewals(tx, "WHERE host_id = ? AND state NOT IN ('validated', 'failed')", {std::string(host_id)}));
}

Result<void> UpdateRenewal(Tx& tx, const RenewalRecord& r) { return tx.ExecDeferred(kUpdateRenewal, RenewalParams(r)); }

Result<bool> UpdateRenewalFrom(Tx& tx, const RenewalRecord& r, RenewalState state, int attempt) {
  Params params = RenewalParams(r);
  params.emplace_back(std::string(RenewalStateName(state)));
  params.emplace_back(int64_t{attempt});
  CF_ASSIGN_OR_RETURN(int64_t n, tx.Exec(std::string(kUpdateRenewal) + " AND state = ? AND attempt = ?", params));
  return n == 1;
}

Result<int64_t> CountActiveRenewals(Tx& tx) {
  CF_ASSIGN_OR_RETURN(auto row,
                      tx.QueryOne(fmt::format("SELECT COUNT(*) FROM renewals WHERE state IN {}", kActiveStates)));
  return row->Int(0);
}

Result<std::vector<RenewalRecord>> StartableRenewals(Tx& tx, int64_t now, int limit) {
  return Renewals(tx, "WHERE state = 'queued' AND due_at <= ? ORDER BY due_at, id LIMIT ?", {now, int64_t{limit}});
}

Result<std::vector<RenewalRecord>> OverdueRenewals(Tx& tx, int64_t now, int limit) {
  return Renewals(tx, fmt::format("WHERE state IN {} AND due_at < ? ORDER BY due_at LIMIT ?", kActiveStates),
                  {now, int64_t{limit}});
}

Result<std::vector<std::pair<std::string, int64_t>>> HostsWithTasks(Tx& tx, const std::vector<std::string>& host_ids) {
  std::vector<std::pair<std::string, int64_t>> out;
  if (host_ids.empty()) return out;
  Params params;
  const std::string in = InValues(tx, "host_id", host_ids, params);
  CF_ASSIGN_OR_RETURN(
      Rows rows,
      tx.Query(fmt::format("SELECT host_id, id FROM renewals WHERE state = 'awaiting_csr' AND {}", in), params));
  out.reserve(rows.size());
  for (const auto& r : rows) out.emplace_back(r.Text(0), r.Int(1));
  return out;
}

Result<std::vector<RenewalRecord>> ListRenewals(Tx& tx, const RenewalFilter& filter) {
  std::string where = "WHERE id < ?";
  Params params{filter.before_id.value_or(INT64_MAX)};
  if (filter.state) {
    where += " AND state = ?";
    params.emplace_back(std::string(RenewalStateName(*filter.state)));
  }
  if (filter.run_id) {
    where += " AND run_id = ?";
    params.emplace_back(*filter.run_id);
  }
  if (filter.host_id) {
    where += " AND host_id = ?";
    params.emplace_back(*filter.host_id);
  }
  where += " ORDER BY id DESC LIMIT ?";
  params.emplace_back(int64_t{filter.limit});
  return Renewals(tx, where, params);
}

Result<std::vector<RenewalRunSummary>> ListRenewalRuns(Tx& tx, std::optional<int64_t> before_id, int limit) {
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT id, trigger, actor, total, created_at, finished_at FROM renewal_runs "
                                          "WHERE id < ? ORDER BY id DESC LIMIT ?",
                                          {before_id.value_or(INT64_MAX), int64_t{limit}}));
  std::vector<RenewalRunSummary> out;
  std::map<int64_t, size_t> index;
  for (const auto& r : rows) {
    RenewalRunSummary s;
    s.run = {r.Int(0), r.Text(1), r.Text(2), r.Int(3), r.Int(4), r.OptInt(5)};
    index[s.run.id] = out.size();
    out.push_back(std::move(s));
  }
  if (out.empty()) return out;
  // The page's runs are a range of ids: one pass over its renewals through the run index.
  CF_ASSIGN_OR_RETURN(Rows counts, tx.Query("SELECT run_id, state, COUNT(*) FROM renewals WHERE run_id >= ? AND "
                                            "run_id <= ? GROUP BY run_id, state ORDER BY run_id, state",
                                            {out.back().run.id, out.front().run.id}));
  for (const auto& c : counts) {
    if (auto it = index.find(c.Int(0)); it != index.end()) out[it->second].states.emplace_back(c.Text(1), c.Int(2));
  }
  return out;
}

Result<std::vector<int64_t>> EndedRuns(Tx& tx, int limit) {
  CF_ASSIGN_OR_RETURN(Rows rows,
                      tx.Query("SELECT r.id FROM renewal_runs r WHERE r.finished_at IS NULL AND NOT EXISTS (SELECT 1 "
                               "FROM renewals n WHERE n.run_id = r.id AND n.state NOT IN (?, ?)) ORDER BY r.id LIMIT ?",
                               {std::string(RenewalStateName(RenewalState::kValidated)),
                                std::string(RenewalStateName(RenewalState::kFailed)), int64_t{limit}}));
  std::vector<int64_t> out;
  for (const auto& r : rows) out.push_back(r.Int(0));
  return out;
}

Result<bool> EndRun(Tx& tx, int64_t run_id, int64_t now) {
  CF_ASSIGN_OR_RETURN(
      int64_t changed,
      tx.Exec("UPDATE renewal_runs SET finished_at = ? WHERE id = ? AND finished_at IS NULL", {now, run_id}));
  return changed > 0;
}

namespace {

// Rows of `table` by the enum `column` (table and column are this file's constants).
template <typename E, size_t N>
Result<std::map<E, int64_t>> CountBy(Tx& tx, std::string_view table, std::string_view column,
                                     const std::string_view (&names)[N]) {
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query(fmt::format("SELECT {1}, COUNT(*) FROM {0} GROUP BY {1}", table, column)));
  std::map<E, int64_t> out;
  const std::string what = fmt::format("{}.{}", table, column);
  for (const auto& r : rows) {
    CF_ASSIGN_OR_RETURN(E value, r.Enum<E>(0, what, names));
    out[value] = r.Int(1);
  }
  return out;
}

}  // namespace

Result<std::map<RenewalState, int64_t>> CountRenewalsByState(Tx& tx) {
  return CountBy<RenewalState>(tx, "renewals", "state", kRenewalStateNames);
}

Result<int64_t> CountDueHosts(Tx& tx, int64_t now) {
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT COUNT(*) FROM hosts WHERE renew_at <= ? AND status <> ?",
                                          {now, std::string(HostStatusName(HostStatus::kRevoked))}));
  return rows.at(0).Int(0);
}

Result<std::vector<int64_t>> CountHostsExpiringBy(Tx& tx, const std::vector<int64_t>& horizons) {
  std::vector<int64_t> out;
  for (int64_t horizon : horizons) {
    CF_ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT COUNT(*) FROM hosts WHERE not_after <= ? AND status <> ?",
                                            {horizon, std::string(HostStatusName(HostStatus::kRevoked))}));
    out.push_back(rows.at(0).Int(0));
  }
  return out;
}

Result<std::map<HostStatus, int64_t>> CountHostsByStatus(Tx& tx) {
  return CountBy<HostStatus>(tx, "hosts", "status", kHostStatusNames);
}

}  // namespace certfleet::store
