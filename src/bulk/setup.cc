#include "bulk/setup.h"

#include <fmt/format.h>

namespace certfleet::bulk {
namespace {

constexpr ConfigKey kKeys[] = {
    {"bulk.manifest_store", ConfigType::kString, "",
     "W3: where manifests wait for their import: `blobs` (under manifests/, any node runs any import) or `folder` "
     "(bulk.manifest_dir); empty: blobs on PostgreSQL, folder on SQLite."},
    {"bulk.manifest_dir", ConfigType::kPath, "{data_dir}/imports",
     "W3: the folder where manifests wait for their import (deleted when it ends), or, with blobs, a run's scratch "
     "copy."},
    {"bulk.verifier_dir", ConfigType::kPath, "",
     "W3: folder of Microchip manifest signer certificates (.crt/.pem), beside those added while serving."},
    {"bulk.inbound", ConfigType::kUrl, "file://{data_dir}/inbound",
     "W3: store watched for manifests at imports/<supplier>/<profile>/<file>: file://PATH or s3://BUCKET?...."},
    {"bulk.scan_seconds", ConfigType::kInt, "60", "W3: how often bulk.inbound is looked at for new manifests.", 5,
     86400},
    {"bulk.batch_size", ConfigType::kInt, "2000",
     "W3: manifest entries written per transaction; an interrupted import resumes with the batches not committed.", 1,
     100000},
    {"bulk.writers", ConfigType::kInt, "2",
     "W3: batches an import writes at once, each in its own transaction (PostgreSQL works on each with a core).", 1,
     16},
};

}  // namespace

std::span<const ConfigKey> ConfigKeys() { return kKeys; }

Result<ImportService::Options> ImportOptions(const Config& config, const std::string& verifier_dir) {
  CF_ASSIGN_OR_RETURN(auto verifiers,
                      ReadVerifierDir(verifier_dir.empty() ? config.Get("bulk.verifier_dir") : verifier_dir));
  ImportService::Options options;
  options.manifest_dir = config.Get("bulk.manifest_dir");
  options.verifiers_pem = std::move(verifiers);
  options.batch_size = static_cast<size_t>(config.GetInt("bulk.batch_size"));
  options.writers = static_cast<size_t>(config.GetInt("bulk.writers"));
  return options;
}

Result<bool> ManifestsInBlobs(const Config& config, store::Dialect dialect) {
  const std::string& chosen = config.Get("bulk.manifest_store");
  if (chosen.empty()) return dialect == store::Dialect::kPostgres;
  if (chosen == "blobs" || chosen == "folder") return chosen == "blobs";
  return MakeError(ErrorCode::kInvalidArgument,
                   fmt::format("bulk.manifest_store '{}' is neither blobs nor folder", chosen));
}

Result<void> RegisterJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler, ImportService& imports,
                          blob::BlobStore& inbound, const Config& config) {
  pool.Register(std::string(ImportService::kJob), [&imports](jobs::JobContext& job) -> Result<void> {
    CF_ASSIGN_OR_RETURN(int64_t id, job.PayloadInt("import_id"));
    // The job shows the share of the manifest read; the import itself has the counts.
    constexpr int64_t kScale = 1000;
    return imports.RunAttempt(id, job.job().attempts, job.job().max_attempts,
                              [&job](const store::ImportRecord&, double fraction) {
                                job.Progress(static_cast<int64_t>(fraction * kScale), kScale);
                              });
  });
  pool.Register(std::string(ImportService::kScanJob), [&imports, &inbound](jobs::JobContext&) -> Result<void> {
    CF_RETURN_IF_ERROR(imports.FailOrphaned());
    CF_RETURN_IF_ERROR(imports.ScanInbound(inbound));
    return Ok();
  });
  // The next firing is the retry.
  return scheduler.Add("bulk-scan", fmt::format("@every {}s", config.GetInt("bulk.scan_seconds")),
                       ImportService::kScanJob, 1);
}

}  // namespace certfleet::bulk
