#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "store/store.h"

namespace certfleet::store {

// What the broker's view of the registry is read from: the certificates a device may connect
// with, the things they are attached to, the policies attached to them.

// A certificate attached to a thing that is usable at a broker as far as the store says: not
// revoked, its thing no disabled device (a superseded attachment's due time and an issued
// certificate's expiry are for the reader to compare with its clock).
struct BrokerCertificate {
  std::string ref;          // a serial, or an imported certificate's ref (W3)
  std::string fingerprint;  // SHA-256 hex of the DER
  std::string thing;
  std::optional<int64_t> revoke_after;     // a superseded attachment's due time
  std::optional<int64_t> not_after;        // certificates this CA issued
  std::optional<std::string> common_name;  // certificates this CA issued: the name issued to
  bool imported = false;                   // a supplier's (W3): its facts are in its DER
};
// All of them (`fingerprint` nullopt) or those of one certificate, in no order (sorting
// 100,000 rows is cheaper in the caller than in SQL).
Result<std::vector<BrokerCertificate>> BrokerCertificates(Tx& tx, std::optional<std::string_view> fingerprint);

// (fingerprint, DER) of the imported certificates among `fingerprints`, in one statement (the
// caller keeps the list short).
Result<std::vector<std::pair<std::string, std::string>>> ImportedCertificateDers(
    Tx& tx, const std::vector<std::string>& fingerprints);

// (policy, certificate ref) of every policy-certificate link, or of those to one certificate,
// in that order.
Result<std::vector<std::pair<std::string, std::string>>> PolicyGrants(Tx& tx, std::optional<std::string_view> ref);

// Who a certificate is, found by its serial (issued here) or fingerprint (issued or imported).
struct CertificateIdentity {
  std::string ref;  // the serial, or the imported certificate's ref
  std::string fingerprint;
  bool revoked = false;
  bool imported = false;
};
Result<std::optional<CertificateIdentity>> FindCertificateIdentity(Tx& tx, std::optional<std::string_view> serial,
                                                                   std::optional<std::string_view> fingerprint);

// (name, ref, body) of every object of a kind, in name order.
struct NamedBody {
  std::string name;
  std::optional<std::string> ref;
  std::string body;
};
Result<std::vector<NamedBody>> AllObjects(Tx& tx, std::string_view kind);

}  // namespace certfleet::store
