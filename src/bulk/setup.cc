#include "bulk/setup.h"

#include <fmt/format.h>

namespace certfleet::bulk {

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

Result<void> RegisterJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler, ImportService& imports,
                          blob::BlobStore& inbound, const Config& config) {
  pool.Register(std::string(ImportService::kJob), [&imports](jobs::JobContext& job) -> Result<void> {
    CF_ASSIGN_OR_RETURN(int64_t id, job.PayloadInt("import_id"));
    // The job shows the share of the manifest read; the import itself has the counts.
    constexpr int64_t kScale = 1000;
    CF_RETURN_IF_ERROR(imports.Run(id, [&job](const store::ImportRecord&, double fraction) {
      job.Progress(static_cast<int64_t>(fraction * kScale), kScale);
    }));
    return Ok();
  });
  pool.Register(std::string(ImportService::kScanJob), [&imports, &inbound](jobs::JobContext&) -> Result<void> {
    CF_RETURN_IF_ERROR(imports.ScanInbound(inbound));
    return Ok();
  });
  // The next firing is the retry.
  return scheduler.Add("bulk-scan", fmt::format("@every {}s", config.GetInt("bulk.scan_seconds")),
                       ImportService::kScanJob, 1);
}

}  // namespace certfleet::bulk
