#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "store/store.h"

namespace certfleet::store {

// queued: waiting to run; running: leased by a worker; failed: an attempt failed and a
// retry is due at run_at; done: finished; dead: out of attempts, kept for inspection.
enum class JobState { kQueued, kRunning, kDone, kFailed, kDead };
std::string_view JobStateName(JobState s);
Result<JobState> ParseJobState(std::string_view name);

struct Job {
  int64_t id = 0;
  std::string kind;
  std::string payload;  // JSON
  JobState state = JobState::kQueued;
  int64_t run_at = 0;
  int attempts = 0;
  int max_attempts = 0;
  std::optional<std::string> lease_owner;
  std::optional<int64_t> lease_expires_at;
  std::optional<std::string> last_error;
  std::optional<std::string> dedupe_key;
  int64_t progress_done = 0;
  int64_t progress_total = 0;
  int64_t created_at = 0;
  int64_t updated_at = 0;
  std::optional<int64_t> finished_at;
};

struct NewJob {
  std::string kind;
  std::string payload = "{}";
  int64_t run_at = 0;
  int max_attempts = 5;
  // At most one job per key, ever: enqueueing a second one is a no-op (schedules use it).
  std::optional<std::string> dedupe_key;
};

// The new job's id, or nullopt if a job with the same dedupe key exists.
Result<std::optional<int64_t>> EnqueueJob(Tx& tx, const NewJob& job, int64_t now);
// Queues `job` already leased to `owner` for its first attempt (state running), for a worker of
// the node that queued it to run at once; nullopt if a job with the same dedupe key exists.
Result<std::optional<Job>> EnqueueLeasedJob(Tx& tx, const NewJob& job, std::string_view owner, int64_t now,
                                            int64_t lease_ms);
// Running jobs whose lease expired go back to failed (retry now) or, out of attempts, dead.
Result<int64_t> ReclaimExpiredLeases(Tx& tx, int64_t now);
// Leases the most overdue job of one of `kinds`; nullopt when none is due. On PostgreSQL
// concurrent callers skip each other's rows (FOR UPDATE SKIP LOCKED).
Result<std::optional<Job>> LeaseJob(Tx& tx, const std::vector<std::string>& kinds, std::string_view owner, int64_t now,
                                    int64_t lease_ms);
// Extends the leases `owner` still holds on `ids`.
Result<int64_t> ExtendLeases(Tx& tx, std::string_view owner, const std::vector<int64_t>& ids, int64_t until,
                             int64_t now);
// Marks the job done if `owner` still holds the lease of attempt `attempt`; false if it lost it.
Result<bool> CompleteJob(Tx& tx, int64_t id, std::string_view owner, int attempt, int64_t now);
// Records a failed attempt: retried at `retry_at`, or dead when out of attempts or `permanent`.
Result<bool> FailJob(Tx& tx, int64_t id, std::string_view owner, int attempt, std::string_view error, int64_t retry_at,
                     bool permanent, int64_t now);
Result<bool> SetJobProgress(Tx& tx, int64_t id, std::string_view owner, int64_t done, int64_t total, int64_t now);
// Deletes the job of `dedupe_key` unless it is running or done (queued, failed and waiting
// for a retry, or dead); false if there was none to delete.
Result<bool> CancelWaitingJob(Tx& tx, std::string_view dedupe_key);
// A dead job queued again with fresh attempts (as many as it had; they count on from its
// last); false if it is not dead.
Result<bool> RetryDeadJob(Tx& tx, int64_t id, int64_t now);

struct JobFilter {
  std::optional<JobState> state;
  std::optional<std::string> kind;
  std::optional<int64_t> before_id;  // cursor: jobs with a smaller id (newest first)
  int limit = 100;
};
Result<std::vector<Job>> ListJobs(Tx& tx, const JobFilter& filter);
Result<std::optional<Job>> GetJob(Tx& tx, int64_t id);

struct JobCount {
  std::string kind;
  JobState state;
  int64_t count;
};
Result<std::vector<JobCount>> CountJobs(Tx& tx);
// Deletes done jobs finished before `before`; returns how many.
Result<int64_t> DeleteFinishedJobs(Tx& tx, int64_t before);

// The stored state of a named schedule.
struct ScheduleState {
  std::string spec;
  int64_t next_run_at = 0;
  std::optional<int64_t> last_run_at;
};
Result<std::optional<ScheduleState>> GetSchedule(Tx& tx, std::string_view name);
Result<void> PutSchedule(Tx& tx, std::string_view name, const ScheduleState& state);

}  // namespace certfleet::store
