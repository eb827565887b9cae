#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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

// Records a nonce as used until it expires: false if it was used before (by any node).
Result<bool> UseAcmeNonce(Tx& tx, std::string_view nonce, int64_t expires_at);
Result<int64_t> DeleteExpiredAcmeNonces(Tx& tx, int64_t now);

// The new account's id.
Result<int64_t> InsertAcmeAccount(Tx& tx, const AcmeAccountRecord& account);
Result<std::optional<AcmeAccountRecord>> FindAcmeAccount(Tx& tx, int64_t id);
Result<std::optional<AcmeAccountRecord>> FindAcmeAccountByKey(Tx& tx, std::string_view profile,
                                                              std::string_view thumbprint);
// Both change a valid account only: false if it is deactivated (meanwhile, by another request:
// a deactivation is final, RFC 8555 7.3.6).
Result<bool> UpdateAcmeAccount(Tx& tx, int64_t id, std::string_view status, std::string_view contact);
// A key rollover (the unique index refuses a key another account of the profile has).
Result<bool> ChangeAcmeAccountKey(Tx& tx, int64_t id, std::string_view thumbprint, std::string_view jwk);

// An order (RFC 8555 7.1.3). Status: pending, ready, processing, valid, invalid.
struct AcmeOrderRecord {
  int64_t id = 0;
  int64_t account_id = 0;
  std::string profile;
  std::string status;
  std::string identifiers;  // JSON: [{"type": "dns"|"ip", "value": …}]
  int64_t expires_at = 0;
  std::optional<std::string> error;     // a problem document (JSON) once invalid
  std::optional<std::string> serial;    // its certificate, once valid
  std::optional<std::string> replaces;  // the ARI certificate id (RFC 9773) it replaces
  int64_t created_at = 0;
  int64_t updated_at = 0;
  std::optional<int64_t> not_after;  // the certificate's end the client asked for (RFC 8555 7.4)
};

// An authorization of one identifier for one order. Status: pending, valid, invalid,
// deactivated, expired. A wildcard's value is the name without "*.".
struct AcmeAuthzRecord {
  int64_t id = 0;
  int64_t order_id = 0;
  int64_t account_id = 0;
  std::string identifier_type;
  std::string identifier_value;
  bool wildcard = false;
  std::string status;
  int64_t expires_at = 0;
};

// A challenge of an authorization. Status: pending, processing, valid, invalid.
struct AcmeChallengeRecord {
  int64_t id = 0;
  int64_t authz_id = 0;
  std::string type;  // http-01, dns-01, tls-alpn-01
  std::string token;
  std::string status;
  std::optional<int64_t> validated_at;
  std::optional<std::string> error;  // a problem document (JSON)
};

// The new row's id.
Result<int64_t> InsertAcmeOrder(Tx& tx, const AcmeOrderRecord& order);
Result<int64_t> InsertAcmeAuthz(Tx& tx, const AcmeAuthzRecord& authz);
Result<int64_t> InsertAcmeChallenge(Tx& tx, const AcmeChallengeRecord& challenge);

Result<std::optional<AcmeOrderRecord>> FindAcmeOrder(Tx& tx, int64_t id);
// Holds the order's row until the transaction ends, so that transactions that change its
// authorizations run one after another and each sees the others' (two validations finishing
// at once must not both find the other's authorization pending).
Result<void> LockAcmeOrder(Tx& tx, int64_t id);
// The order that got the certificate `serial`.
Result<std::optional<AcmeOrderRecord>> FindAcmeOrderBySerial(Tx& tx, std::string_view serial);
// Of the names `values` (identifier values: a wildcard's without "*."), those an account holds
// a valid authorization for, unexpired at `now`, as a certificate names them ("*." before a
// wildcard's). Searches the account's orders: for revocation (RFC 8555 7.6), which is rare.
Result<std::set<std::string>> AcmeAuthorizedNames(Tx& tx, int64_t account_id, const std::vector<std::string>& values,
                                                  int64_t now);
