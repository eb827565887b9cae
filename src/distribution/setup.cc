#include "distribution/setup.h"

#include <fmt/format.h>

#include "core/log.h"

namespace certfleet::distribution {
namespace {

constexpr int64_t kMiB = int64_t{1024} * 1024;

constexpr ConfigKey kKeys[] = {
    {"distribution.inbound", ConfigType::kUrl, "file://{data_dir}/inbound",
     "W5 inbound store: file://PATH or s3://BUCKET?endpoint=http(s)://host:port&region=REGION."},
    {"distribution.prefix", ConfigType::kString, "Inbound/", "Where the warehouse folders are in the inbound store."},
    {"distribution.scan_seconds", ConfigType::kInt, "60", "How often the inbound store is scanned for changes.", 5,
     86400},
    {"distribution.send_minutes", ConfigType::kInt, "15", "How often pending files are mailed to the warehouses.", 1,
     10080},
    {"distribution.download_workers", ConfigType::kInt, "10", "Concurrent downloads from the inbound store.", 1, 64},
    {"distribution.zip_max_bytes", ConfigType::kInt, "8000000", "Largest ZIP attached to one mail.", 65536,
     1024 * kMiB},
    {"distribution.mail_max_bytes", ConfigType::kInt, "10000000",
     "Largest whole mail (headers, text and base64 attachment), e.g. SES's 10 MB.", 131072, 1024 * kMiB},
    {"distribution.max_attempts", ConfigType::kInt, "5",
     "Runs a FAILED_EMAIL record is retried in before it stays failed and the operators are told.", 1, 100},
    {"distribution.send_tries", ConfigType::kInt, "3",
     "Tries per mail within one run when the server is unavailable (and to record a mail sent while the database is "
     "not).",
     1, 10},
    {"distribution.send_backoff_ms", ConfigType::kInt, "1000", "Wait before the second try of a mail; doubles after.",
     0, 600000},
    {"distribution.sender", ConfigType::kString, "certfleet@localhost", "From address of distribution mails."},
    {"distribution.default_recipient", ConfigType::kString, "",
     "Recipient for warehouses without their own (PUT /v1/distribution/warehouses/{name})."},
    {"distribution.operators", ConfigType::kString, "",
     "Addresses (comma-separated) told when records fail for good; empty: nobody (the log and /metrics still show "
     "it)."},
    {"distribution.work_dir", ConfigType::kPath, "{data_dir}/tmp/distribution",
     "Folder the ZIPs are built in; each run's files are removed when it ends."},
    {"distribution.sns_topics", ConfigType::kString, "",
     "SNS topic ARNs (comma-separated) whose signed messages POST /v1/distribution/events takes without a token; "
     "empty: SNS messages are refused."},
    {"distribution.sns_trust", ConfigType::kPath, "",
     "PEM file of CAs SNS signing certificates (and their HTTPS downloads) must chain to; empty: the system's."},
    {"distribution.sns_connect_to", ConfigType::kString, "",
     "Where downloads from sns.<region>.amazonaws.com go instead, as host:port:connect-host:connect-port (a "
     "mirror); empty: there."},
};

}  // namespace

std::span<const ConfigKey> ConfigKeys() { return kKeys; }

SnsVerifier::Options SnsOptions(const Config& config) {
  SnsVerifier::Options o;
  o.topics = SplitList(config.Get("distribution.sns_topics"));
  o.trust_file = config.Get("distribution.sns_trust");
  o.connect_to = config.Get("distribution.sns_connect_to");
  return o;
}

DistributionService::Options DistributionOptions(const Config& config, const std::string& master_key) {
  DistributionService::Options o;
  o.prefix = config.Get("distribution.prefix");
  o.work_dir = config.Get("distribution.work_dir");
  o.sender = config.Get("distribution.sender");
  o.default_recipient = config.Get("distribution.default_recipient");
  o.operators = SplitList(config.Get("distribution.operators"));
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
  // A run asked for while another is in progress waits for it: retried every 15 s, then at
  // most every minute (DistributionService::kRunJobAttempts), longer than a large run lasts.
  // Any other failure ends it (the schedule's next send tries again).
  pool.Register(
      std::string(DistributionService::kRunJob),
      [&dist, send](jobs::JobContext& job) -> Result<void> {
        CF_RETURN_IF_ERROR(dist.Scan());
        return send(job);
      },
      jobs::HandlerOptions{.concurrency = 1,
                           .backoff_base = std::chrono::seconds(15),
                           .backoff_max = std::chrono::seconds(60),
                           .retried = [](const Error& e) { return e.code == ErrorCode::kFailedPrecondition; }});
  // One attempt each: the next firing is the retry.
  CF_RETURN_IF_ERROR(scheduler.Add("distribution-scan",
                                   fmt::format("@every {}s", config.GetInt("distribution.scan_seconds")),
                                   DistributionService::kScanJob, 1));
  return scheduler.Add("distribution-send", fmt::format("@every {}m", config.GetInt("distribution.send_minutes")),
                       DistributionService::kSendJob, 1);
}

}  // namespace certfleet::distribution
