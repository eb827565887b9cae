#pragma once

#include <span>

#include "core/config.h"
#include "core/result.h"
#include "jobs/scheduler.h"
#include "jobs/worker_pool.h"
#include "renewal/agent_service.h"
#include "renewal/host_service.h"
#include "renewal/renewal_service.h"

namespace certfleet::renewal {

// The configuration keys of W4 (renewal.*): written once, here.
std::span<const ConfigKey> ConfigKeys();

// The host service's options from the renewal.* keys, checked.
Result<HostService::Options> HostOptions(const Config& config);
// The agent protocol's: renewal.ca and renewal.validity_days.
AgentService::Options AgentOptions(const Config& config);
// The renewal workflow's options from the renewal.* keys (the config checked their ranges).
// kInvalidArgument for a renewal.notify_mode that is not one.
Result<RenewalService::Options> RenewalOptions(const Config& config);
// The scheduled runs (renewal.schedule), failure notifications and the revocation of
// replaced certificates.
Result<void> RegisterJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler, RenewalService& renewals,
                          const Config& config);

}  // namespace certfleet::renewal
