#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "acme/jws.h"
#include "core/clock.h"
#include "core/result.h"
#include "store/store.h"

namespace certfleet::acme {

// External account binding credentials (RFC 8555 7.3.4), shown once: the client gives the kid
// and the MAC key (base64url) to its ACME client (lego --eab --kid --hmac, certbot
// --eab-kid --eab-hmac-key).
struct EabCredentials {
  std::string kid;
  std::string hmac_key;  // base64url, 32 random bytes
  std::string profile;
};

// New credentials for `profile` (which the caller has checked exists); the key is kept sealed
// with the master key. Audited as acme.eab.create.
Result<EabCredentials> CreateEab(store::Store& store, const Clock& clock, std::string_view master_key,
                                 std::string_view profile, std::string_view actor);

// The external account binding of a newAccount request: a JWS (HS256, kid, the request's url,
// no nonce) over the account's jwk, MACed with the kid's key. Returns the kid when it verifies
// for `profile` and is unused (used: unauthorized; wrong: malformed or badSignatureAlgorithm).
Result<std::string> VerifyEab(store::Store& store, std::string_view master_key, std::string_view profile,
                              const boost::json::value& binding, const Jws& outer);

}  // namespace certfleet::acme
