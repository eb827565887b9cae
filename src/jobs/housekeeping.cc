#include "jobs/housekeeping.h"

#include "core/log.h"
#include "store/jobs_repo.h"

namespace certfleet::jobs {

Result<void> AddHousekeeping(WorkerPool& pool, Scheduler& scheduler, store::Store& store, const Clock& clock,
                             int retention_days) {
  pool.Register(std::string(kPruneJobsKind), [&store, &clock, retention_days](JobContext&) -> Result<void> {
    const int64_t before = clock.NowMillis() - int64_t{retention_days} * 86'400'000;
    int64_t deleted = 0;
    CF_RETURN_IF_ERROR(store.Transact([&](store::Tx& tx) -> Result<void> {
      CF_ASSIGN_OR_RETURN(deleted, store::DeleteFinishedJobs(tx, before));
      return Ok();
    }));
    log::Info("pruned finished jobs", {{"deleted", deleted}, {"retention_days", retention_days}});
    return Ok();
  });
  store::NewJob job;
  job.kind = std::string(kPruneJobsKind);
  job.max_attempts = 3;
  return scheduler.Add("jobs-prune", kPruneJobsSchedule, job);
}

}  // namespace certfleet::jobs
