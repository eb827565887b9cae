#pragma once

#include <atomic>
#include <boost/json/object.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/clock.h"
#include "core/read_cache.h"
#include "core/result.h"
#include "enroll/profiles.h"
#include "issuance/issuer.h"
#include "pki/csr.h"
#include "registry/registry.h"
#include "store/enroll_repo.h"
#include "store/store.h"

namespace certfleet::enroll {

// What an enrolling client presented besides its request.
struct Credentials {
  std::vector<std::string> tls_certificates;  // DER, its own first, then the chain it sent; unverified
  // An enrollment secret's id and the secret (EST: HTTP Basic user and password).
  std::optional<std::pair<std::string, std::string>> secret;
  // An enrollment secret whose MAC the protocol verified already (CMP): its id.
  std::optional<std::string> verified_secret_id;
  std::string channel_binding;  // of the TLS connection (tls-unique or tls-exporter); empty: none
};

enum class Operation {
  kEnroll,        // a first certificate (EST simpleenroll, CMP ir/cr/p10cr)
  kReenroll,      // a new certificate for the device whose certificate authenticates (EST simplereenroll, CMP kur)
  kServerKeygen,  // a first certificate with a key certfleet makes (EST serverkeygen)
};

struct EnrollRequest {
  std::string label;  // the profile
  Operation operation = Operation::kEnroll;
  std::string csr;  // DER or PEM
  Credentials credentials;
  std::string protocol;  // "est" or "cmp", for the audit log
  // Instead of `csr`: a request the protocol read and checked the proof of possession of (a
  // CMP certificate template).
  std::optional<pki::Csr> checked;
};

struct Enrolled {
  store::CertificateRecord record;
  std::string chain_pem;                       // the issuers up to the root
  std::optional<std::string> private_key_pem;  // kServerKeygen only; never stored
  std::optional<int64_t> pending;              // set: waiting for approval (this request id), nothing issued
  // Issued for this request before (an approved request asked again) and handed back: whoever
  // asks again gets it, but cannot reject it (CMP certConf) to have it revoked.
  bool handed_back = false;
};

// A newly minted one-time secret: `secret` is shown this once.
struct MintedSecret {
  store::EnrollSecretRecord record;
  std::string secret;
};

// Enrollment by standard protocols (EST, CMP) bound to the device registry: enrollment
// profiles, one-time secrets, who may enroll as which device, issuance through the profile's
// provisioning template (the thing, groups and policies written as W2 provisioning does),
// supersession on re-enrollment, and requests held for approval. Thread-safe.
class EnrollService {
 public:
  struct Options {
    std::string master_key;  // seals the secrets
    // Before a replaced certificate is revoked (as provision.supersede_grace_hours).
    std::chrono::hours supersede_grace{24};
    // What a client waiting for approval is told to wait before asking again.
    std::chrono::seconds retry_after{60};
  };

  EnrollService(store::Store& store, issuance::Issuer& issuer, registry::Registry& registry, const Clock& clock,
                Options options);

  // kNotFound if there is no such profile.
  Result<Profile> FindProfile(std::string_view label);
  // The same as the protocols see it (remembered for a second), without the profile.
  Result<void> Serves(std::string_view label);
  // Whether `chain`'s first certificate (DER, the leaf first), a signed CMP message's signer,
  // is one certfleet knows: issued here, imported from a supplier's manifest, or vouched for
  // by the factory anchors of profile `label` (when it takes factory certificates). Anyone
  // else's signature proves nothing, so such a message is refused before anything is written.
  Result<bool> KnownSigner(std::string_view label, const std::vector<std::string>& chain);
  Result<std::vector<Profile>> ListProfiles();
  struct PutAnswer {
    Profile profile;
    bool created = false;
  };
  // Creates or replaces a profile; its template must exist. Audited as enroll.profile.put.
  Result<PutAnswer> PutProfile(std::string_view label, const boost::json::object& body, std::string_view actor);
  Result<void> DeleteProfile(std::string_view label, std::string_view actor);

  // `count` secrets of `profile`, each for `device_id` (count 1) or for one new device of
  // `batch`, valid for `ttl`. Audited as enroll.secret.create.
  Result<std::vector<MintedSecret>> CreateSecrets(std::string_view profile, const std::optional<std::string>& device_id,
                                                  const std::optional<std::string>& batch, int count,
                                                  std::chrono::seconds ttl, std::string_view actor);
  Result<std::vector<store::EnrollSecretRecord>> ListSecrets(const std::optional<std::string>& profile,
                                                             std::string_view after, int limit);
  // kNotFound if there is no such unused secret.
  Result<void> RevokeSecret(std::string_view id, std::string_view actor);
  // The secret itself, if `id` is a secret of `profile` neither revoked nor expired (used or
  // not: a message of a transaction it began, or a replay that is then refused for what it
  // is, verifies with it); nullopt otherwise. CMP checks MACs with it.
  Result<std::optional<std::string>> MacSecret(std::string_view profile, std::string_view id);

  // The issuing CA of the profile and its issuers up to the root, PEM, the CA first.
  Result<std::string> CaCertificatesPem(std::string_view label);

