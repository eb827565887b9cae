#include "renewal/setup.h"

#include "core/log.h"

namespace certfleet::renewal {

Result<HostService::Options> HostOptions(const Config& config) {
  HostService::Options options;
  HostSettings& d = options.defaults;
  d.cert_path = config.Get("renewal.cert_path");
  d.key_path = config.Get("renewal.key_path");
  d.cacert_path = config.Get("renewal.cacert_path");
  d.key_type = config.Get("renewal.key_type");
  d.profile = config.Get("renewal.profile");
  d.threshold_days = config.GetInt("renewal.threshold_days");
  if (std::string command = config.Get("renewal.reload_command"); !command.empty()) d.reload_command = command;
  CF_RETURN_IF_ERROR(CheckPath("renewal.cert_path", d.cert_path));
  CF_RETURN_IF_ERROR(CheckPath("renewal.key_path", d.key_path));
  CF_RETURN_IF_ERROR(CheckPath("renewal.cacert_path", d.cacert_path));
  CF_RETURN_IF_ERROR(CheckKeyType(d.key_type));
  CF_RETURN_IF_ERROR(CheckProfile(d.profile));
  options.token_ttl_ms = config.GetInt("renewal.token_ttl_hours") * 3600 * 1000;
  return options;
}

AgentService::Options AgentOptions(const Config& config) {
  return {config.Get("renewal.ca"), config.GetInt("renewal.validity_days")};
}

RenewalService::Options RenewalOptions(const Config& config) {
  RenewalService::Options o;
  o.concurrency = static_cast<int>(config.GetInt("renewal.concurrency"));
  o.deadline_ms = config.GetInt("renewal.deadline_seconds") * 1000;
  o.max_attempts = static_cast<int>(config.GetInt("renewal.max_attempts"));
  o.backoff_ms = config.GetInt("renewal.backoff_seconds") * 1000;
  o.grace_ms = config.GetInt("renewal.grace_seconds") * 1000;
  o.notify = SplitList(config.Get("renewal.notify"));
  o.sender = config.Get("renewal.sender");
  return o;
}

Result<void> RegisterJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler, RenewalService& renewals,
                          const Config& config) {
  pool.Register(std::string(RenewalService::kRunJob), [&renewals](jobs::JobContext&) -> Result<void> {
    CF_ASSIGN_OR_RETURN(auto started, renewals.StartRun({}, "schedule", "certfleet"));
    log::Info("renewal run started", {{"run_id", started.run_id}, {"queued", started.queued}});
    return Ok();
  });
  pool.Register(std::string(RenewalService::kNotifyJob), [&renewals](jobs::JobContext& job) -> Result<void> {
    CF_ASSIGN_OR_RETURN(int64_t id, job.PayloadInt("renewal_id"));
    return renewals.NotifyFailure(id);
  });
  pool.Register(std::string(RenewalService::kRevokeJob), [&renewals](jobs::JobContext& job) -> Result<void> {
    CF_ASSIGN_OR_RETURN(std::string serial, job.PayloadString("serial"));
    return renewals.RevokeSuperseded(serial);
  });
  constexpr int kRunAttempts = 3;
  return scheduler.Add("renewal-run", config.Get("renewal.schedule"), RenewalService::kRunJob, kRunAttempts);
}

}  // namespace certfleet::renewal
