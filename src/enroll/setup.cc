#include "enroll/setup.h"

#include "core/files.h"

namespace certfleet::enroll {
namespace {

constexpr ConfigKey kKeys[] = {
    {"enroll.retry_after_seconds", ConfigType::kInt, "60",
     "EST/CMP: how long a client whose request waits for an operator's approval is told to wait before asking "
     "again (Retry-After).",
     1, 86400},
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

Result<std::unique_ptr<CmpServer>> MakeCmpServer(EnrollService& enroll, store::Store& store, const Clock& clock,
                                                 const std::string& certificate_file, const std::string& key_file) {
  constexpr size_t kMaxPemBytes = size_t{64} * 1024;  // a certificate chain or a key, with room
  CmpServer::Options options;
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

}  // namespace certfleet::enroll
