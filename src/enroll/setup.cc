#include "enroll/setup.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/files.h"

namespace certfleet::enroll {
namespace {

constexpr ConfigKey kKeys[] = {
    {"enroll.retry_after_seconds", ConfigType::kInt, "60",
     "EST/CMP: how long a client whose request waits for an operator's approval is told to wait before asking "
     "again (Retry-After).",
     1, 86400},
    {"enroll.cmp_confirm_seconds", ConfigType::kInt, "600",
     "CMP: how long a certificate answered without implicit confirmation waits for its client's certConf; "
     "unconfirmed by then it is revoked and a kur's previous certificate is the device's again (RFC 9483 "
     "4.1.1). Also how long a transaction's state is kept for its next message.",
     10, 86400},
};

}  // namespace

std::span<const ConfigKey> ConfigKeys() { return kKeys; }

EnrollService::Options EnrollOptions(const Config& config, std::string_view master_key,
                                     std::chrono::hours supersede_grace) {
  EnrollService::Options o;
  o.master_key = std::string(master_key);
  o.supersede_grace = supersede_grace;
  o.retry_after = std::chrono::seconds(config.GetInt("enroll.retry_after_seconds"));
  return o;
}

Result<std::unique_ptr<CmpServer>> MakeCmpServer(const Config& config, EnrollService& enroll, store::Store& store,
                                                 const Clock& clock, const std::string& certificate_file,
                                                 const std::string& key_file) {
  constexpr size_t kMaxPemBytes = size_t{64} * 1024;  // a certificate chain or a key, with room
  CmpServer::Options options;
  options.transaction_ttl = std::chrono::seconds(config.GetInt("enroll.cmp_confirm_seconds"));
  Result<std::string> cert = ReadFile(certificate_file, kMaxPemBytes);
  Result<std::string> key = ReadFile(key_file, kMaxPemBytes);
  if (!cert.ok() || !key.ok()) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     "the signer's certificate or key does not read: " + (cert.ok() ? key : cert).error().message);
  }
  options.signer_certificate_pem = std::move(*cert);
  options.signer_key_pem = std::move(*key);
  return CmpServer::Make(enroll, store, clock, options);
}

Result<void> RegisterJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler, EnrollService& enroll,
                          const Config& config) {
  pool.Register(std::string(EnrollService::kUnconfirmedJob), [&enroll](jobs::JobContext&) -> Result<void> {
    CF_RETURN_IF_ERROR(enroll.RevokeUnconfirmed());
    return Ok();
  });
  // As often as certificates may wait, between 10 s (the scheduler's tick) and a minute.
  const int64_t every = std::clamp<int64_t>(config.GetInt("enroll.cmp_confirm_seconds"), 10, 60);
  // The next firing is the retry.
  return scheduler.Add("enroll-cmp-unconfirmed", fmt::format("@every {}s", every), EnrollService::kUnconfirmedJob, 1);
}

}  // namespace certfleet::enroll
