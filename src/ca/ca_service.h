#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "blob/blob_store.h"
#include "core/clock.h"
#include "core/result.h"
#include "pki/csr.h"
#include "pki/key_backend.h"
#include "pki/profile.h"
#include "store/certificates_repo.h"
#include "store/group_commit.h"
#include "store/store.h"

namespace certfleet::ca {

// What a caller asks to be issued (the API's request bodies).
struct CreateRequest {
  pki::CertType type = pki::CertType::kServer;
  std::string fqdn;                        // empty for devices (made from a UUID)
  std::optional<std::string> parent_fqdn;  // defaults as in the seed
  std::vector<std::string> sans;
  std::optional<std::string> csr_pem;  // server and device only
  std::shared_ptr<pki::Csr> csr;       // a CSR read already, instead of csr_pem; issuance takes its key
  std::string country;
  std::string state;
  std::string organization;
  std::optional<int64_t> validity_days;
  std::optional<std::string> key_type;                 // when certfleet makes the key
  pki::ServerUsage usage = pki::ServerUsage::kServer;  // what a server certificate authenticates
  // The certificate's CN and its name in the inventory, from which no DNS name is made: a
  // W2 device's id (instead of a UUID under the parent; type device) or a W4 host's id (type
  // server with a usage other than kServer, instead of an fqdn). Needs a CSR and the parent.
  std::string subject_id;
  // The caller retires the subject's active certificate itself (W4 renewal revokes it after
  // a grace period), so the new one may overlap it; otherwise a second active certificate
  // of a server name is refused.
  bool overlaps_active = false;
  // More writes that belong with the certificate: run in its transaction after its row is
  // written; a failure refuses the certificate. Run again if the transaction is retried.
  std::function<Result<void>(store::Tx&, const store::CertificateRecord&)> also;
  // How the certificate's audit entry names the change (default certificate.create), and
  // more fields for its details: a caller whose `also` belongs to the same change (W2's
  // provisioning) records it in this one entry.
  std::string audit_action;
  std::vector<std::pair<std::string, std::string>> audit_details;
};

struct Created {
  store::CertificateRecord record;
  std::string chain_pem;                       // the issuers up to the root
  std::optional<std::string> private_key_pem;  // only when certfleet made a leaf's key; never stored
  bool validity_clamped = false;
};

struct Revoked {
  store::CertificateRecord record;
  int newly_revoked = 0;  // this one plus, with cascade, those below it
};

// The CA hierarchy: issuance under the profiles, the inventory, revocation, CRLs and the
// OCSP responder. Every change commits with its inventory rows, audit entry and event in
// one transaction. Thread-safe.
class CaService {
 public:
  struct Options {
    std::string public_url;  // base of the CRL and OCSP URLs put in certificates
    int64_t crl_validity_ms = int64_t{24} * 3600 * 1000;
    int64_t ocsp_validity_ms = int64_t{3600} * 1000;
    // Nonce-less OCSP responses kept, oldest evicted first: a response is 0.5 to 2 KiB, so
    // the default holds the hot part of a large fleet in a few tens of MiB at most.
    size_t ocsp_cache_entries = 20'000;
  };

  CaService(store::Store& store, pki::KeyBackend& keys, const Clock& clock, Options options);

  Result<Created> Create(const CreateRequest& request, std::string_view actor);
  // The same without waiting: `done` gets the result, on the calling thread when the request
  // is refused before anything is written, else on the store's committing thread (keep it
  // short there: hand the result to another thread).
  void CreateAsync(const CreateRequest& request, std::string_view actor, std::function<void(Result<Created>)> done);
  Result<std::vector<store::CertificateRecord>> List(const store::CertificateFilter& filter);
  // By serial (hex), then by fqdn (the newest certificate with it).
  Result<store::CertificateRecord> Get(std::string_view id);
  Result<std::string> ChainOf(const store::CertificateRecord& record);
  // A new intermediate under the same parent as the intermediate `fqdn`, with its subject's
  // country, state and organization, to take over its issuing (`request.also` moves what
  // pointed at it). `request.fqdn` names the new one; empty: the next generation of the old
  // name (iot.example.com -> iot-g2.example.com -> iot-g3.example.com). The old CA keeps
  // validating until it is revoked.
  Result<Created> Rotate(std::string_view fqdn, CreateRequest request, std::string_view actor);
  // Idempotent: revoking a revoked certificate changes nothing. `cascade` on a CA revokes
  // every active certificate below it too. CRLs of the affected CAs are re-signed.
  Result<Revoked> Revoke(std::string_view serial, std::string_view reason, bool cascade, std::string_view actor);
  // The CA's current CRL (DER), re-signed first if it is due.
  Result<std::string> Crl(std::string_view ca_fqdn);
  // Re-signs the CRLs past half their validity; returns how many. Run by a schedule.
  Result<int> RefreshDueCrls();
  // An OCSP response (DER) to a DER request, an error response if it cannot be answered.
  std::string Ocsp(std::string_view request_der);

  // Writes the CA's current CRL to `blob` as crl/<fqdn>.crl (as the seed's CRL bucket) and
  // announces it with a crl/published event. Every re-signed CRL queues a job that does it.
  Result<void> PublishCrl(std::string_view ca_fqdn, blob::BlobStore& blob);

  static constexpr std::string_view kCrlRefreshJob = "ca.crl_refresh";
  static constexpr std::string_view kCrlPublishJob = "ca.crl_publish";  // payload {"ca": fqdn}
  static constexpr int kPublishAttempts = 20;

 private:
  // CreateAsync up to handing the write to the committer (which then owns `done`); an error
  // means nothing was handed over and `done` is still the caller's.
  Result<void> Prepare(const CreateRequest& request, std::string_view actor,
                       std::function<void(Result<Created>)>& done);
  // An issuing CA as issuance needs it. Cached by fqdn: a CA's certificate and chain never
  // change, and its status is checked again in the transaction that stores a new certificate.
  struct Parent {
    store::CaRecord ca;
    store::CertificateRecord cert;
    std::shared_ptr<X509> x509;
    std::string chain_pem;  // the parent's own certificate and its issuers up to the root
  };
  Result<std::shared_ptr<const Parent>> FindParent(const std::string& parent_fqdn);
  Result<std::shared_ptr<X509>> CaCertificate(const store::CertificateRecord& record);
  Result<void> ResignCrl(store::Tx& tx, std::string_view ca_fqdn, int64_t now);
  void CacheOcsp(std::string key, const std::string& der, int64_t now);
  std::string CrlUrl(std::string_view ca_fqdn) const;

  store::Store& store_;
  pki::KeyBackend& keys_;
  const Clock& clock_;
  const Options options_;

  std::mutex mu_;
  std::map<std::string, std::shared_ptr<X509>, std::less<>> ca_certs_;         // parsed CA certificates by serial
  std::map<std::string, std::shared_ptr<const Parent>, std::less<>> parents_;  // by fqdn; cleared on revocation
  // Nonce-less OCSP responses about known certificates, by their requests' CertIDs.
  struct CachedOcsp {
    std::string der;
    int64_t expires_at;
  };
  std::map<std::string, CachedOcsp, std::less<>> ocsp_cache_;
  std::deque<std::pair<std::string, int64_t>> ocsp_order_;  // keys and expiry, oldest first
  // Issuances commit in groups under load. Last, so that it is destroyed first: it finishes
  // the writes still queued, which use the members above.
  store::GroupCommitter writes_;
};

}  // namespace certfleet::ca
