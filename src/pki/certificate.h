#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/result.h"
#include "pki/ossl.h"

namespace certfleet::pki {

// What goes into a certificate. The W1 profiles build on this.
struct CertificateSpec {
  std::string common_name;
  std::string organization;
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;
  int64_t not_before_millis = 0;
  int64_t not_after_millis = 0;
  bool is_ca = false;
  int path_len = -1;  // -1: no pathLenConstraint
  bool server_auth = false;
  bool client_auth = false;
};

// Builds and signs a certificate with a 128-bit random serial. With `issuer` null the
// certificate is self-signed by `issuer_key` (which must then be the subject's key).
Result<X509Ptr> SignCertificate(const CertificateSpec& spec, EVP_PKEY* subject_key, X509* issuer, EVP_PKEY* issuer_key);
Result<std::string> CertificateToPem(X509* cert);
Result<X509Ptr> CertificateFromPem(std::string_view pem);

}  // namespace certfleet::pki
