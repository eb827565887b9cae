#pragma once

#include <span>
#include <string>
#include <string_view>

#include "core/config.h"
#include "core/result.h"
#include "jobs/scheduler.h"
#include "jobs/worker_pool.h"
#include "provision/provision_service.h"

namespace certfleet::provision {

// The configuration keys of W2 (provision.*): written once, here.
std::span<const ConfigKey> ConfigKeys();

// Provisioning's options from the provision.* keys; retrieval URLs are signed with a key
// derived from `master_key` and point at `public_url`.
ProvisionService::Options ProvisionOptions(const Config& config, std::string_view public_url,
                                           const std::string& master_key);
// The revocation of superseded device certificates, every minute.
Result<void> RegisterJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler, ProvisionService& provision);

}  // namespace certfleet::provision
