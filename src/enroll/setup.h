#pragma once

#include <chrono>
#include <span>
#include <string_view>

#include "core/config.h"
#include "enroll/cmp.h"
#include "enroll/enroll_service.h"
#include "jobs/scheduler.h"
#include "jobs/worker_pool.h"

namespace certfleet::enroll {

// The configuration keys of EST and CMP enrollment (enroll.*): written once, here.
std::span<const ConfigKey> ConfigKeys();

// Secrets are sealed under `master_key`; replaced certificates are revoked after
// `supersede_grace`, as W2 provisioning's are.
EnrollService::Options EnrollOptions(const Config& config, std::string_view master_key,
                                     std::chrono::hours supersede_grace);

// The CMP server, signing with the certificate and key in these PEM files (the server's TLS
// identity); kFailedPrecondition if they do not read.
Result<std::unique_ptr<CmpServer>> MakeCmpServer(const Config& config, EnrollService& enroll, store::Store& store,
                                                 const Clock& clock, const std::string& certificate_file,
                                                 const std::string& key_file);

// The sweep (enroll.cmp_unconfirmed) that revokes CMP certificates whose certConf never came.
Result<void> RegisterJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler, EnrollService& enroll,
                          const Config& config);

}  // namespace certfleet::enroll
