#pragma once

#include <boost/json/object.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "store/hosts_repo.h"
#include "store/store.h"

namespace certfleet::renewal {

// What a host is registered with (POST /v1/hosts); what is left unset follows the defaults.
struct HostSpec {
  std::string host_id;
  std::optional<std::string> cert_path;
  std::optional<std::string> key_path;
  std::optional<std::string> cacert_path;
  std::vector<std::string> sans;
  std::optional<std::string> key_type;
  std::optional<std::string> profile;
  std::optional<int64_t> renewal_threshold_days;
  std::optional<std::string> reload_command;
};

// A host's settings with the defaults filled in, as its agent and the renewal use them.
struct HostSettings {
  std::vector<std::string> sans;  // DNS names and IP addresses: the host's own (no default)
  std::string cert_path;          // folder of {host_id}.crt
  std::string key_path;           // folder of {host_id}.key
  std::string cacert_path;        // folder of ca_chain_certificate.crt
  std::string key_type;
  std::string profile;
  int64_t threshold_days = 0;
  std::optional<std::string> reload_command;
};

// What a fleet enrollment credential is minted with (POST /v1/enrollment-credentials).
struct CredentialSpec {
  // Host ids and patterns: '*' matches any run of characters within one label
  // ("web-*.example.com" matches web-01.example.com, not web-01.eu.example.com).
  std::vector<std::string> hosts;
  int64_t uses = 0;  // how many hosts it may enroll
  std::chrono::seconds ttl{0};
};

// A credential just minted: its secret is returned once and stored only as its SHA-256.
struct MintedCredential {
  store::EnrollmentCredential credential;
  std::string secret;
};

// What became of one row of a bulk registration (POST /v1/hosts with a list).
enum class RowOutcome { kCreated, kUnchanged, kRejected };
inline constexpr std::string_view kRowOutcomeNames[] = {"created", "unchanged", "rejected"};
struct RowResult {
  std::string host_id;  // empty when the row did not name one
  RowOutcome outcome = RowOutcome::kRejected;
  std::string error;  // why it was rejected
};

// The hosts of W4 whose certificates certfleet-agent renews, and their agents' enrollment
// tokens. Every change is audited. Thread-safe.
class HostService {
 public:
  struct Options {
    HostSettings defaults;
    // How long an enrollment token may wait for its agent: a day, for a host being set up
    // (renewal.token_ttl_hours).
    std::chrono::hours token_ttl{24};
  };

  HostService(store::Store& store, const Clock& clock, Options options)
      : store_(store), clock_(clock), options_(std::move(options)) {}

  // kInvalidArgument naming the field for bad input, kAlreadyExists for a known host id.
  Result<store::HostRecord> Create(const HostSpec& spec, std::string_view actor);
  // Registers many hosts in one transaction, each row on its own: created, unchanged (the
  // host exists with these very settings) or rejected with the reason (bad input, or the
  // host exists with other settings). A row that could not be read comes as its error.
  // kInvalidArgument for more than kMaxBulkHosts rows.
  Result<std::vector<RowResult>> CreateMany(const std::vector<Result<HostSpec>>& rows, std::string_view actor);
  // The record of a new host registered as `spec`, checked as Create checks it (its id in
  // lower case): enrolling, due at once.
  static Result<store::HostRecord> NewRecord(const HostSpec& spec, int64_t now);
  // Held until `tx` ends: the single-host writes of a host's row and its renewal (settings,
  // reactivation, revocation, the agent's reports, the certificate it is seen using, the
  // pump's timeouts) take turns among nodes (PostgreSQL; SQLite's writers take turns anyway),
  // so that none writes back a row another changed meanwhile.
  static Result<void> Lock(store::Tx& tx, std::string_view host_id);
  // Inserts a new host and audits it. kAlreadyExists naming it if it exists.
  static Result<void> Insert(store::Tx& tx, const store::HostRecord& host, std::string_view actor, int64_t now);
  // The host's settings as `change` makes them from its current ones (SpecOf), checked as
  // Create checks them, in the transaction that writes them; the next renewal uses them. A
  // new threshold moves the renewal date of a host with a certificate. The host id cannot
  // change. kNotFound for an unknown host.
  using Change = std::function<Result<HostSpec>(const HostSpec& current)>;
  Result<store::HostRecord> Update(std::string_view host_id, const Change& change, std::string_view actor);
  // What the host was registered with: its own settings, unset where it follows the defaults.
  static HostSpec SpecOf(const store::HostRecord& host);
  // Gives a revoked or failed host a new start: enrolling again, due at once, and a new
  // single-use enrollment token for its agent (returned once). kFailedPrecondition for a
  // host that is enrolling or active.
  Result<std::string> Reactivate(std::string_view host_id, std::string_view actor);
  // kNotFound for an unknown host.
  Result<store::HostRecord> Get(std::string_view host_id);
  Result<std::optional<store::HostRecord>> Find(std::string_view host_id);
  Result<std::vector<store::HostRecord>> List(const store::HostFilter& filter);
  HostSettings SettingsOf(const store::HostRecord& host) const;
  // Makes the certificate `serial` the host's current one: its expiry, the renewal date
  // (expiry minus the host's threshold), status active unless revoked, no last error.
  void SetCertificate(store::HostRecord& host, const std::string& serial, int64_t not_after, int64_t now) const;
  // A single-use enrollment token for the host's agent, valid for token_ttl_ms: returned
  // once, stored only as its SHA-256.
  Result<std::string> CreateToken(std::string_view host_id, std::string_view actor);

