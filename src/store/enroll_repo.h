#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "store/store.h"

namespace certfleet::store {

// An EST/CMP enrollment profile, by the label of its URLs.
struct EnrollProfileRecord {
  std::string label;
  std::string template_name;    // the provisioning template that issues
  std::string auth;             // JSON array of authentication ways
  std::string factory_anchors;  // PEM; may be empty
  std::string key_type;         // of server-generated keys
  bool approval = false;        // an operator approves each request
  int64_t created_at = 0;
  int64_t updated_at = 0;
};

// Writes the profile; true if it is new.
Result<bool> PutEnrollProfile(Tx& tx, const EnrollProfileRecord& profile);
Result<std::optional<EnrollProfileRecord>> FindEnrollProfile(Tx& tx, std::string_view label);
Result<std::vector<EnrollProfileRecord>> ListEnrollProfiles(Tx& tx);
// True if it was there.
Result<bool> DeleteEnrollProfile(Tx& tx, std::string_view label);

// A one-time enrollment secret.
struct EnrollSecretRecord {
  std::string id;
  std::string profile;
  std::optional<std::string> device_id;  // the device it enrolls, or
  std::optional<std::string> batch;      // any one new device of this batch
  std::string secret_sealed;
  int64_t expires_at = 0;
  std::optional<int64_t> used_at;
  std::optional<std::string> used_by;  // the device it enrolled
  std::optional<int64_t> revoked_at;
  std::string created_by;
  int64_t created_at = 0;
};

// Deferred (Tx::ExecDeferred), so that a batch of secrets is one round trip.
Result<void> InsertEnrollSecret(Tx& tx, const EnrollSecretRecord& secret);
Result<std::optional<EnrollSecretRecord>> FindEnrollSecret(Tx& tx, std::string_view id);
// Marks the secret used by `device_id`: false if it was used, revoked or expired meanwhile.
Result<bool> UseEnrollSecret(Tx& tx, std::string_view id, std::string_view device_id, int64_t now);
// False if there is no such secret or it was used or revoked already.
Result<bool> RevokeEnrollSecret(Tx& tx, std::string_view id, int64_t now);
// Revokes the profile's unused secrets; how many.
Result<int64_t> RevokeEnrollSecretsOf(Tx& tx, std::string_view profile, int64_t now);
// In id order after `after`, of one profile when given.
Result<std::vector<EnrollSecretRecord>> ListEnrollSecrets(Tx& tx, const std::optional<std::string>& profile,
                                                          std::string_view after, int limit);

// An enrollment request waiting for (or given) an operator's decision.
struct EnrollRequestRecord {
  int64_t id = 0;
  std::string profile;
  std::string csr_sha256;  // hex, of the CSR's DER
  std::string device_id;
  std::string csr_pem;
  std::string state;  // pending, approved, rejected, issued
  std::optional<std::string> serial;
  int64_t created_at = 0;
  std::optional<int64_t> decided_at;
  std::optional<std::string> decided_by;
  // How the device authenticated when it asked: checked again when the approved request is issued.
  bool new_device = false;                      // a batch's secret or a manufacturer CA: no such thing yet
  std::optional<std::string> presented_serial;  // a re-enrollment: the certificate it presented
};

// The request's id; kAlreadyExists if the profile has one for this CSR.
Result<int64_t> InsertEnrollRequest(Tx& tx, const EnrollRequestRecord& request);
Result<std::optional<EnrollRequestRecord>> FindEnrollRequest(Tx& tx, int64_t id);
// The id of the device's request waiting (under any profile), if there is one.
Result<std::optional<int64_t>> PendingEnrollRequestOf(Tx& tx, std::string_view device_id);
Result<std::optional<EnrollRequestRecord>> FindEnrollRequestByCsr(Tx& tx, std::string_view profile,
                                                                  std::string_view csr_sha256);
// Moves the request from `from` to `to` (with who decided, or the serial issued): false if it
// was not in `from`.
Result<bool> SetEnrollRequestState(Tx& tx, int64_t id, std::string_view from, std::string_view to,
                                   const std::optional<std::string>& decided_by,
                                   const std::optional<std::string>& serial, int64_t now);
// Newest first, of one state when given.
Result<std::vector<EnrollRequestRecord>> ListEnrollRequests(Tx& tx, const std::optional<std::string>& state,
                                                            std::optional<int64_t> before_id, int limit);

// Records a new CMP transaction ID (hex): false if it was seen already. Forgets those seen
// before `forget_before`.
Result<bool> BeginCmpTransaction(Tx& tx, std::string_view transaction_id, int64_t now, int64_t forget_before);
// The certificate `serial` the transaction answered waits for its certConf until `confirm_by`.
Result<void> AwaitCmpConfirmation(Tx& tx, std::string_view transaction_id, std::string_view serial, int64_t confirm_by);
// The certificate waits no more (confirmed, rejected, or taken by a sweep), in whichever
// transaction answered it: false if it was not waiting.
Result<bool> EndCmpConfirmation(Tx& tx, std::string_view serial);
struct UnconfirmedCmpCertificate {
  std::string transaction_id;
  std::string serial;
  int64_t confirm_by = 0;
};
// Those whose confirm_by is before `now`, the longest overdue first, at most `limit`.
Result<std::vector<UnconfirmedCmpCertificate>> UnconfirmedCmpCertificates(Tx& tx, int64_t now, int limit);

}  // namespace certfleet::store
