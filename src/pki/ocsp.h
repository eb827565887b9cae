#pragma once

#include <openssl/ocsp.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "pki/ossl.h"

namespace certfleet::pki {

using OcspRequestPtr = std::unique_ptr<OCSP_REQUEST, Deleter<OCSP_REQUEST_free>>;

// Largest OCSP request accepted; one with a few CertIDs and a nonce is under 1 KiB.
inline constexpr size_t kMaxOcspRequestBytes = size_t{8} * 1024;
// The longest nonce a request may carry (RFC 9654 2.1).
inline constexpr int kMaxOcspNonceBytes = 128;

// One certificate asked about (a CertID): hashes of the issuer's name and public key, and the serial.
struct OcspQuestion {
  std::string issuer_name_hash;  // raw bytes, SHA-1 (as RFC 6960 clients send) unless hash_nid says otherwise
  std::string issuer_key_hash;   // raw bytes, the same digest
  int hash_nid = 0;
  std::string serial_hex;
};

struct OcspRequest {
  OcspRequestPtr req;
  std::vector<OcspQuestion> questions;
};
// Parses a DER OCSPRequest (RFC 6960); kInvalidArgument if it is not one, or if bytes follow it.
Result<OcspRequest> ParseOcspRequest(std::string_view der);

enum class OcspStatus { kGood, kRevoked, kUnknown };
struct OcspAnswer {
  OcspStatus status = OcspStatus::kUnknown;
  int64_t revoked_at_millis = 0;
  int reason = 0;
};

// A successful response signed by the issuing CA itself, one SingleResponse per
// question (answers in the same order), the request's nonce echoed. Returns DER.
Result<std::string> BuildOcspResponse(const OcspRequest& request, X509* ca, EVP_PKEY* ca_key,
                                      const std::vector<OcspAnswer>& answers, int64_t this_update_millis,
                                      int64_t next_update_millis);
// Of a successful response: its first answer's thisUpdate and nextUpdate, and whether it
// echoes a nonce (then it answers one request only). Nullopt for any other response.
struct OcspTimes {
  int64_t this_update_millis = 0;
  int64_t next_update_millis = 0;
  bool has_nonce = false;
};
std::optional<OcspTimes> OcspResponseTimes(std::string_view der);
// An unsuccessful response: OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, _UNAUTHORIZED, ...
std::string OcspErrorResponse(int status);
// The hash of a CA's public key as CertIDs carry it, for the digest `hash_nid`.
std::string IssuerKeyHash(X509* ca, int hash_nid = NID_sha1);
// The hash of a CA's subject name (DER) as CertIDs carry it, for the digest `hash_nid`.
std::string IssuerNameHash(X509* ca, int hash_nid = NID_sha1);

}  // namespace certfleet::pki
