#include "renewal/setup.h"

#include <fmt/format.h>

#include "core/enum_names.h"
#include "core/log.h"
#include "core/text.h"

namespace certfleet::renewal {
namespace {

constexpr ConfigKey kKeys[] = {
    {"renewal.cert_path", ConfigType::kString, "/etc/certfleet/certs",
     "W4: folder of a host's certificate ({host_id}.crt) on the host, unless the host names its own."},
    {"renewal.key_path", ConfigType::kString, "/etc/certfleet/private",
     "W4: folder of a host's private key ({host_id}.key) on the host, unless the host names its own."},
    {"renewal.cacert_path", ConfigType::kString, "/etc/certfleet/certs",
     "W4: folder of a host's CA chain (ca_chain_certificate.crt) on the host, unless the host names its own."},
    {"renewal.threshold_days", ConfigType::kInt, "30",
     "W4: a host's certificate is renewed this many days before it expires, unless the host says otherwise.", 1, 365},
    {"renewal.key_type", ConfigType::kString, "ec-p256",
     "W4: the key hosts make (ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096, ed25519), unless the host says."},
    {"renewal.profile", ConfigType::kString, "host",
     "W4: host (serverAuth and clientAuth) or client (clientAuth), unless the host says."},
    {"renewal.reload_command", ConfigType::kString, "",
     "W4: the command agents run after writing a new certificate (empty: none), unless the host names one."},
    {"renewal.ca", ConfigType::kString, "",
     "W4: the intermediate CA (its fqdn) that issues host certificates, unless PUT /v1/renewal/settings set one."},
    {"renewal.validity_days", ConfigType::kInt, "90", "W4: how long a host certificate is valid.", 1, 825},
    {"renewal.token_ttl_hours", ConfigType::kInt, "24",
     "W4: how long an agent's enrollment token (certfleet host token) stays valid.", 1, 720},
    {"renewal.schedule", ConfigType::kString, "15 3,15 * * *",
     "W4: when due hosts are renewed (cron in UTC, or @every 10m); POST /v1/renewals/run starts a run at once."},
    {"renewal.concurrency", ConfigType::kInt, "200", "W4: renewals at work at once, over all nodes.", 1, 10000},
    {"renewal.deadline_seconds", ConfigType::kInt, "600",
     "W4: how long an agent has for one attempt (take the task, submit the CSR, deploy, validate).", 5, 86400},
    {"renewal.max_attempts", ConfigType::kInt, "3", "W4: attempts of a renewal before it fails and people are told.", 1,
     20},
    {"renewal.backoff_seconds", ConfigType::kInt, "60",
     "W4: wait before a renewal's second attempt; it doubles for each further one (at most an hour).", 1, 3600},
    {"renewal.grace_seconds", ConfigType::kInt, "86400",
     "W4: how long a host's replaced certificate stays valid before it is revoked (reason superseded).", 0,
     int64_t{90} * 86400},
    {"renewal.notify", ConfigType::kString, "",
     "W4: addresses (comma-separated) mailed when a renewal fails; empty: nobody (the event and log still say)."},
    {"renewal.notify_mode", ConfigType::kString, "both",
     "W4: failure mails: each (one per failed host), digest (one per run when it ends: renewed, failed with step "
     "and error, still waiting) or both."},
    {"renewal.sender", ConfigType::kString, "certfleet@localhost", "W4: From address of renewal failure mails."},
};

}  // namespace

std::span<const ConfigKey> ConfigKeys() { return kKeys; }

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
  options.token_ttl = std::chrono::hours(config.GetInt("renewal.token_ttl_hours"));
  return options;
}

AgentService::Options AgentOptions(const Config& config) {
  return {config.Get("renewal.ca"), config.GetInt("renewal.validity_days"),
          std::chrono::seconds(config.GetInt("renewal.grace_seconds"))};
}

Result<RenewalService::Options> RenewalOptions(const Config& config) {
  RenewalService::Options o;
  const std::string& mode = config.Get("renewal.notify_mode");
  auto parsed = ParseEnum<NotifyMode>(mode, kNotifyModeNames);
  if (!parsed) {
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("renewal.notify_mode must be one of {}, not '{}'",
                                                              EnumChoices(kNotifyModeNames), Escaped(mode)));
  }
  o.notify_mode = *parsed;
  o.concurrency = static_cast<int>(config.GetInt("renewal.concurrency"));
  o.deadline = std::chrono::seconds(config.GetInt("renewal.deadline_seconds"));
  o.max_attempts = static_cast<int>(config.GetInt("renewal.max_attempts"));
  o.backoff = std::chrono::seconds(config.GetInt("renewal.backoff_seconds"));
  o.grace = std::chrono::seconds(config.GetInt("renewal.grace_seconds"));
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
  pool.Register(std::string(RenewalService::kDigestJob), [&renewals](jobs::JobContext& job) -> Result<void> {
    CF_ASSIGN_OR_RETURN(int64_t id, job.PayloadInt("run_id"));
    return renewals.MailDigest(id);
  });
  constexpr int kRunAttempts = 3;
  return scheduler.Add("renewal-run", config.Get("renewal.schedule"), RenewalService::kRunJob, kRunAttempts);
}

}  // namespace certfleet::renewal
