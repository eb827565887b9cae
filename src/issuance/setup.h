#pragma once

#include <span>
#include <string_view>

#include "blob/blob_store.h"
#include "core/config.h"
#include "core/result.h"
#include "issuance/issuer.h"
#include "jobs/scheduler.h"
#include "jobs/worker_pool.h"
#include "pki/key_backend.h"
#include "store/store.h"

namespace certfleet::issuance {

// The configuration keys of issuance (ca.*): written once, here.
std::span<const ConfigKey> ConfigKeys();

// The issuer's options from the ca.* keys and public_url (`served_url` when it is empty);
// kInvalidArgument for a ca.revocation_url that is not an http:// or https:// URL.
Result<Issuer::Options> IssuerOptions(const Config& config, std::string_view served_url);
// Every CA key backend: pki's (file, PKCS#11) and the database's (db), new keys going to
// ca.key_backend, or when it is empty to db on PostgreSQL and file on SQLite (one machine).
// kFailedPrecondition for a ca.key_backend that is none of them.
Result<std::unique_ptr<pki::KeyBackends>> OpenKeyBackends(const Config& config, const std::string& master_key,
                                                          store::Store& store, const Clock& clock);

// CRL publication to `published` (a job per re-signed CRL) and the refresh of due CRLs.
Result<void> RegisterJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler, Issuer& issuer,
                          blob::BlobStore& published);

}  // namespace certfleet::issuance
