#pragma once

#include <boost/json/object.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.h"
#include "pki/ossl.h"

namespace certfleet::acme {

// An ACME request: a JWS in the flattened JSON serialization (RFC 7515 7.2.2, RFC 8555 6.2),
// its protected header's fields read out. Which problem a failure is (malformed,
// badSignatureAlgorithm, badPublicKey, unauthorized) is decided by the step that failed.
struct Jws {
  std::string protected_b64;  // as sent: the signing input is protected_b64 "." payload_b64
  std::string payload_b64;
  std::string signature;  // raw bytes
  std::string alg;
  std::string nonce;
  std::string url;
  std::optional<std::string> kid;          // an account URL, for an existing account
  std::optional<boost::json::object> jwk;  // the key itself, for newAccount and revokeCert
  std::string payload;                     // decoded; empty for POST-as-GET
};

// base64url without padding, as JOSE writes it (RFC 7515 2); nullopt for anything else.
std::optional<std::string> Base64UrlDecode(std::string_view text);

// A request body as a Jws: kInvalidArgument naming what is wrong (not a JSON object, a
// member missing, not base64url, an unprotected header, both or neither of jwk and kid, no
// nonce or url). The algorithm is not checked here: see SupportedAlgorithm.
// kInner: the inner JWS of a key change (RFC 8555 7.3.5), signed by the new key (jwk) and
// carrying no nonce. kEab: an external account binding (7.3.4), MACed, named by kid, no nonce.
enum class JwsRole { kRequest, kInner, kEab };
Result<Jws> ParseJws(std::string_view body, JwsRole role = JwsRole::kRequest);

// ES256, ES384, RS256 and EdDSA: the algorithms certfleet verifies (RFC 8555 6.2 asks ES256
// and EdDSA at least).
bool SupportedAlgorithm(std::string_view alg);
inline constexpr std::string_view kSupportedAlgorithms[] = {"ES256", "ES384", "RS256", "EdDSA"};

// The public key of a JWK (RFC 7517): EC P-256 or P-384, RSA of 2048 to 8192 bits, OKP
// Ed25519; kInvalidArgument for anything else, a private key or a malformed member.
Result<pki::PkeyPtr> PublicKeyFromJwk(const boost::json::object& jwk);

// The JWK's thumbprint (RFC 7638): base64url of the SHA-256 of its required members in
// lexicographic order, as key authorizations use it (RFC 8555 8.1).
Result<std::string> JwkThumbprint(const boost::json::object& jwk);

// Checks the signature with `key`: kInvalidArgument when `alg` does not fit the key,
// kUnauthenticated when the signature does not verify.
Result<void> VerifyJws(const Jws& jws, EVP_PKEY* key);

}  // namespace certfleet::acme