// Whether an order that is not invalid replaces the certificate `cert_id` (RFC 9773); one left
// pending or ready past its expiry (abandoned: it reads as invalid) does not count.
Result<bool> AcmeOrderReplaces(Tx& tx, std::string_view cert_id, int64_t now);
// The ids of an account's orders, oldest first, after `after_id`, at most `limit`.
Result<std::vector<int64_t>> ListAcmeOrderIds(Tx& tx, int64_t account_id, int64_t after_id, int limit);
// Moves an order from `from` to `to` (compare and set): false if it was not in `from`.
// `error` and `serial` are written when given.
Result<bool> SetAcmeOrderStatus(Tx& tx, int64_t id, std::string_view from, std::string_view to,
                                const std::optional<std::string>& error, const std::optional<std::string>& serial,
                                int64_t now);
// Orders by status, for /metrics.
Result<std::vector<std::pair<std::string, int64_t>>> CountAcmeOrders(Tx& tx);

Result<std::optional<AcmeAuthzRecord>> FindAcmeAuthz(Tx& tx, int64_t id);
Result<std::vector<AcmeAuthzRecord>> AcmeAuthzsOfOrder(Tx& tx, int64_t order_id);
// Compare and set, as for orders.
Result<bool> SetAcmeAuthzStatus(Tx& tx, int64_t id, std::string_view from, std::string_view to);

Result<std::optional<AcmeChallengeRecord>> FindAcmeChallenge(Tx& tx, int64_t id);
Result<std::vector<AcmeChallengeRecord>> AcmeChallengesOfAuthz(Tx& tx, int64_t authz_id);
// Compare and set; `validated_at` and `error` are written when given.
Result<bool> SetAcmeChallengeStatus(Tx& tx, int64_t id, std::string_view from, std::string_view to,
                                    std::optional<int64_t> validated_at, const std::optional<std::string>& error);
// The challenges still processing whose validation job (`job_kind`, deduplicated as
// "<job_kind>:<challenge id>") is dead: its last attempt ended without deciding them (a node
// died during it, or the store failed), with the job's last error.
Result<std::vector<std::pair<int64_t, std::string>>> AcmeChallengesOfDeadJobs(Tx& tx, std::string_view job_kind);

// An ACME profile kept in the store (acme.ca's "default" is not one unless replaced here).
struct AcmeProfileRecord {
  std::string name;
  std::string ca;
  std::string dns_suffixes;  // JSON array of strings
  std::string ip_ranges;     // JSON array of CIDR strings
  int64_t validity_days = 0;
  std::string key_types;  // JSON array of pki key type names
  bool eab_required = false;
  int64_t created_at = 0;
  int64_t updated_at = 0;
};

// Writes the profile; true if it is new.
Result<bool> PutAcmeProfile(Tx& tx, const AcmeProfileRecord& profile);
Result<std::optional<AcmeProfileRecord>> FindAcmeProfile(Tx& tx, std::string_view name);
Result<std::vector<AcmeProfileRecord>> ListAcmeProfiles(Tx& tx);
// True if it was there.
Result<bool> DeleteAcmeProfile(Tx& tx, std::string_view name);

// An external account binding's credentials.
struct AcmeEabRecord {
  std::string kid;
  std::string profile;
  std::string key_sealed;
  std::string created_by;
  int64_t created_at = 0;
  std::optional<int64_t> account_id;  // the account it bound, once used
  std::optional<int64_t> used_at;
};

Result<void> InsertAcmeEab(Tx& tx, const AcmeEabRecord& eab);
Result<std::optional<AcmeEabRecord>> FindAcmeEab(Tx& tx, std::string_view kid);
// Marks the binding used by `account_id`: false if it was used already.
Result<bool> UseAcmeEab(Tx& tx, std::string_view kid, int64_t account_id, int64_t now);

}  // namespace certfleet::store