  // Mints a fleet enrollment credential (audited). kInvalidArgument for bad patterns, a use
  // count of 1 to kMaxCredentialUses or a ttl past kMaxCredentialTtl.
  Result<MintedCredential> CreateCredential(const CredentialSpec& spec, std::string_view actor);
  // Newest first, without their secrets.
  Result<std::vector<store::EnrollmentCredential>> ListCredentials(std::optional<int64_t> before_id, int limit);
  // Refuses its further uses; the hosts it enrolled stay. kNotFound for an unknown id;
  // a credential revoked before is returned as it is.
  Result<store::EnrollmentCredential> RevokeCredential(int64_t id, std::string_view actor);

  // Limits of the input, each with its reason.
  static constexpr size_t kMaxHostId = 253;    // a DNS name's length
  static constexpr size_t kMaxPath = 1024;     // well under PATH_MAX
  static constexpr size_t kMaxSans = 100;      // as many as a certificate reasonably carries
  static constexpr size_t kMaxCommand = 1024;  // a command line, not a script
  static constexpr int64_t kMaxThresholdDays = 365;
  static constexpr size_t kMaxBulkHosts = 10000;  // one configuration management inventory
  static constexpr size_t kMaxCredentialHosts = 1000;
  static constexpr int64_t kMaxCredentialUses = 100000;
  // A credential is for one rollout, not a standing secret.
  static constexpr std::chrono::seconds kMaxCredentialTtl{int64_t{30} * 86400};

 private:
  // Stores a new token of the host, valid token_ttl; audited as `action`.
  Result<std::string> NewToken(store::Tx& tx, const std::string& host_id, int64_t now, std::string_view action,
                               std::string_view actor) const;

  store::Store& store_;
  const Clock& clock_;
  const Options options_;
};

// Whether `host_id` matches `pattern` (see CredentialSpec::hosts).
bool MatchesHostPattern(std::string_view pattern, std::string_view host_id);
// Why `credential` cannot enroll `host_id` at `now` (revoked, expired, spent, not one of its
// hosts): kPermissionDenied saying which.
Result<void> CheckCredential(const store::EnrollmentCredential& credential, std::string_view host_id, int64_t now);

// kNotFound naming the host (its id cut to kMaxHostId), whoever looked it up.
Error NoSuchHost(std::string_view host_id);

// The settings of `spec` (its host_id aside) as POST /v1/hosts takes them, null where the
// host follows the defaults.
boost::json::object SpecJson(const HostSpec& spec);

// The checks HostSpec's fields get, for the configuration's defaults too: an absolute path
// with no ".." segment, a key type certfleet makes, host or client, a threshold of 1-365 days.
Result<void> CheckPath(std::string_view field, std::string_view path);
Result<void> CheckKeyType(std::string_view key_type);
Result<void> CheckProfile(std::string_view profile);
Result<void> CheckThresholdDays(int64_t days);

}  // namespace certfleet::renewal
