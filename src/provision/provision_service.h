#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "core/clock.h"
#include "core/rate_limiter.h"
#include "core/result.h"
#include "issuance/issuer.h"
#include "pki/csr.h"
#include "registry/registry.h"
#include "store/batched_lookup.h"
#include "store/devices_repo.h"
#include "store/store.h"

namespace certfleet::provision {

// A device's certificate as provisioning answers it.
struct Provisioned {
  store::CertificateRecord record;
  std::string chain_pem;   // the issuers up to the root
  std::string thing_name;  // the device id
  std::string endpoint;    // from the provisioning template
};

// A signed URL that gives a certificate's PEM chain until it expires.
struct RetrieveLink {
  std::string url;
  int64_t expires_at = 0;  // ms since the epoch
};
enum class LinkCheck { kValid, kTampered, kExpired };

struct Rotated {
  issuance::Issued created;  // the new intermediate
  int templates_moved = 0;   // provisioning templates that now sign with it
};

// W2's provisioning: a device that was registered with its public key sends a CSR and gets
// a certificate from its batch's provisioning template; the registry is written in the
// certificate's transaction. Also rotation (superseded certificates revoked after a grace
// period), delayed retrieval by signed URL, per-device and per-address rate limits and
// intermediate CA rotation. Thread-safe.
class ProvisionService {
 public:
  struct Options {
    // Before a replaced certificate is revoked: a day, for the device to switch over
    // (provision.supersede_grace_hours).
    std::chrono::hours supersede_grace{24};
    // How long a retrieval URL works: a day, as a factory line fetches its certificates
    // the same shift (provision.retrieve_ttl_seconds).
    std::chrono::seconds retrieve_ttl{86400};
    std::string public_url;                  // base of retrieval URLs
    std::string url_key;                     // HMAC key that signs them
    int64_t device_rate_per_minute = 10;     // 0: no limit
    int64_t address_rate_per_minute = 6000;  // a factory provisions through one address
    // Where provisioning goes on once its device is read (signing, the write handed over): the
    // HTTP server's threads. Null: on the thread that read the device.
    store::BatchedLookup<store::DeviceRecord>::Post post;
  };

  ProvisionService(store::Store& store, issuance::Issuer& issuer, registry::Registry& registry, const Clock& clock,
                   Options options);

  // Rate limits, checked before any work: nullopt if the request may go on, else the
  // seconds after which it may be tried again.
  std::optional<int64_t> AdmitAddress(std::string_view address) { return by_address_.Take(address); }
  std::optional<int64_t> AdmitDevice(std::string_view device_id) { return by_device_.Take(device_id); }

  // The CSR (PEM or DER) read and its signature verified, with exactly one common name that
  // is a valid device id; kInvalidArgument otherwise.
  static Result<pki::Csr> ReadCsr(std::string_view data);

  // The authorizer, then issuance: kNotFound if the CSR's device is not registered,
  // kPermissionDenied if it is disabled or the CSR's key is not the registered one,
  // kFailedPrecondition if no provisioning template applies. `done` runs as for
  // CaService::CreateAsync. The device is read with those of concurrent requests, in one
  // statement, off the caller's thread.
  void ProvisionAsync(pki::Csr csr, std::function<void(Result<Provisioned>)> done);
  // The same, waiting: not on a thread of Options::post's executor, which it would wait for.
  Result<Provisioned> Provision(pki::Csr csr);

  RetrieveLink MakeRetrieveLink(std::string_view serial) const;
  // `expires` (seconds since the epoch) and `signature` as the URL carries them.
  LinkCheck CheckRetrieveLink(std::string_view serial, std::string_view expires, std::string_view signature) const;
  // The certificate and its issuers up to the root, PEM.
  Result<std::string> ChainPem(std::string_view serial);

  // Revokes the superseded certificates whose grace period has ended; returns how many.
  Result<int> RevokeDueSuperseded();
  // Revokes the device's active certificates (cessationOfOperation; their CAs' CRLs are
  // re-signed), for a device disabled or deleted for good; returns their serials.
  Result<std::vector<std::string>> RevokeDevice(std::string_view device_id, std::string_view actor);

  // CaService::Rotate, and the provisioning templates of the old CA moved to the new one in
  // the same transaction. `new_fqdn` empty: the next generation of the old name.
  Result<Rotated> RotateCa(std::string_view fqdn, std::string_view new_fqdn, std::string_view actor);

  static constexpr std::string_view kRevokeSupersededJob = "provision.revoke_superseded";
  static constexpr std::string_view kActor = "system:provision";  // how the audit log names the device's own request

 private:
  std::string Signature(std::string_view serial, std::string_view expires) const;
  // The batch's template (or the default one; null if none), remembered for
  // kTemplateCacheMs, or until this process changes a template: a provisioning burst reads
  // it once, not once per device.
  Result<std::shared_ptr<const registry::ProvisioningTemplate>> TemplateFor(const std::string& batch);
  // ProvisionAsync once the device was read.
  void Authorized(const std::shared_ptr<const pki::Csr>& csr, Result<std::optional<store::DeviceRecord>> device,
                  const std::function<void(Result<Provisioned>)>& done);

  // How long a template is remembered: other nodes' changes to templates reach provisioning
  // within this.
  static constexpr int64_t kTemplateCacheMs = 1000;
  static constexpr size_t kMaxCachedBatches = 10'000;

  store::Store& store_;
  issuance::Issuer& issuer_;
  registry::Registry& registry_;
  const Clock& clock_;
  const Options options_;
  RateLimiter by_address_;
  RateLimiter by_device_;
  struct CachedTemplate {
    std::shared_ptr<const registry::ProvisioningTemplate> tmpl;  // null: no template applies
    int64_t fetched_at = 0;
    uint64_t changes = 0;  // registry_.TemplateChanges() when read
  };
  std::mutex mu_;
  std::map<std::string, CachedTemplate, std::less<>> templates_;  // by batch
  // Last: its thread, which may run Authorized, stops before the rest goes.
  store::BatchedLookup<store::DeviceRecord> devices_;
};

}  // namespace certfleet::provision
