#include "store/jobs_repo.h"

#include <fmt/format.h>

namespace certfleet::store {
namespace {

constexpr std::string_view kColumns =
    "id, kind, payload, state, run_at, attempts, max_attempts, lease_owner, lease_expires_at, last_error, "
    "dedupe_key, progress_done, progress_total, created_at, updated_at, finished_at";

constexpr std::string_view kStateNames[] = {"queued", "running", "done", "failed", "dead"};

Job FromRow(const Row& r) {
  Job j;
  j.id = r.Int(0);
  j.kind = r.Text(1);
  j.payload = r.Text(2);
  j.state = ParseJobState(r.Text(3)).ok() ? *ParseJobState(r.Text(3)) : JobState::kDead;
  j.run_at = r.Int(4);
  j.attempts = static_cast<int>(r.Int(5));
  j.max_attempts = static_cast<int>(r.Int(6));
  j.lease_owner = r.OptText(7);
  j.lease_expires_at = r.OptInt(8);
  j.last_error = r.OptText(9);
  j.dedupe_key = r.OptText(10);
  j.progress_done = r.Int(11);
  j.progress_total = r.Int(12);
  j.created_at = r.Int(13);
  j.updated_at = r.Int(14);
  j.finished_at = r.OptInt(15);
  return j;
}

// Errors are kept for people to read; a runaway message must not bloat the table.
constexpr size_t kMaxErrorLength = 4000;

}  // namespace

std::string_view JobStateName(JobState s) { return kStateNames[static_cast<int>(s)]; }

Result<JobState> ParseJobState(std::string_view name) {
  for (int i = 0; i < 5; ++i) {
    if (kStateNames[i] == name) return static_cast<JobState>(i);
  }
  return MakeError(ErrorCode::kInvalidArgument, "state must be queued, running, done, failed or dead");
}

namespace {

struct Lease {
  std::string_view owner;
  int64_t expires_at = 0;
};

// Inserts `job`: queued, or with `lease` running its first attempt; nullopt if a job with the
// same dedupe key exists.
Result<std::optional<Job>> InsertJob(Tx& tx, const NewJob& job, int64_t now, const std::optional<Lease>& lease) {
  if (job.max_attempts < 1) return MakeError(ErrorCode::kInvalidArgument, "max_attempts must be at least 1");
  CF_ASSIGN_OR_RETURN(
      auto row,
      tx.QueryOne(fmt::format("INSERT INTO jobs (kind, payload, state, run_at, attempts, max_attempts, lease_owner, "
                              "lease_expires_at, dedupe_key, created_at, updated_at) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING "
                              "RETURNING {}",
                              kColumns),
                  {job.kind, job.payload, std::string(lease ? "running" : "queued"),
                   lease || job.run_at == 0 ? now : job.run_at, int64_t{lease ? 1 : 0}, int64_t{job.max_attempts},
                   lease ? Value(std::string(lease->owner)) : Value(nullptr),
                   lease ? Value(lease->expires_at) : Value(nullptr), OptionalValue(job.dedupe_key), now, now}));
  if (!row) return std::optional<Job>();
  return std::optional<Job>(FromRow(*row));
}

}  // namespace

Result<std::optional<int64_t>> EnqueueJob(Tx& tx, const NewJob& job, int64_t now) {
  CF_ASSIGN_OR_RETURN(std::optional<Job> inserted, InsertJob(tx, job, now, std::nullopt));
  if (!inserted) return std::optional<int64_t>();
  return std::optional<int64_t>(inserted->id);
}

Result<std::optional<Job>> EnqueueLeasedJob(Tx& tx, const NewJob& job, std::string_view owner, int64_t now,
                                            int64_t lease_ms) {
  return InsertJob(tx, job, now, Lease{owner, now + lease_ms});
}

Result<int64_t> ReclaimExpiredLeases(Tx& tx, int64_t now) {
  return tx.Exec(
      "UPDATE jobs SET state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'failed' END, "
      "last_error = 'lease expired: the worker stopped (crash, kill or lost connection) before finishing', "
      "lease_owner = NULL, lease_expires_at = NULL, run_at = ?, updated_at = ?, "
      "finished_at = CASE WHEN attempts >= max_attempts THEN CAST(? AS BIGINT) ELSE NULL END "
      "WHERE state = 'running' AND lease_expires_at < ?",
      {now, now, now, now});
}

Result<std::optional<Job>> LeaseJob(Tx& tx, const std::vector<std::string>& kinds, std::string_view owner, int64_t now,
                                    int64_t lease_ms) {
  if (kinds.empty()) return std::optional<Job>();
  std::string in = "?";
  for (size_t i = 1; i < kinds.size(); ++i) in += ", ?";
  std::string sql = fmt::format(
      "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = ?, lease_expires_at = ?, updated_at = "
      "? "
      "WHERE id = (SELECT id FROM jobs WHERE state IN ('queued', 'failed') AND run_at <= ? AND kind IN ({}) "
      "ORDER BY run_at, id LIMIT 1{}) RETURNING {}",
      in, tx.postgres() ? " FOR UPDATE SKIP LOCKED" : "", kColumns);
  Params params{std::string(owner), now + lease_ms, now, now};
  for (const auto& k : kinds) params.emplace_back(k);
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne(sql, params));
  if (!row) return std::optional<Job>();
  return std::optional<Job>(FromRow(*row));
}

Result<int64_t> ExtendLeases(Tx& tx, std::string_view owner, const std::vector<int64_t>& ids, int64_t until,
                             int64_t now) {
  int64_t n = 0;
  for (int64_t id : ids) {
    CF_ASSIGN_OR_RETURN(int64_t changed, tx.Exec("UPDATE jobs SET lease_expires_at = ?, updated_at = ? "
                                                 "WHERE id = ? AND state = 'running' AND lease_owner = ?",
                                                 {until, now, id, std::string(owner)}));
    n += changed;
  }
  return n;
}

