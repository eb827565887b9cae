#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/enum_names.h"
#include "core/result.h"
#include "store/store.h"

namespace certfleet::store {

// States of a host (W4).
enum class HostStatus {
  kEnrolling,  // added; its agent has not enrolled yet
  kActive,     // has a valid certificate
  kFailed,     // its last renewal failed
  kRevoked,    // its certificate was revoked; not renewed
};
inline constexpr std::string_view kHostStatusNames[] = {"enrolling", "active", "failed", "revoked"};
constexpr std::string_view HostStatusName(HostStatus status) { return EnumName(status, kHostStatusNames); }

// A host whose certificate certfleet-agent renews. Optional settings are null when the
// host uses the renewal.* default of the configuration.
struct HostRecord {
  std::string host_id;
  std::optional<std::string> cert_path;
  std::optional<std::string> key_path;
  std::optional<std::string> cacert_path;
  std::string sans = "[]";  // JSON array of DNS names and IP addresses
  std::optional<std::string> key_type;
  std::optional<std::string> profile;
  std::optional<int64_t> threshold_days;
  std::optional<std::string> reload_command;
  HostStatus status = HostStatus::kEnrolling;
  std::optional<std::string> serial;  // the current certificate's, hex
  std::optional<int64_t> not_after;   // its expiry, ms
  // When it is due for renewal, ms: expiry minus the threshold, or when the host was added
  // while it has no certificate (see migration 9).
  int64_t renew_at = 0;
  std::optional<int64_t> last_run;  // the id of its last renewal
  std::optional<std::string> last_error;
  int64_t created_at = 0;
  int64_t updated_at = 0;
};

// kAlreadyExists if a host of that id exists.
Result<void> InsertHost(Tx& tx, const HostRecord& h);
Result<std::optional<HostRecord>> FindHost(Tx& tx, std::string_view host_id);
// Replaces everything but host_id and created_at; false if there is no such host.
Result<bool> UpdateHost(Tx& tx, const HostRecord& h);
// The host and its enrollment tokens; its renewals stay, as history. False if there was none.
Result<bool> DeleteHost(Tx& tx, std::string_view host_id);

struct HostFilter {
  std::optional<HostStatus> status;
  std::optional<int64_t> due_before;  // renew_at at most this
  std::optional<std::string> after;   // the last host id of the previous page
  int limit = 100;
};
// In host id order.
Result<std::vector<HostRecord>> ListHosts(Tx& tx, const HostFilter& filter);
// Hosts not revoked whose renew_at is at most `now`, earliest first, through the renew_at
// index: what a renewal run takes.
Result<std::vector<HostRecord>> DueHosts(Tx& tx, int64_t now, int limit);

// Of `host_ids`, the known hosts, each with whether it has a certificate.
Result<std::map<std::string, bool>> HostsHaveCertificate(Tx& tx, const std::vector<std::string>& host_ids);

// A single-use enrollment token of a host's agent, by the SHA-256 of its secret.
Result<void> InsertHostToken(Tx& tx, std::string_view token_sha256, std::string_view host_id, int64_t expires_at,
                             int64_t now);
// The host an unspent, unexpired token is for, without spending it; nullopt otherwise.
Result<std::optional<std::string>> HostTokenOwner(Tx& tx, std::string_view token_sha256, int64_t now);
// Spends the token: the host it is for, or nullopt if it is unknown, spent or expired.
Result<std::optional<std::string>> SpendHostToken(Tx& tx, std::string_view token_sha256, int64_t now);
// The host a spent token was for; nullopt if it is unknown or not spent.
Result<std::optional<std::string>> SpentHostTokenOwner(Tx& tx, std::string_view token_sha256);

// A setting changed while serving (the settings table): nullopt if it was never set.
Result<std::optional<std::string>> GetSetting(Tx& tx, std::string_view name);
Result<void> PutSetting(Tx& tx, std::string_view name, std::string_view value, std::string_view actor, int64_t now);
// The CAs (fqdns) that issued hosts' current certificates, if active: those agents
// authenticate with (through the hosts table, so no scan of every certificate).
Result<std::vector<std::string>> HostCertificateIssuers(Tx& tx);

// A fleet enrollment credential (W4): one secret for many hosts' first enrollment.
struct EnrollmentCredential {
  int64_t id = 0;
  std::string token_sha256;
  std::string patterns = "[]";  // JSON array of host ids and patterns ('*' within a label)
  int64_t max_uses = 0;
  int64_t used = 0;
  int64_t expires_at = 0;
  std::optional<int64_t> revoked_at;
  std::optional<int64_t> last_used_at;
  std::string created_by;
  int64_t created_at = 0;
};

// Its id.
Result<int64_t> InsertEnrollmentCredential(Tx& tx, const EnrollmentCredential& c);
Result<std::optional<EnrollmentCredential>> FindEnrollmentCredential(Tx& tx, std::string_view token_sha256);
Result<std::optional<EnrollmentCredential>> GetEnrollmentCredential(Tx& tx, int64_t id);
// Newest first.
Result<std::vector<EnrollmentCredential>> ListEnrollmentCredentials(Tx& tx, std::optional<int64_t> before_id,
                                                                    int limit);
// Takes one use, in one statement: the uses taken so far, or nullopt if it is revoked,
// expired or spent.
Result<std::optional<int64_t>> UseEnrollmentCredential(Tx& tx, int64_t id, int64_t now);
// False if there is no such credential or it was revoked before.
Result<bool> RevokeEnrollmentCredential(Tx& tx, int64_t id, int64_t now);

}  // namespace certfleet::store
