#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "pki/ossl.h"

namespace certfleet::pki {

// The reason of a revocation, by its RFC 5280 CRLReason name: unspecified, keyCompromise,
// cACompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn,
// aACompromise. Returns the reason code. certfleet's revocations are final and its CRLs
// full CRLs, so removeFromCRL (meaningful only in delta CRLs, RFC 5280 5.3.1) and
// certificateHold (a revocation that may be undone) are kInvalidArgument, as is any other name.
Result<int> ParseRevocationReason(std::string_view name);
std::string_view RevocationReasonName(int code);

struct RevokedEntry {
  std::string serial_hex;
  int64_t revoked_at_millis = 0;
  int reason = 0;
};

// A CRL v2 signed by `ca_key`: the entries with their reasons, CRL number, AKI,
// thisUpdate and nextUpdate. Returns DER.
Result<std::string> BuildCrl(X509* ca, EVP_PKEY* ca_key, const std::vector<RevokedEntry>& entries, int64_t crl_number,
                             int64_t this_update_millis, int64_t next_update_millis);

}  // namespace certfleet::pki