Result<bool> CompleteJob(Tx& tx, int64_t id, std::string_view owner, int attempt, int64_t now) {
  CF_ASSIGN_OR_RETURN(
      int64_t n,
      tx.Exec("UPDATE jobs SET state = 'done', lease_owner = NULL, lease_expires_at = NULL, last_error = NULL, "
              "updated_at = ?, finished_at = ? WHERE id = ? AND state = 'running' AND lease_owner = ? AND attempts = ?",
              {now, now, id, std::string(owner), int64_t{attempt}}));
  return n == 1;
}

Result<bool> FailJob(Tx& tx, int64_t id, std::string_view owner, int attempt, std::string_view error, int64_t retry_at,
                     bool permanent, int64_t now) {
  std::string err(error.substr(0, kMaxErrorLength));
  CF_ASSIGN_OR_RETURN(
      int64_t n,
      tx.Exec(
          "UPDATE jobs SET state = CASE WHEN attempts >= max_attempts OR ? = 1 THEN 'dead' ELSE 'failed' END, "
          "finished_at = CASE WHEN attempts >= max_attempts OR ? = 1 THEN CAST(? AS BIGINT) ELSE NULL END, "
          "run_at = ?, last_error = ?, lease_owner = NULL, lease_expires_at = NULL, updated_at = ? "
          "WHERE id = ? AND state = 'running' AND lease_owner = ? AND attempts = ?",
          {int64_t{permanent}, int64_t{permanent}, now, retry_at, err, now, id, std::string(owner), int64_t{attempt}}));
  return n == 1;
}

Result<bool> SetJobProgress(Tx& tx, int64_t id, std::string_view owner, int64_t done, int64_t total, int64_t now) {
  CF_ASSIGN_OR_RETURN(int64_t n, tx.Exec("UPDATE jobs SET progress_done = ?, progress_total = ?, updated_at = ? "
                                         "WHERE id = ? AND state = 'running' AND lease_owner = ?",
                                         {done, total, now, id, std::string(owner)}));
  return n == 1;
}

Result<bool> RetryDeadJob(Tx& tx, int64_t id, int64_t now) {
  // The attempts go on counting: a run of the last attempt may still be working somewhere (its
  // lease ran out), and must not complete an attempt of the same number later.
  CF_ASSIGN_OR_RETURN(int64_t n,
                      tx.Exec("UPDATE jobs SET state = 'queued', max_attempts = max_attempts + attempts, "
                              "run_at = ?, updated_at = ?, finished_at = NULL WHERE id = ? AND state = 'dead'",
                              {now, now, id}));
  return n == 1;
}

Result<std::vector<Job>> ListJobs(Tx& tx, const JobFilter& filter) {
  std::string sql = fmt::format("SELECT {} FROM jobs WHERE id < ?", kColumns);
  Params params{filter.before_id.value_or(INT64_MAX)};
  if (filter.state) {
    sql += " AND state = ?";
    params.emplace_back(std::string(JobStateName(*filter.state)));
  }
  if (filter.kind) {
    sql += " AND kind = ?";
    params.emplace_back(*filter.kind);
  }
  sql += " ORDER BY id DESC LIMIT ?";
  params.emplace_back(int64_t{filter.limit});
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query(sql, params));
  std::vector<Job> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back(FromRow(r));
  return out;
}

Result<std::optional<Job>> GetJob(Tx& tx, int64_t id) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne(fmt::format("SELECT {} FROM jobs WHERE id = ?", kColumns), {id}));
  if (!row) return std::optional<Job>();
  return std::optional<Job>(FromRow(*row));
}

Result<std::vector<JobCount>> CountJobs(Tx& tx) {
  CF_ASSIGN_OR_RETURN(Rows rows,
                      tx.Query("SELECT kind, state, COUNT(*) FROM jobs GROUP BY kind, state ORDER BY kind, state"));
  std::vector<JobCount> out;
  for (const auto& r : rows) {
    auto state = ParseJobState(r.Text(1));
    if (state.ok()) out.push_back(JobCount{r.Text(0), *state, r.Int(2)});
  }
  return out;
}

Result<bool> CancelWaitingJob(Tx& tx, std::string_view dedupe_key) {
  CF_ASSIGN_OR_RETURN(int64_t n,
                      tx.Exec("DELETE FROM jobs WHERE dedupe_key = ? AND state IN ('queued', 'failed', 'dead')",
                              {std::string(dedupe_key)}));
  return n > 0;
}

Result<int64_t> DeleteFinishedJobs(Tx& tx, int64_t before) {
  return tx.Exec("DELETE FROM jobs WHERE state = 'done' AND finished_at < ?", {before});
}

Result<std::optional<ScheduleState>> GetSchedule(Tx& tx, std::string_view name) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT spec, next_run_at, last_run_at FROM schedules WHERE name = ?",
                                            {std::string(name)}));
  if (!row) return std::optional<ScheduleState>();
  return std::optional<ScheduleState>(ScheduleState{row->Text(0), row->Int(1), row->OptInt(2)});
}

Result<void> PutSchedule(Tx& tx, std::string_view name, const ScheduleState& state) {
  Value last = OptionalValue(state.last_run_at);
  CF_RETURN_IF_ERROR(
      tx.Exec("INSERT INTO schedules (name, spec, next_run_at, last_run_at) VALUES (?, ?, ?, ?) "
              "ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, next_run_at = excluded.next_run_at, "
              "last_run_at = excluded.last_run_at",
              {std::string(name), state.spec, state.next_run_at, last}));
  return Ok();
}

}  // namespace certfleet::store
