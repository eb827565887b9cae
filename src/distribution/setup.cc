#include "distribution/setup.h"

#include <fmt/format.h>

#include "core/log.h"

namespace certfleet::distribution {

DistributionService::Options DistributionOptions(const Config& config, const std::string& master_key) {
  DistributionService::Options o;
  o.prefix = config.Get("distribution.prefix");
  o.work_dir = config.Get("distribution.work_dir");
  o.sender = config.Get("distribution.sender");
  o.default_recipient = config.Get("distribution.default_recipient");
  o.operators = config.Get("distribution.operators");
  o.download_workers = static_cast<int>(config.GetInt("distribution.download_workers"));
  o.zip_max_bytes = static_cast<uint64_t>(config.GetInt("distribution.zip_max_bytes"));
  o.mail_max_bytes = static_cast<uint64_t>(config.GetInt("distribution.mail_max_bytes"));
  o.max_attempts = static_cast<int>(config.GetInt("distribution.max_attempts"));
  o.send_tries = static_cast<int>(config.GetInt("distribution.send_tries"));
  o.send_backoff = std::chrono::milliseconds(config.GetInt("distribution.send_backoff_ms"));
  o.master_key = master_key;
  return o;
}

Result<void> RegisterJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler, DistributionService& dist,
                          const Config& config) {
  auto send = [&dist](jobs::JobContext& job) -> Result<void> {
    CF_RETURN_IF_ERROR(dist.SendPending([&job](int64_t done, int64_t total) { job.Progress(done, total); }));
    return Ok();
  };
  pool.Register(std::string(DistributionService::kScanJob), [&dist](jobs::JobContext&) -> Result<void> {
    CF_RETURN_IF_ERROR(dist.Scan());
    return Ok();
  });
  // A scheduled send that finds a run in progress has nothing left to do: that run sends.
  pool.Register(std::string(DistributionService::kSendJob), [&dist](jobs::JobContext& job) -> Result<void> {
    auto sent = dist.SendPending([&job](int64_t done, int64_t total) { job.Progress(done, total); });
    if (!sent.ok() && sent.error().code == ErrorCode::kFailedPrecondition) {
      log::Info("distribution send skipped", {{"reason", sent.error().message}});
      return Ok();
    }
    return sent.ok() ? Ok() : Result<void>(sent.error());
  });
  pool.Register(std::string(DistributionService::kRunJob), [&dist, send](jobs::JobContext& job) -> Result<void> {
    CF_RETURN_IF_ERROR(dist.Scan());
    return send(job);
  });
  // One attempt each: the next firing is the retry.
  CF_RETURN_IF_ERROR(scheduler.Add("distribution-scan",
                                   fmt::format("@every {}s", config.GetInt("distribution.scan_seconds")),
                                   DistributionService::kScanJob, 1));
  return scheduler.Add("distribution-send", fmt::format("@every {}m", config.GetInt("distribution.send_minutes")),
                       DistributionService::kSendJob, 1);
}

}  // namespace certfleet::distribution
