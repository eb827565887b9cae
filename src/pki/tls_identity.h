#pragma once

#include <string>
#include <vector>

#include "core/result.h"

namespace certfleet::pki {

// The HTTPS identity `certfleet init` makes: a local CA that clients trust and a server
// certificate it signed. The CA key is discarded once the server certificate is signed,
// so the trust anchor can sign nothing else.
struct TlsIdentity {
  std::string ca_pem;
  std::string server_chain_pem;  // server certificate, then the CA
  std::string server_key_pem;
};

// `names` are DNS names or IP addresses (both kinds go into the SAN).
Result<TlsIdentity> MakeTlsIdentity(const std::vector<std::string>& names, int64_t now_millis, int validity_days);

}  // namespace certfleet::pki
