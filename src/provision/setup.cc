#include "provision/setup.h"

#include "core/crypto.h"

namespace certfleet::provision {
namespace {

constexpr ConfigKey kKeys[] = {
    {"provision.supersede_grace_hours", ConfigType::kInt, "24",
     "W2: hours a device's previous certificate stays valid after it provisions a new one; 0: revoked at once.", 0,
     8760},
    {"provision.retrieve_ttl_seconds", ConfigType::kInt, "86400",
     "W2: seconds a delayed-retrieval URL (Prefer: respond-async) works.", 1, 604800},
    {"provision.device_rate_per_minute", ConfigType::kInt, "10",
     "W2: provisioning requests a device id may make a minute (in bursts as large), per node; 0: no limit.", 0,
     1000000},
    {"provision.address_rate_per_minute", ConfigType::kInt, "6000",
     "W2: provisioning requests one client address may make a minute, per node (a factory's devices may share one); "
     "0: no limit.",
     0, 100000000},
};

// Superseded device certificates are revoked within this of their grace period's end.
constexpr std::string_view kSupersededSchedule = "@every 1m";

}  // namespace

std::span<const ConfigKey> ConfigKeys() { return kKeys; }

ProvisionService::Options ProvisionOptions(const Config& config, std::string_view public_url,
                                           const std::string& master_key) {
  ProvisionService::Options o;
  o.public_url = std::string(public_url);
  o.url_key = HmacSha256(master_key, "certfleet provision retrieval URLs");
  o.supersede_grace = std::chrono::hours(config.GetInt("provision.supersede_grace_hours"));
  o.retrieve_ttl = std::chrono::seconds(config.GetInt("provision.retrieve_ttl_seconds"));
  o.device_rate_per_minute = config.GetInt("provision.device_rate_per_minute");
  o.address_rate_per_minute = config.GetInt("provision.address_rate_per_minute");
  return o;
}

Result<void> RegisterJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler, ProvisionService& provision) {
  pool.Register(std::string(ProvisionService::kRevokeSupersededJob), [&provision](jobs::JobContext&) -> Result<void> {
    CF_RETURN_IF_ERROR(provision.RevokeDueSuperseded());
    return Ok();
  });
  // The next firing is the retry.
  return scheduler.Add("provision-revoke-superseded", kSupersededSchedule, ProvisionService::kRevokeSupersededJob, 1);
}

}  // namespace certfleet::provision
