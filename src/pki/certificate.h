#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "pki/ossl.h"

namespace certfleet::pki {

// What goes into a certificate; profile.h fills it per certificate type.
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
  std::string country;  // two letters, or empty
  std::string state;
  std::string crl_url;   // CRL distribution point, or empty
  std::string ocsp_url;  // OCSP responder in the AIA, or empty
};

// The facts about a certificate the inventory keeps.
struct CertificateFacts {
  std::string serial_hex;  // lowercase, no leading zeros
  int64_t not_before_millis = 0;
  int64_t not_after_millis = 0;
  std::string sha256_fingerprint;  // lowercase hex of the DER
  std::string common_name;
  bool is_ca = false;  // basicConstraints cA
  std::string pem;     // the certificate, PEM
};

// A certificate as issued: its DER and the facts about it.
struct IssuedCertificate {
  std::string der;
  CertificateFacts facts;
};

// Builds and signs a certificate with a 128-bit serial: the time in milliseconds (48 bits),
// then 80 random bits. With `issuer` null the certificate is self-signed by `issuer_key`
// (which must then be the subject's key).
// `subject_spki_der`, when given (a CSR's SubjectPublicKeyInfo), is copied into the
// certificate as it is instead of encoding `subject_key` anew: OpenSSL 3.0 runs its encoder
// and decoder for that, which costs more than the signature.
Result<IssuedCertificate> IssueCertificate(const CertificateSpec& spec, EVP_PKEY* subject_key, X509* issuer,
                                           EVP_PKEY* issuer_key, std::string_view subject_spki_der = {});
// The same, as an OpenSSL object.
Result<X509Ptr> SignCertificate(const CertificateSpec& spec, EVP_PKEY* subject_key, X509* issuer, EVP_PKEY* issuer_key,
                                std::string_view subject_spki_der = {});
// The digest an issuer's key signs certificates, CRLs and OCSP responses with: SHA-384 for a
// P-384 key, none for Ed25519, SHA-256 otherwise.
const EVP_MD* SigningDigest(EVP_PKEY* issuer_key);
Result<std::string> CertificateToPem(X509* cert);
// PEM text of DER bytes under `label` ("CERTIFICATE"), in 64-character lines.
std::string PemEncode(std::string_view label, std::string_view der);
Result<X509Ptr> CertificateFromPem(std::string_view pem);
// A DER certificate, all of it; kInvalidArgument otherwise.
Result<X509Ptr> CertificateFromDer(std::string_view der);
// Every certificate of a PEM bundle, in order; kInvalidArgument if there is none.
Result<std::vector<X509Ptr>> CertificatesFromPem(std::string_view pem);
// Verifies `leaf` through `chain` (its issuers, nearest first) to the chain's last
// certificate as the trust anchor; kInvalidArgument with OpenSSL's reason otherwise.
Result<void> VerifyChain(X509* leaf, const std::vector<X509Ptr>& chain);
// Verifies `leaf` to one of `anchors` through any of `untrusted`, at the current time, for
// `purpose` (X509_PURPOSE_SSL_CLIENT, say) when given; kInvalidArgument with OpenSSL's reason
// otherwise. The certificates stay the caller's.
Result<void> VerifyToAnchors(X509* leaf, const std::vector<X509*>& untrusted, const std::vector<X509*>& anchors,
                             std::optional<int> purpose);
Result<std::string> CertificateToDer(X509* cert);

// The subject CN of a DER certificate ("" if it has none), after checking the certificate's
// outer structure (Certificate, TBSCertificate up to the subject) with a DER reader:
// kInvalidArgument if it is not one certificate. Neither the key nor the signature is
// decoded, which OpenSSL 3.0's d2i_X509 does at ~50 µs a certificate: for bulk imports.
Result<std::string> CertificateSubjectCn(std::string_view der);
// Whether a DER certificate's issuer and subject are the same name (the same encoding), as a
// root's are, read as CertificateSubjectCn reads; kInvalidArgument if it is not a certificate.
Result<bool> IsSelfIssued(std::string_view der);
// The certificate's subject as RFC 2253 text ("CN=iot.example.com,O=Acme"); "" if OpenSSL
// cannot print it.
std::string SubjectText(X509* cert);
// The first entry of `nid` in `name` as UTF-8; "" if there is none or it is not text.
std::string NameEntry(const X509_NAME* name, int nid);
Result<CertificateFacts> Inspect(X509* cert);
// An ASN1_TIME as milliseconds since the epoch (0 if it cannot be read).
int64_t TimeMillis(const ASN1_TIME* t);
// The certificate's notBefore and notAfter in ms since the epoch; 0 if OpenSSL cannot read one.
int64_t NotBeforeMillis(const X509* cert);
int64_t NotAfterMillis(const X509* cert);
// The subjectAltName's DNS names and IP addresses (as text), in order.
std::vector<std::string> SubjectAltNames(X509* cert);

// Serial numbers as the inventory writes them: lowercase hex without leading zeros.
std::string SerialHex(const ASN1_INTEGER* serial);
// A serial as a user may write it (any case, leading zeros, colons between bytes, an 0x
// prefix: "0C:0E:E2", "0x0c0ee2", "C0EE2") in the inventory's form; nullopt if it is not hex.
std::optional<std::string> CanonicalSerial(std::string_view text);

}  // namespace certfleet::pki
