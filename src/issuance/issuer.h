#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "blob/blob_store.h"
#include "core/clock.h"
#include "core/result.h"
#include "pki/csr.h"
#include "pki/key.h"
#include "pki/key_backend.h"
#include "pki/ocsp.h"
#include "pki/profile.h"
#include "store/certificates_repo.h"
#include "store/group_commit.h"
#include "store/store.h"

namespace certfleet::issuance {

// More writes that belong with a new certificate: run in its transaction after its row is
// written; a failure refuses the certificate. Run again if the transaction is retried.
using InTransaction = std::function<Result<void>(store::Tx&, const store::CertificateRecord&)>;

// What a caller looks at in the certificate's transaction before the issuer's own checks (an
// active certificate of the name): its refusal comes first, whatever else ran at the same
// time. Run again if the transaction is retried.
using BeforeChecks = std::function<Result<void>(store::Tx&)>;

// How the audit log names an issuance: a caller whose InTransaction belongs to the same
// change (W2's provisioning) records it in this one entry.
struct AuditEntry {
  std::string action = "certificate.create";
  std::vector<std::pair<std::string, std::string>> details;  // fields beside the certificate's own
};

// Whether a new leaf may be active beside another certificate of the same name.
enum class Overlap {
  kRefused,  // a second active certificate of a server name is refused (409): revoke the first
  kAllowed,  // the caller retires the one it replaces itself (W4 revokes it after a grace period)
};

// A certificate to issue, its names already resolved by the caller's rules (W1's seed
// naming, W2's device ids, W4's host ids).
struct IssueRequest {
  pki::CertType type = pki::CertType::kServer;
  std::string name;  // in the inventory and the CN: a DNS name, or a device's or host's id
  // What the name is; no DNS name is made from an id. Stored with the certificate.
  store::SubjectKind subject = store::SubjectKind::kDnsName;
  std::string parent;  // the issuing CA's fqdn; empty for a root
  std::vector<std::string> sans;
  std::shared_ptr<const pki::Csr> csr;            // the subject's key (leaves only); null: certfleet makes one
  pki::KeyType key_type = pki::KeyType::kEcP256;  // the key certfleet makes
  std::string key_backend;                        // where a new CA's key is made; empty: the default
  std::string country;
  std::string state;
  std::string organization;
  std::optional<int64_t> validity_days;                // default by type: 10 years, 5, 1
  std::optional<int64_t> not_after_millis;             // instead of validity_days: the end asked for (ACME)
  pki::ServerUsage usage = pki::ServerUsage::kServer;  // what a server certificate authenticates
  Overlap overlap = Overlap::kRefused;
  AuditEntry audit;
  BeforeChecks before_checks;    // optional
  InTransaction in_transaction;  // optional
};

struct Issued {
  store::CertificateRecord record;
  std::string chain_pem;                       // the issuers up to the root
  std::optional<std::string> private_key_pem;  // only when certfleet made a leaf's key; never stored
  bool validity_clamped = false;
};

struct Revoked {
  store::CertificateRecord record;
  int newly_revoked = 0;  // this one plus, with cascade, those below it
};

// The floor every workflow issues through: issuing CAs and their cache, issue-and-persist
// (inventory row, audit entry and event in one transaction), the inventory, revocation with
// cascade, CRLs and their publication, and the OCSP responder. Thread-safe.
class Issuer {
 public:
  struct Options {
    std::string public_url;           // the base URL clients reach certfleet at
    std::string revocation_url = {};  // base of the CRL and OCSP URLs put in certificates; empty: public_url
    // How long a CRL is valid (its nextUpdate): a day, republished at half-time, so a
    // relying party that caches it sees a revocation within a day at worst (ca.crl_hours).
    std::chrono::hours crl_validity{24};
    // How long an OCSP response is valid: an hour, cached for half of it (ca.ocsp_minutes).
    std::chrono::minutes ocsp_validity{60};
    // Nonce-less OCSP responses kept, oldest evicted first: a response is 0.5 to 2 KiB, so
    // the default holds the hot part of a large fleet in a few tens of MiB at most.
    size_t ocsp_cache_entries = 20'000;
  };

  Issuer(store::Store& store, pki::KeyBackend& keys, const Clock& clock, Options options);

  Result<Issued> Issue(IssueRequest request, std::string_view actor);
  // The same without waiting: `done` gets the result, on the calling thread when the request
  // is refused before anything is written, else on the store's committing thread (keep it
  // short there: hand the result to another thread).
  void IssueAsync(IssueRequest request, std::string_view actor, std::function<void(Result<Issued>)> done);
  // The committer of issuance's writes, which other workflows' small writes join (ACME's
  // orders and validations): one group, one sync, for all of them under load.
  store::GroupCommitter& Committer() { return writes_; }
  // A new intermediate under the same parent as the intermediate `fqdn`, with its subject's
  // country, state and organization, to take over its issuing (`in_transaction` moves what
  // pointed at it). `new_fqdn` names it; empty: the next generation of the old name
  // (NextGeneration). The old CA keeps validating until it is revoked.
  Result<Issued> Rotate(std::string_view fqdn, std::string_view new_fqdn, InTransaction in_transaction,
                        std::string_view actor);

