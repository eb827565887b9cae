#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "pki/ossl.h"

namespace certfleet::pki {

// Largest CSR accepted (PEM or DER); real ones are under 2 KiB even with RSA-4096.
inline constexpr size_t kMaxCsrBytes = size_t{16} * 1024;

// A certificate signing request whose signature verified.
struct Csr {
  std::string der;  // the whole request (for a template: what identifies it)
  PkeyPtr public_key;
  std::string spki_der;     // the SubjectPublicKeyInfo as the CSR encodes it
  std::string common_name;  // the first; empty if the subject has none
  int common_names = 0;     // how many the subject has
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;          // as text, from the subjectAltName
  std::optional<std::string> challenge_password;  // the PKCS#9 attribute, when there is one
  std::vector<std::string> other_attributes;      // the OIDs (dotted) of the request's other attributes
};

// Parses a PEM or DER CSR and checks its self-signature; kInvalidArgument otherwise.
// Signatures must be ECDSA, RSA PKCS#1 v1.5 (both with SHA-256/384/512) or Ed25519; SHA-1,
// MD5 and RSA-PSS signed requests are refused.
Result<Csr> ParseCsr(std::string_view data);

// A request made of a certificate template's parts (CRMF, RFC 4211), whose proof of
// possession the protocol checked: the subject (a DER Name), the public key (a DER
// SubjectPublicKeyInfo, linted as ParseCsr does) and the requested extensions (a DER
// SEQUENCE OF Extension, or empty); `identity` goes into `der` (what tells two requests
// apart). kInvalidArgument if a part is malformed.
Result<Csr> RequestFromTemplate(std::string_view subject_der, std::string_view spki_der,
                                std::string_view extensions_der, std::string_view identity);

// A PEM CSR for `key` with the subject CN `common_name` and the DNS names and IP addresses
// `sans` as subjectAltName, signed with SHA-256 (Ed25519: itself). certfleet-agent makes
// its requests with it.
Result<std::string> MakeCsrPem(EVP_PKEY* key, std::string_view common_name, const std::vector<std::string>& sans);

// Refuses keys RFC 5280 profiles and current practice forbid: RSA under 2048 bits, EC
// curves other than P-256/P-384/P-521, and algorithms other than RSA, EC and Ed25519.
Result<void> LintPublicKey(EVP_PKEY* key);
Result<std::string> PublicKeyToPem(EVP_PKEY* key);

// Largest public key accepted as PEM; an RSA-4096 key is about 800 bytes.
inline constexpr size_t kMaxPublicKeyPemBytes = size_t{8} * 1024;
// A PEM public key ("BEGIN PUBLIC KEY") as its DER SubjectPublicKeyInfo, as a CSR carrying
// the same key encodes it; kInvalidArgument if it is unreadable or LintPublicKey refuses it.
Result<std::string> PublicKeyPemToDer(std::string_view pem);

}  // namespace certfleet::pki