  // Authenticates the client as the profile allows, then issues (or holds the request for
  // approval). kNotFound: no such profile or device; kUnauthenticated: no credential the
  // profile accepts; kPermissionDenied: a credential that does not allow this certificate;
  // kInvalidArgument: a bad CSR. `done` runs once, on the calling thread or the store's.
  void EnrollAsync(EnrollRequest request, std::function<void(Result<Enrolled>)> done);

  // Revokes the certificate a device presents as its own (`certificate_der`, a CMP rr signed
  // with it): one certfleet issued to a device, still active, whose serial is `serial`.
  // kPermissionDenied otherwise. `reason` is an RFC 5280 reason code.
  Result<void> RevokePresented(std::string_view certificate_der, std::string_view serial, int reason);

  // Revokes a certificate the client refused in its confirmation (CMP certConf).
  Result<void> RevokeRejected(std::string_view serial);
  // CMP certificates whose certConf did not come in time (store::UnconfirmedCmpCertificates):
  // each is taken from the wait first (a certConf arriving then is refused), then revoked as a
  // rejected one; one that could not be revoked waits again for the next run. How many.
  Result<int> RevokeUnconfirmed();
  // The scheduled job that runs RevokeUnconfirmed.
  static constexpr std::string_view kUnconfirmedJob = "enroll.cmp_unconfirmed";

  // Whether the request `request_der` (a CSR's DER, or Csr::der of a checked request) waits
  // for approval under the profile.
  Result<bool> IsPending(std::string_view label, std::string_view request_der);

  Result<std::vector<store::EnrollRequestRecord>> ListRequests(const std::optional<std::string>& state,
                                                               std::optional<int64_t> before_id, int limit);
  // Decides a pending request: the client's next try gets its certificate, or a refusal.
  Result<store::EnrollRequestRecord> Decide(int64_t id, bool approve, std::string_view actor);

  std::chrono::seconds retry_after() const { return options_.retry_after; }

  static constexpr std::string_view kActor = "system:enroll";

 private:
  // Who the client proved to be, and what the issuing transaction checks again.
  struct Authorized {
    Authorized() = default;
    Authorized(std::string device, AuthWay w) : device_id(std::move(device)), way(w) {}
    std::string device_id;
    AuthWay way = AuthWay::kRegisteredKey;
    std::optional<std::string> secret_id;         // used in the issuing transaction
    std::string key_sha256;                       // kRegisteredKey: the registered key, checked again
    std::optional<std::string> presented_serial;  // kReenroll: still the thing's current certificate
    bool new_device = false;                      // a batch's secret or a manufacturer CA: no such thing yet
    std::optional<int64_t> approved_request;      // an operator approved the request it made earlier
  };
  // A profile with its template, as enrollment serves it.
  struct Served {
    Profile profile;
    registry::ProvisioningTemplate tmpl;
  };
  // The profile `label` and its template (kNotFound if either is missing), remembered for
  // kCacheMs or until this process changes a profile or template: an enrollment burst reads
  // them once, not once per device.
  Result<std::shared_ptr<const Served>> ServedProfile(std::string_view label);
  Result<Authorized> Authenticate(const Served& served, const EnrollRequest& request, const pki::Csr& csr);
  // The device certificate a client presents (DER), if certfleet issued it and it is active
  // and unexpired (and its CAs are, unless `for_revocation`: a device may revoke its own
  // certificate under a revoked CA): kUnauthenticated or kPermissionDenied otherwise.
  Result<store::CertificateRecord> PresentedDeviceCertificate(std::string_view der, bool for_revocation = false);
  // Authenticate's checks again, where they count: in the transaction that issues (the device
  // may have been disabled, re-keyed or enrolled meanwhile); uses the secret.
  static Result<void> CheckAgain(store::Tx& tx, const Authorized& who, int64_t now);
  // Held until `tx` ends: the writes about one device (a new device's first certificate, a
  // re-enrollment, a request kept for approval) take turns among nodes (PostgreSQL; SQLite's
  // writers take turns anyway), so that each sees what the one before committed.
  static Result<void> LockDevice(store::Tx& tx, std::string_view device_id);
  // RFC 7030 3.5: a CSR's challengePassword, when there is one and the connection has a
  // channel binding, must be that binding (base64).
  static Result<void> CheckBinding(const EnrollRequest& request, const pki::Csr& csr);
  // kInvalidArgument for a serverkeygen CSR that asks for the key encrypted to a key of its
  // own (RFC 7030 4.4.1.1/4.4.1.2), which certfleet does not do.
  static Result<void> KeyGoesOverTls(const pki::Csr& csr);
  // Keeps the authenticated request for an operator's decision (using its secret) and
  // answers it pending.
  void Hold(const Profile& profile, const std::string& protocol, bool template_request, const pki::Csr& csr,
            const Authorized& who, const std::function<void(Result<Enrolled>)>& done);

  // How long a profile and its template are remembered: other nodes' changes reach
  // enrollment within this.
  static constexpr int64_t kCacheMs = 1000;
  static constexpr size_t kMaxCachedProfiles = 1000;

  store::Store& store_;
  issuance::Issuer& issuer_;
  registry::Registry& registry_;
  const Clock& clock_;
  const Options options_;
  // By label; its changes are registry_.TemplateChanges() + profile_changes_.
  ReadCache<std::shared_ptr<const Served>> cache_{kCacheMs, kMaxCachedProfiles};
  std::atomic<uint64_t> profile_changes_{0};
};

}  // namespace certfleet::enroll