  // CAs signed outside certfleet (external_ca.cc). RequestCa makes the key of a new CA
  // `name` in `key_backend` (empty: the default) and keeps it pending with its CSR (CN
  // `name`), audited as ca.csr; the CA issues nothing until ActivateCa takes its certificate.
  Result<store::PendingCaRecord> RequestCa(const std::string& name, pki::KeyType key_type,
                                           const std::string& key_backend,
                                           const std::optional<std::string>& parent_hint, std::string_view actor);
  Result<std::vector<store::PendingCaRecord>> PendingCas();
  // Activates the pending CA `fqdn` with its certificate signed elsewhere: it must hold the
  // pending key, be a CA with keyCertSign, valid now, and verify through `chain_pem` (and the
  // CAs in the inventory) to a self-signed root. Issuers not in the inventory are recorded as
  // external CAs (no key: certfleet signs nothing, not even CRLs, for them). Returns what was
  // written, the activated CA last.
  Result<std::vector<store::CertificateRecord>> ActivateCa(std::string_view fqdn, std::string_view certificate_pem,
                                                           std::string_view chain_pem, std::string_view actor);
  // Brings an existing CA in: its key (which must match) goes into `key_backend`, its issuers
  // are found as for ActivateCa (none for a root). `fqdn`: its inventory name; empty: its CN.
  // Refused: a key that does not match, a certificate that is not a CA or not valid now, a
  // name or certificate already there.
  Result<std::vector<store::CertificateRecord>> ImportCa(X509* cert, EVP_PKEY* key, std::string_view chain_pem,
                                                         const std::string& key_backend, const std::string& fqdn,
                                                         std::string_view actor);

  Result<std::vector<store::CertificateRecord>> List(const store::CertificateFilter& filter);
  // By serial (in any spelling, see pki::CanonicalSerial), then by name (the newest).
  Result<store::CertificateRecord> Get(std::string_view id);
  Result<std::string> ChainOf(const store::CertificateRecord& record);
  // Idempotent: revoking a revoked certificate changes nothing. `cascade` on a CA revokes
  // every active certificate below it too. CRLs of the affected CAs are re-signed once the
  // revocation committed; one whose key cannot sign then (its token down, say) is re-signed by
  // a job, and the revocation stands meanwhile.
  Result<Revoked> Revoke(std::string_view serial, std::string_view reason, bool cascade, std::string_view actor);
  // The CA's current CRL, re-signed first if it is due.
  struct CurrentCrl {
    std::string der;
    int64_t this_update_millis = 0;
    int64_t next_update_millis = 0;
  };
  Result<CurrentCrl> Crl(std::string_view ca_fqdn);
  // Re-signs the CRLs past half their validity; returns how many. Run by a schedule.
  Result<int> RefreshDueCrls();
  // Writes the CA's current CRL to `blob` as crl/<fqdn>.crl (as the seed's CRL bucket) and
  // announces it with a crl/published event. Every re-signed CRL queues a job that does it.
  Result<void> PublishCrl(std::string_view ca_fqdn, blob::BlobStore& blob);
  // An OCSP response (DER) to a DER request, an error response if it cannot be answered.
  std::string Ocsp(std::string_view request_der);

  static constexpr std::string_view kCrlRefreshJob = "ca.crl_refresh";
  static constexpr std::string_view kCrlPublishJob = "ca.crl_publish";  // payload {"ca": fqdn}
  // Payload {"ca": fqdn, "crl_number": n}: re-signs the CA's CRL unless one numbered above n
  // (the CRL when a revocation committed) was signed since.
  static constexpr std::string_view kCrlResignJob = "ca.crl_resign";
  static constexpr int kPublishAttempts = 20;
  // Runs a kCrlResignJob.
  Result<void> ResignCrlAfter(std::string_view ca_fqdn, int64_t crl_number);

 private:
  // An issuing CA as issuance needs it. Cached by fqdn: a CA's certificate and chain never
  // change, and its status is checked again in the transaction that stores a new certificate.
  struct Parent {
    store::CaRecord ca;
    store::CertificateRecord cert;
    std::shared_ptr<X509> x509;
    std::string chain_pem;  // the parent's own certificate and its issuers up to the root
  };
  // A certificate made and signed, with what its transaction writes.
  struct Built;

