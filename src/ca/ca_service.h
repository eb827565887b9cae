#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

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
};

// W1: certificates named by the seed's rules (registrable domains, default parents, UUID
// device names), issued through the issuance floor. Thread-safe.
class CaService {
 public:
  explicit CaService(issuance::Issuer& issuer) : issuer_(issuer) {}

  Result<issuance::Issued> Create(const CreateRequest& request, std::string_view actor);
  // The same without waiting; see issuance::Issuer::IssueAsync for where `done` runs.
  void CreateAsync(const CreateRequest& request, std::string_view actor,
                   std::function<void(Result<issuance::Issued>)> done);

 private:
  // The request as the issuance floor takes it, its names resolved; kInvalidArgument if
  // they break the seed's rules.
  Result<issuance::IssueRequest> Resolve(const CreateRequest& request);

  issuance::Issuer& issuer_;
};

}  // namespace certfleet::ca
