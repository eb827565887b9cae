#include "pki/pkcs7.h"

#include <openssl/obj_mac.h>

#include "pki/der.h"

namespace certfleet::pki {

std::string CertsOnlyPkcs7(const std::vector<std::string>& certificates) {
  std::string certs;
  for (const auto& der : certificates) certs += der;
  std::string signed_data;
  DerAppend(signed_data, kDerInteger, std::string(1, '\x01'));   // version
  DerAppend(signed_data, kDerSet, "");                           // digestAlgorithms
  DerAppend(signed_data, kDerSequence, DerOid(NID_pkcs7_data));  // contentInfo, no content
  DerAppend(signed_data, kDerContext0, certs);                   // [0] IMPLICIT certificates
  DerAppend(signed_data, kDerSet, "");                           // signerInfos
  std::string content_info = DerOid(NID_pkcs7_signed);
  DerAppend(content_info, kDerContext0, Der(kDerSequence, signed_data));  // [0] EXPLICIT content
  return Der(kDerSequence, content_info);
}

}  // namespace certfleet::pki
