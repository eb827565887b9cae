#include "store/broker_repo.h"

#include "core/crypto.h"
#include "store/certificates_repo.h"
#include "store/registry_repo.h"

namespace certfleet::store {

Result<std::vector<BrokerCertificate>> BrokerCertificates(Tx& tx, std::optional<std::string_view> fingerprint) {
  CF_RETURN_IF_ERROR(WriteGatheredCertificates(tx));
  // Issued certificates, then a supplier's (W3): the same link, another table.
  const std::string usable =
      "l.kind = ? AND l.state <> 'retired' AND NOT EXISTS (SELECT 1 FROM devices d WHERE d.device_id = l.from_name AND "
      "d.status = 'disabled')";
  const std::string one = fingerprint ? " AND x.fingerprint = ?" : "";
  // An issued certificate under a CA revoked without its certificates (no cascade) is not
  // usable either: the broker's TLS trusts the CA, and may not read its parent's CRL. `dead`:
  // the revoked CA certificates and the CA certificates below them. Both steps read CA rows
  // only, through the type index (`|| ''` keeps the status and issuer indexes, which would
  // read every revoked or every issued certificate, out of it): few rows at any fleet size.
  const std::string sql =
      "WITH RECURSIVE dead(serial) AS (SELECT serial FROM certificates WHERE type IN ('root', 'intermediate') AND "
      "status || '' = 'revoked' UNION SELECT c.serial FROM certificates c JOIN dead ON c.issuer_serial || '' = "
      "dead.serial WHERE c.type = 'intermediate') "
      "SELECT l.to_name, x.fingerprint, l.from_name, l.due_at, x.not_after, x.fqdn, 0 FROM registry_links l JOIN "
      "certificates x "
      "ON x.serial = l.to_name WHERE x.status = 'active' AND NOT EXISTS (SELECT 1 FROM dead WHERE dead.serial = "
      "x.issuer_serial) AND " +
      usable + one +
      " UNION ALL SELECT l.to_name, x.fingerprint, l.from_name, l.due_at, NULL, NULL, 1 FROM registry_links l JOIN "
      "imported_certificates x ON x.ref = l.to_name WHERE " +
      usable + one;
  Params params = {std::string(kThingCertificate)};
  if (fingerprint) params.emplace_back(std::string(*fingerprint));
  params.emplace_back(std::string(kThingCertificate));
  if (fingerprint) params.emplace_back(std::string(*fingerprint));
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query(sql, params));
  std::vector<BrokerCertificate> out;
  out.reserve(rows.size());
  for (const auto& r : rows) {
    out.push_back({r.Text(0), r.Text(1), r.Text(2), r.OptInt(3), r.OptInt(4), r.OptText(5), r.Int(6) == 1});
  }
  return out;
}

Result<std::vector<std::pair<std::string, std::string>>> ImportedCertificateDers(
    Tx& tx, const std::vector<std::string>& fingerprints) {
  std::vector<std::pair<std::string, std::string>> out;
  if (fingerprints.empty()) return out;
  std::string marks;
  Params params;
  for (const auto& f : fingerprints) {
    marks += marks.empty() ? "?" : ", ?";
    params.emplace_back(f);
  }
  CF_ASSIGN_OR_RETURN(
      Rows rows,
      tx.Query("SELECT fingerprint, certificate FROM imported_certificates WHERE fingerprint IN (" + marks + ")",
               params));
  out.reserve(rows.size());
  for (const auto& r : rows) {
    std::optional<std::string> der = Base64Decode(r.Text(1));
    if (!der) return MakeError(ErrorCode::kInternal, "imported certificate " + r.Text(0) + " is not base64");
    out.emplace_back(r.Text(0), std::move(*der));
  }
  return out;
}

Result<std::vector<std::pair<std::string, std::string>>> PolicyGrants(Tx& tx, std::optional<std::string_view> ref) {
  Params params = {std::string(kPolicyCertificate)};
  if (ref) params.emplace_back(std::string(*ref));
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query(std::string("SELECT from_name, to_name FROM registry_links WHERE kind = ?") +
                                              (ref ? " AND to_name = ?" : "") + " ORDER BY from_name, to_name",
                                          params));
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.emplace_back(r.Text(0), r.Text(1));
  return out;
}

Result<std::optional<CertificateIdentity>> FindCertificateIdentity(Tx& tx, std::optional<std::string_view> serial,
                                                                   std::optional<std::string_view> fingerprint) {
  CF_RETURN_IF_ERROR(WriteGatheredCertificates(tx));
  Rows rows;
  if (serial) {
    CF_ASSIGN_OR_RETURN(rows, tx.Query("SELECT serial, fingerprint, status, 0 FROM certificates WHERE serial = ?",
                                       {std::string(*serial)}));
  } else if (fingerprint) {
    CF_ASSIGN_OR_RETURN(rows, tx.Query("SELECT serial, fingerprint, status, 0 FROM certificates WHERE fingerprint = ? "
                                       "UNION ALL SELECT ref, fingerprint, 'active', 1 FROM imported_certificates "
                                       "WHERE fingerprint = ?",
                                       {std::string(*fingerprint), std::string(*fingerprint)}));
  }
  if (rows.empty()) return std::optional<CertificateIdentity>();
  const Row& r = rows.front();
  return std::optional(CertificateIdentity{r.Text(0), r.Text(1), r.Text(2) == "revoked", r.Int(3) == 1});
}

Result<std::vector<NamedBody>> AllObjects(Tx& tx, std::string_view kind) {
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT name, ref, body FROM registry_objects WHERE kind = ? ORDER BY name",
                                          {std::string(kind)}));
  std::vector<NamedBody> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back({r.Text(0), r.OptText(1), r.Text(2)});
  return out;
}

}  // namespace certfleet::store
