#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.h"
#include "store/store.h"

namespace certfleet::store {

// An ACME account: its key (a JWK, JSON) and what the client said of itself.
struct AcmeAccountRecord {
  int64_t id = 0;
  std::string profile;
  std::string thumbprint;  // RFC 7638, base64url
  std::string jwk;         // JSON
  std::string status;      // valid, deactivated, revoked
  std::string contact;     // a JSON array of URLs
  int64_t created_at = 0;
};

Result<void> InsertAcmeNonce(Tx& tx, std::string_view nonce, int64_t expires_at);
// Takes the nonce: true if it was issued, unexpired and not taken before (by any node).
Result<bool> TakeAcmeNonce(Tx& tx, std::string_view nonce, int64_t now);
Result<int64_t> DeleteExpiredAcmeNonces(Tx& tx, int64_t now);

// The new account's id.
Result<int64_t> InsertAcmeAccount(Tx& tx, const AcmeAccountRecord& account);
Result<std::optional<AcmeAccountRecord>> FindAcmeAccount(Tx& tx, int64_t id);
Result<std::optional<AcmeAccountRecord>> FindAcmeAccountByKey(Tx& tx, std::string_view profile,
                                                              std::string_view thumbprint);
Result<void> UpdateAcmeAccount(Tx& tx, int64_t id, std::string_view status, std::string_view contact);

}  // namespace certfleet::store
