#pragma once

#include <span>
#include <string>

#include "core/config.h"
#include "core/result.h"
#include "distribution/distribution_service.h"
#include "distribution/sns.h"
#include "jobs/scheduler.h"
#include "jobs/worker_pool.h"

namespace certfleet::distribution {

// The configuration keys of W5 (distribution.*): written once, here.
std::span<const ConfigKey> ConfigKeys();

// The distribution's options from the distribution.* keys; ZIP passwords are kept with a
// key derived from `master_key`.
DistributionService::Options DistributionOptions(const Config& config, const std::string& master_key);
// How SNS messages to POST /v1/distribution/events are checked (distribution.sns_*).
SnsVerifier::Options SnsOptions(const Config& config);
// Scan the inbound store, mail what is pending, and both on demand.
Result<void> RegisterJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler, DistributionService& dist,
                          const Config& config);

}  // namespace certfleet::distribution
