#include "issuance/setup.h"

#include <fmt/format.h>

#include "core/log.h"
#include "issuance/db_key_backend.h"
#include "pki/setup.h"

namespace certfleet::issuance {
namespace {

constexpr ConfigKey kKeys[] = {
    {"ca.crl_hours", ConfigType::kInt, "24",
     "A CRL's validity (nextUpdate); it is re-signed when half of it has passed.", 1, 8760},
    {"ca.renew_grace_hours", ConfigType::kInt, "24",
     "W1: how long a renewed certificate stays valid beside its successor before it is revoked (superseded).", 0,
     int64_t{24} * 90},
    {"ca.ocsp_minutes", ConfigType::kInt, "60", "An OCSP response's validity (nextUpdate) and how long it is cached.",
     1, 10080},
    {"ca.revocation_url", ConfigType::kString, "",
     "Base URL of the CRL and OCSP URLs put in certificates (e.g. http://pki.example.com, answered by "
     "server.http_listen or a proxy in front); empty: public_url."},
};

// CRLs are re-signed once half their validity has passed; checking this often keeps them fresh.
constexpr std::string_view kCrlRefreshSchedule = "@every 15m";
constexpr int kRefreshAttempts = 3;

}  // namespace

std::span<const ConfigKey> ConfigKeys() { return kKeys; }

Result<Issuer::Options> IssuerOptions(const Config& config, std::string_view served_url) {
  Issuer::Options o;
  o.public_url = config.Get("public_url").empty() ? std::string(served_url) : config.Get("public_url");
  std::string revocation = config.Get("ca.revocation_url");
  while (!revocation.empty() && revocation.back() == '/') revocation.pop_back();
  if (!revocation.empty()) {
    const bool web = revocation.starts_with("http://") || revocation.starts_with("https://");
    const size_t host = revocation.find("://") + 3;
    if (!web || revocation.size() == host || revocation.find_first_of("?# \t", host) != std::string::npos) {
      return MakeError(ErrorCode::kInvalidArgument,
                       fmt::format("ca.revocation_url '{}' is not an http:// or https:// base URL", revocation));
    }
  }
  o.revocation_url = std::move(revocation);
  o.crl_validity = std::chrono::hours(config.GetInt("ca.crl_hours"));
  o.ocsp_validity = std::chrono::minutes(config.GetInt("ca.ocsp_minutes"));
  return o;
}

Result<void> RegisterJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler, Issuer& issuer,
                          blob::BlobStore& published) {
  pool.Register(std::string(Issuer::kCrlPublishJob), [&issuer, &published](jobs::JobContext& job) -> Result<void> {
    CF_ASSIGN_OR_RETURN(std::string fqdn, job.PayloadString("ca"));
    return issuer.PublishCrl(fqdn, published);
  });
  auto revoke_superseded = [&issuer](jobs::JobContext& job) -> Result<void> {
    CF_ASSIGN_OR_RETURN(std::string serial, job.PayloadString("serial"));
    CF_RETURN_IF_ERROR(issuer.Revoke(serial, "superseded", /*cascade=*/false, "certfleet"));
    return Ok();
  };
  pool.Register(std::string(kRevokeSupersededJob), revoke_superseded);
  pool.Register("renewal.revoke", revoke_superseded);  // its name when W4 alone queued it
  pool.Register(std::string(Issuer::kCrlResignJob), [&issuer](jobs::JobContext& job) -> Result<void> {
    CF_ASSIGN_OR_RETURN(std::string fqdn, job.PayloadString("ca"));
    CF_ASSIGN_OR_RETURN(int64_t number, job.PayloadInt("crl_number"));
    return issuer.ResignCrlAfter(fqdn, number);
  });
  pool.Register(std::string(Issuer::kCrlRefreshJob), [&issuer](jobs::JobContext&) -> Result<void> {
    CF_ASSIGN_OR_RETURN(int resigned, issuer.RefreshDueCrls());
    if (resigned > 0) log::Info("re-signed CRLs", {{"count", resigned}});
    return Ok();
  });
  return scheduler.Add("ca-crl-refresh", kCrlRefreshSchedule, Issuer::kCrlRefreshJob, kRefreshAttempts);
}

Result<std::unique_ptr<pki::KeyBackends>> OpenKeyBackends(const Config& config, const std::string& master_key,
                                                          store::Store& store, const Clock& clock) {
  std::string chosen = config.Get("ca.key_backend");
  if (chosen.empty()) chosen = store.dialect() == store::Dialect::kPostgres ? "db" : "file";
  if (chosen != "db" && chosen != "file" && chosen != "pkcs11") {
    return MakeError(ErrorCode::kFailedPrecondition,
                     fmt::format("ca.key_backend '{}' is none of db, file and pkcs11", chosen));
  }
  CF_ASSIGN_OR_RETURN(auto backends, pki::OpenKeyBackends(config, master_key, chosen));
  backends->Add("db", std::make_unique<DbKeyBackend>(store, clock, master_key));
  return backends;
}

}  // namespace certfleet::issuance
