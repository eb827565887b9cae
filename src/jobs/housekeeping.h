#pragma once

#include "core/clock.h"
#include "jobs/scheduler.h"
#include "jobs/worker_pool.h"
#include "store/store.h"

namespace certfleet::jobs {

// The job kind that deletes finished jobs past their retention.
inline constexpr std::string_view kPruneJobsKind = "jobs.prune";
// When it runs: daily at 04:00 UTC.
inline constexpr std::string_view kPruneJobsSchedule = "0 4 * * *";

// Registers the housekeeping handlers and their schedules.
Result<void> AddHousekeeping(WorkerPool& pool, Scheduler& scheduler, store::Store& store, const Clock& clock,
                             int retention_days);

}  // namespace certfleet::jobs
