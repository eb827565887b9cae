#pragma once

#include <span>
#include <string_view>

#include "blob/blob_store.h"
#include "core/config.h"
#include "core/result.h"
#include "issuance/issuer.h"
#include "jobs/scheduler.h"
#include "jobs/worker_pool.h"

namespace certfleet::issuance {

// The configuration keys of issuance (ca.*): written once, here.
std::span<const ConfigKey> ConfigKeys();

// The issuer's options from the ca.* keys and public_url (`served_url` when it is empty).
Issuer::Options IssuerOptions(const Config& config, std::string_view served_url);
// CRL publication to `published` (a job per re-signed CRL) and the refresh of due CRLs.
Result<void> RegisterJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler, Issuer& issuer,
                          blob::BlobStore& published);

}  // namespace certfleet::issuance
