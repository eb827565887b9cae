#pragma once

#include <span>
#include <string>

#include "blob/blob_store.h"
#include "bulk/import_service.h"
#include "core/config.h"
#include "core/result.h"
#include "jobs/scheduler.h"
#include "jobs/worker_pool.h"
#include "store/store.h"

namespace certfleet::bulk {

// The configuration keys of W3 (bulk.*): written once, here.
std::span<const ConfigKey> ConfigKeys();

// The import service's options from the bulk.* keys; Microchip signers from `verifier_dir`,
// or from bulk.verifier_dir when it is "".
Result<ImportService::Options> ImportOptions(const Config& config, const std::string& verifier_dir = "");
// Whether manifests wait for their import in `blobs` rather than in bulk.manifest_dir
// (bulk.manifest_store; left empty, `blobs` on PostgreSQL, where several nodes share the
// imports, and the folder on SQLite). kInvalidArgument for another value.
Result<bool> ManifestsInBlobs(const Config& config, store::Dialect dialect);
// Imports as jobs, and the scan of `inbound` every bulk.scan_seconds.
Result<void> RegisterJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler, ImportService& imports,
                          blob::BlobStore& inbound, const Config& config);

}  // namespace certfleet::bulk
