#include "acme/setup.h"

#include <fmt/format.h>

#include "core/crypto.h"

namespace certfleet::acme {
namespace {

constexpr ConfigKey kKeys[] = {
    {"acme.ca", ConfigType::kString, "",
     "ACME: the CA (fqdn) that issues to ACME clients under the profile \"default\"; empty: no ACME directory "
     "is served."},
    {"acme.nonce_minutes", ConfigType::kInt, "60", "How long an ACME nonce waits for the request that uses it.", 1,
     1440},
    {"acme.validity_days", ConfigType::kInt, "90", "Validity of the certificates ACME clients get.", 1, 825},
    {"acme.http01_port", ConfigType::kInt, "80",
     "The port http-01 challenges are fetched from (80 by RFC 8555; another for tests or a proxy).", 1, 65535},
    {"acme.tlsalpn01_port", ConfigType::kInt, "443",
     "The port tls-alpn-01 challenges are checked on (443 by RFC 8737).", 1, 65535},
    {"acme.resolver", ConfigType::kString, "",
     "The DNS server (IPv4:port) that resolves names and dns-01 TXT records for validation; empty: the "
     "system's resolvers."},
    {"acme.validation_attempts", ConfigType::kInt, "5",
     "Tries of a challenge that cannot be reached (no connection, no DNS record yet) before it is invalid; the "
     "waits between them double from 2 s.",
     1, 20},
    {"acme.challenge_wait_ms", ConfigType::kInt, "2000",
     "How long a client's POST to a challenge waits for the first attempt of its validation before it is "
     "answered as processing; 0: answered at once. Keep it well below clients' HTTP timeouts (30 s and more).",
     0, 10000},
    {"acme.sweep_seconds", ConfigType::kInt, "60",
     "How often challenges whose validation stopped undecided (a node died during the last attempt) are made "
     "invalid, so that their clients stop waiting.",
     5, 3600},
    {"acme.validation_workers", ConfigType::kInt, "8",
     "Challenges validated at once on each node (each waits on the network, not the CPU).", 1, 256},
};

// The first wait before a challenge is tried again: a client's server or DNS record that was not
// there yet usually is a few seconds later.
constexpr std::chrono::milliseconds kValidationBackoff{2000};

}  // namespace

std::span<const ConfigKey> ConfigKeys() { return kKeys; }

AcmeService::Options AcmeOptions(const Config& config, std::string_view public_url, std::string_view master_key) {
  AcmeService::Options o;
  o.nonce_key = HmacSha256(master_key, "certfleet acme nonces");
  o.master_key = std::string(master_key);
  o.base_url = std::string(public_url);
  o.ca = config.Get("acme.ca");
  o.nonce_ttl = std::chrono::minutes(config.GetInt("acme.nonce_minutes"));
  o.validity_days = config.GetInt("acme.validity_days");
  o.validation_attempts = static_cast<int>(config.GetInt("acme.validation_attempts"));
  o.challenge_wait = std::chrono::milliseconds(config.GetInt("acme.challenge_wait_ms"));
  o.validation.http01_port = static_cast<int>(config.GetInt("acme.http01_port"));
  o.validation.tlsalpn01_port = static_cast<int>(config.GetInt("acme.tlsalpn01_port"));
  o.validation.resolver = config.Get("acme.resolver");
  return o;
}

Result<void> RegisterJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler, AcmeService& acme, const Config& config) {
  jobs::HandlerOptions options;
  options.concurrency = static_cast<int>(config.GetInt("acme.validation_workers"));
  options.backoff_base = kValidationBackoff;
  pool.Register(
      std::string(AcmeService::kValidateJob),
      [&acme](jobs::JobContext& ctx) -> Result<void> {
        CF_ASSIGN_OR_RETURN(int64_t challenge, ctx.PayloadInt("challenge"));
        return acme.Validate(challenge, ctx.job().attempts, ctx.job().max_attempts,
                             [&ctx](store::Tx& tx) { return ctx.CompleteIn(tx); });
      },
      options);
  acme.UseWorkers(pool);
  pool.Register(std::string(AcmeService::kSweepJob), [&acme](jobs::JobContext&) -> Result<void> {
    CF_RETURN_IF_ERROR(acme.FailAbandoned());
    return Ok();
  });
  // The next firing is the retry.
  return scheduler.Add("acme-sweep", fmt::format("@every {}s", config.GetInt("acme.sweep_seconds")),
                       AcmeService::kSweepJob, 1);
}

}  // namespace certfleet::acme