  // The steps of IssueAsync: checks that need no key, the subject's key, the certificate
  // (no I/O), and the write handed to the committer (which then owns `done`; an error means
  // nothing was handed over and `done` is still the caller's).
  Result<std::shared_ptr<const Parent>> Validate(const IssueRequest& req);
  struct SubjectKey {
    std::shared_ptr<EVP_PKEY> key;
    std::optional<std::string> private_key_pem;  // when made here for a leaf
    std::string ref;                             // a new CA's, in the key backend
  };
  Result<SubjectKey> MakeKey(const IssueRequest& req);
  Result<std::shared_ptr<Built>> Build(IssueRequest req, const std::shared_ptr<const Parent>& parent, SubjectKey key,
                                       std::string_view actor);
  Result<void> Persist(const std::shared_ptr<Built>& built, std::function<void(Result<Issued>)>& done);

  Result<std::shared_ptr<const Parent>> FindParent(const std::string& parent_fqdn);
  // A CA certificate made elsewhere and the key certfleet holds for it (empty: none).
  struct Adopting {
    std::shared_ptr<X509> cert;
    std::string key_ref;
    std::string name;    // its inventory name
    std::string action;  // its audit entry's
  };
  // The issuers of `cert` up to a self-signed root, from `chain_pem` and the inventory's CAs,
  // nearest first, verified; empty for a root.
  Result<std::vector<std::shared_ptr<X509>>> IssuersOf(X509* cert, std::string_view chain_pem);
  // Writes `chain` (root first) in one transaction: certificates already in the inventory are
  // kept as they are, the others become CAs with their audit entry and event.
  Result<std::vector<store::CertificateRecord>> Adopt(std::vector<Adopting> chain, InTransaction in_transaction,
                                                      std::string_view actor);
  Result<std::shared_ptr<X509>> CaCertificate(const store::CertificateRecord& record);
  // The CA that answers an OCSP request whose first CertID is `q`, with its certificate:
  // the one the CertID names by its name and key hashes (in the CertID's digest); none when
  // certfleet holds no such CA's key.
  Result<std::optional<std::pair<store::CaRecord, std::shared_ptr<X509>>>> OcspResponder(store::Tx& tx,
                                                                                         const pki::OcspQuestion& q);
  static bool NamesCa(const pki::OcspQuestion& q, X509* ca);
  Result<void> ResignCrl(store::Tx& tx, std::string_view ca_fqdn, int64_t now);
  // Queues the job that writes CRL `number` of the CA to the object store once it committed.
  static Result<void> QueuePublish(store::Tx& tx, std::string_view ca_fqdn, int64_t number, int64_t now);
  void CacheOcsp(std::string key, const std::string& der, int64_t now, int64_t revocations);
  // The newest revocation event any node wrote, read from the store at most once every
  // kRevocationCheckMs; -1 when it cannot be read (no cached answer is then used).
  int64_t RevocationsSeen(int64_t now);
  // How stale another node's revocation may be here: an OCSP answer cached before it is not
  // served once this much has passed (the cost: one indexed read a second).
  static constexpr int64_t kRevocationCheckMs = 1000;
  const std::string& RevocationUrl() const;  // the base of CRL and OCSP URLs
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
    int64_t revocations;  // the newest revocation event when it was answered
  };
  std::map<std::string, CachedOcsp, std::less<>> ocsp_cache_;
  std::deque<std::pair<std::string, int64_t>> ocsp_order_;  // keys and expiry, oldest first
  int64_t revocations_seen_ = -1;
  int64_t revocations_checked_at_ = 0;
  // Issuances commit in groups under load. Last, so that it is destroyed first: it finishes
  // the writes still queued, which use the members above.
  store::GroupCommitter writes_;
};

// The job that revokes a superseded certificate (reason superseded) once its grace period has
// ended, whichever workflow replaced it (a W1 renewal, a W4 host's renewal or enrollment),
// and its enqueuing, once per serial, in the transaction that issued the replacement.
inline constexpr std::string_view kRevokeSupersededJob = "ca.revoke_superseded";
// Whether it was queued: false when one was queued for `serial` before (it was replaced
// already).
Result<bool> RevokeSupersededAfter(store::Tx& tx, const std::string& serial, int64_t run_at, int64_t now);
// Takes back the revocation RevokeSupersededAfter queued for `serial`, while it waits: the
// certificate turned out to be in use. False if none was waiting.
Result<bool> KeepSuperseded(store::Tx& tx, const std::string& serial);

// The name of a CA that takes over from `fqdn`: its first label with a generation suffix
// added or counted up ("iot.example.com" -> "iot-g2.example.com" -> "iot-g3.example.com").
std::string NextGeneration(std::string_view fqdn);

}  // namespace certfleet::issuance
