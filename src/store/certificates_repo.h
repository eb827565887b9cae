#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/cert_type.h"
#include "core/enum_names.h"
#include "core/result.h"
#include "store/store.h"

namespace certfleet::store {

// A row of the certificate inventory.
// What a certificate's name (its CN and inventory name) is: a DNS name (W1), a W2 device's
// id, or a W4 host's id. A host's agent authenticates with a certificate of kind kHost only.
enum class SubjectKind { kDnsName, kDevice, kHost };
inline constexpr std::string_view kSubjectKindNames[] = {"dns", "device", "host"};
constexpr std::string_view SubjectKindName(SubjectKind kind) { return EnumName(kind, kSubjectKindNames); }

// A certificate's status in the inventory. Expiry is not a status: it is read from not_after.
enum class CertStatus { kActive, kRevoked };
inline constexpr std::string_view kCertStatusNames[] = {"active", "revoked"};
constexpr std::string_view CertStatusName(CertStatus status) { return EnumName(status, kCertStatusNames); }

struct CertificateRecord {
  std::string serial;  // lowercase hex
  std::string fqdn;
  CertType type = CertType::kServer;
  std::string parent_fqdn;  // "Root" for roots, as in the seed
  std::optional<std::string> issuer_serial;
  CertStatus status = CertStatus::kActive;
  int64_t not_before = 0;
  int64_t not_after = 0;
  std::string fingerprint;  // SHA-256 hex of the DER
  std::string certificate_pem;
  std::optional<int64_t> revoked_at;
  std::optional<int> revocation_reason;
  int64_t created_at = 0;
  std::string created_by;
  SubjectKind subject_kind = SubjectKind::kDnsName;
};

// A CA: its key reference, the SHA-1 hash of its public key (how OCSP names issuers) and its CRL.
struct CaRecord {
  std::string fqdn;
  std::string serial;
  std::string key_ref;   // empty: an external CA, whose key certfleet does not hold
  std::string key_hash;  // hex
  int64_t crl_number = 0;
  std::optional<std::string> crl_der;  // raw DER
  std::optional<int64_t> crl_this_update;
  std::optional<int64_t> crl_next_update;
};

// Gathered (Tx::Gathered) until the transaction's end, or until a function here next reads or
// updates the certificates in it: a group's certificates go in one statement. A failure shows
// then, or at the commit.
Result<void> InsertCertificate(Tx& tx, const CertificateRecord& c);
// Writes the certificates gathered so far: a read of the certificates outside this file, in a
// transaction that may have inserted some, calls it first (those here do).
Result<void> WriteGatheredCertificates(Tx& tx);
Result<void> InsertCa(Tx& tx, const CaRecord& ca);
Result<std::optional<CertificateRecord>> FindCertificate(Tx& tx, std::string_view serial);
// The serial of the active certificate with this fqdn, if there is one.
Result<std::optional<std::string>> ActiveSerialForFqdn(Tx& tx, std::string_view fqdn);
// Newest first.
Result<std::vector<CertificateRecord>> FindCertificatesByFqdn(Tx& tx, std::string_view fqdn);
Result<std::optional<CaRecord>> FindCa(Tx& tx, std::string_view fqdn);
// kNotFound if there is no such certificate.
Result<CertStatus> CertificateStatus(Tx& tx, std::string_view serial);
// The same, but revoked also when a CA above the certificate (its issuer, that one's issuer, up
// to a root or a CA certfleet does not hold) is revoked: for a client certificate, which TLS
// verified against the CAs without their CRLs.
Result<CertStatus> ChainStatus(Tx& tx, std::string_view serial);
// Every CA with this key (a CA certified again for its key, say, is two).
Result<std::vector<CaRecord>> FindCasByKeyHash(Tx& tx, std::string_view key_hash_hex);

// Where a page of certificates ends: the last row's issuance time and serial.
struct CertificateCursor {
  int64_t created_at = 0;
  std::string serial;
};

struct CertificateFilter {
  std::optional<std::string> parent_fqdn;
  std::optional<CertType> type;
  std::optional<CertStatus> status;
  std::optional<int64_t> expires_before;
  std::optional<CertificateCursor> after;
  int limit = 100;
};
// In issuance order (created_at, then serial), through the index of a filter given.
Result<std::vector<CertificateRecord>> ListCertificates(Tx& tx, const CertificateFilter& filter);
// The statement ListCertificates runs, for tests of its plan.
std::string ListCertificatesSql(const CertificateFilter& filter, Params& params);

// Marks an active certificate revoked; false if it was not active.
Result<bool> RevokeCertificate(Tx& tx, std::string_view serial, int64_t at, int reason);
// What a cascading revocation visits below `issuer_serial`: the active certificates it signed,
// and the CAs it signed whatever their status (one revoked before, without its certificates,
// still has active ones below it).
struct CascadeChild {
  std::string serial;
  bool ca = false;  // a root or intermediate, which may have children of its own
};
Result<std::vector<CascadeChild>> CascadeChildren(Tx& tx, std::string_view issuer_serial);
// Takes a CA's lock alone until the transaction ends, for a cascade that revokes it
// (PostgreSQL; SQLite has one writer): it waits for the transactions that checked the CA
// active (CheckIssuerActive shares the lock), so that ActiveChildren, read after it, sees
// their certificates; those checking after it wait, and find the CA revoked.
Result<void> LockIssuer(Tx& tx, std::string_view serial);
// Checks at the transaction's end, after the certificates it writes, that `issuer_serial` is
// active, under the CA's lock shared (LockIssuer); kFailedPrecondition `refusal` if it is not.
// Deferred: no round trip of its own.
Result<void> CheckIssuerActive(Tx& tx, std::string_view issuer_serial, std::string refusal);
// The revoked certificates `issuer_serial` signed, for its CRL.
Result<std::vector<CertificateRecord>> RevokedChildren(Tx& tx, std::string_view issuer_serial);
// Holds the CA's row until the transaction ends, before its CRL is built: two nodes re-signing
// it at once take turns, and the second sees the first's revocations and CRL number. (SQLite's
// writers take turns anyway.)
Result<void> LockCaForCrl(Tx& tx, std::string_view ca_fqdn);
Result<void> SaveCrl(Tx& tx, std::string_view ca_fqdn, int64_t number, const std::string& der, int64_t this_update,
                     int64_t next_update);
// CAs whose CRL is missing or due for re-signing before `before` (external CAs never are).
Result<std::vector<std::string>> CasWithCrlDue(Tx& tx, int64_t before);

// A CA waiting for its certificate from a parent outside certfleet.
struct PendingCaRecord {
  std::string fqdn;
  std::string key_ref;
  std::string csr_pem;
  std::optional<std::string> parent_hint;
  std::string created_by;
  int64_t created_at = 0;
};
// kAlreadyExists if a pending CA has the name.
Result<void> InsertPendingCa(Tx& tx, const PendingCaRecord& ca);
Result<std::optional<PendingCaRecord>> FindPendingCa(Tx& tx, std::string_view fqdn);
Result<std::vector<PendingCaRecord>> ListPendingCas(Tx& tx);
Result<void> DeletePendingCa(Tx& tx, std::string_view fqdn);
// Every CA, by fqdn.
Result<std::vector<CaRecord>> ListCas(Tx& tx);

// Appends an event to the bus. Gathered until the transaction's end, like InsertCertificate:
// events are read by other transactions, once this one committed.
Result<void> AppendEvent(Tx& tx, int64_t at, std::string_view type, std::string_view payload_json);

}  // namespace certfleet::store
