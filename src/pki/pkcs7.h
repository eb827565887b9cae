#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace certfleet::pki {

// A certs-only PKCS#7 (RFC 2315 SignedData with no content and no signers, the "degenerate"
// form RFC 7030 answers with), DER, holding the DER certificates `certificates` in order.
std::string CertsOnlyPkcs7(const std::vector<std::string>& certificates);

}  // namespace certfleet::pki
