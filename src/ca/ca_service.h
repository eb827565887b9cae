#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "issuance/issuer.h"
#include "pki/profile.h"

namespace certfleet::ca {

// What a W1 caller asks to be issued (the API's request bodies), named by the seed's rules.
struct CreateRequest {
  pki::CertType type = pki::CertType::kServer;
  std::string fqdn;                        // empty for devices (made from a UUID)
  std::optional<std::string> parent_fqdn;  // defaults as in the seed
  std::vector<std::string> sans;
  std::optional<std::string> csr_pem;  // server and device only
  std::string country;
  std::string state;
  std::string organization;
  std::optional<int64_t> validity_days;
  std::optional<std::string> key_type;  // when certfleet makes the key
  std::string key_backend;              // a CA's: where its key is made ("file", "pkcs11"); empty: ca.key_backend
};

// A renewal of a W1 leaf (POST /v1/certificates/{serial}/renew): the same name, parent,
// names and subject; a new key made by certfleet (of `key_type`, else the old key's type) or
// the key of `csr_pem`.
struct RenewRequest {
  std::optional<std::string> csr_pem;
  std::optional<std::string> key_type;
  std::optional<int64_t> validity_days;  // default: the old certificate's lifetime
  bool keep = false;                     // leave the old certificate active (else revoked after the grace)
};

// An intermediate whose certificate a parent outside certfleet signs (POST /v1/cas/intermediate/csr).
struct CaCsrRequest {
  std::string fqdn;                        // below a registrable domain, as any intermediate
  std::optional<std::string> parent_hint;  // who is to sign it, for the operator's records
  std::optional<std::string> key_type;     // default ec-p256
  std::string key_backend;                 // empty: ca.key_backend
};

// W1: certificates named by the seed's rules (registrable domains, default parents, UUID
// device names), issued through the issuance floor. Thread-safe.
class CaService {
 public:
  struct Options {
    // Before a renewed certificate is revoked (superseded): a day, for the services still
    // presenting it to be given the new one (ca.renew_grace_hours).
    std::chrono::hours renew_grace{24};
  };

  explicit CaService(issuance::Issuer& issuer, const Clock& clock, Options options)
      : issuer_(issuer), clock_(clock), options_(options) {}

  Result<issuance::Issued> Create(const CreateRequest& request, std::string_view actor);
  // The same without waiting; see issuance::Issuer::IssueAsync for where `done` runs.
  void CreateAsync(const CreateRequest& request, std::string_view actor,
                   std::function<void(Result<issuance::Issued>)> done);
  // Issues the successor of the active W1 server or device certificate `serial`, allowed to
  // overlap it; the old one is revoked (superseded) after the grace unless `keep`. Audited as
  // certificate.renew. kNotFound for an unknown serial; kFailedPrecondition for a revoked
  // certificate, a CA (rotated, not renewed) or a certificate another workflow owns (a W2
  // device's, a W4 host's).
  Result<issuance::Issued> Renew(std::string_view serial, const RenewRequest& request, std::string_view actor);
  // The key and CSR of a pending intermediate (see issuance::Issuer::RequestCa).
  Result<store::PendingCaRecord> RequestIntermediate(const CaCsrRequest& request, std::string_view actor);

 private:
  // The request as the issuance floor takes it, its names resolved; kInvalidArgument if
  // they break the seed's rules.
  Result<issuance::IssueRequest> Resolve(const CreateRequest& request);

  issuance::Issuer& issuer_;
  const Clock& clock_;
  const Options options_;
};

}  // namespace certfleet::ca
