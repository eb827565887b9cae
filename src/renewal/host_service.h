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
  Result<std::vector<store::HostRecord>> List(const store::HostFilter& filter);
  HostSettings SettingsOf(const store::HostRecord& host) const;
  // Makes the certificate `serial` the host's current one: its expiry, the renewal date
  // (expiry minus the host's threshold), status active unless revoked, no last error.
  void SetCertificate(store::HostRecord& host, const std::string& serial, int64_t not_after, int64_t now) const;
  // A single-use enrollment token for the host's agent, valid for token_ttl_ms: returned
  // once, stored only as its SHA-256.
  Result<std::string> CreateToken(std::string_view host_id, std::string_view actor);

  // Limits of the input, each with its reason.
  static constexpr size_t kMaxHostId = 253;    // a DNS name's length
  static constexpr size_t kMaxPath = 1024;     // well under PATH_MAX
  static constexpr size_t kMaxSans = 100;      // as many as a certificate reasonably carries
  static constexpr size_t kMaxCommand = 1024;  // a command line, not a script
  static constexpr int64_t kMaxThresholdDays = 365;

 private:
  // Stores a new token of the host, valid token_ttl; audited as `action`.
  Result<std::string> NewToken(store::Tx& tx, const std::string& host_id, int64_t now, std::string_view action,
                               std::string_view actor) const;

  store::Store& store_;
  const Clock& clock_;
  const Options options_;
};

// kNotFound naming the host (its id cut to kMaxHostId), whoever looked it up.
Error NoSuchHost(std::string_view host_id);

// The job that revokes a host's superseded certificate once its grace period has ended
// (RenewalService runs it), and its enqueuing, once per serial.
inline constexpr std::string_view kRevokeSupersededJob = "renewal.revoke";
Result<void> RevokeAfter(store::Tx& tx, const std::string& serial, int64_t run_at, int64_t now);

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
