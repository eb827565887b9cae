#pragma once

#include <span>
#include <string_view>

#include "acme/acme_service.h"
#include "core/config.h"
#include "jobs/scheduler.h"
#include "jobs/worker_pool.h"

namespace certfleet::acme {

// The configuration keys of the ACME server (acme.*): written once, here.
std::span<const ConfigKey> ConfigKeys();

// The ACME server's options; `public_url` is the base clients reach certfleet at; nonces are
// MACed with a key derived from `master_key`.
AcmeService::Options AcmeOptions(const Config& config, std::string_view public_url, std::string_view master_key);

// The validation job (acme.validate), run by `pool`, which is woken as soon as one is queued,
// and the sweep (acme.sweep) that `scheduler` fires every acme.sweep_seconds.
Result<void> RegisterJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler, AcmeService& acme, const Config& config);

}  // namespace certfleet::acme
