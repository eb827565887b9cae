#include "store/certificates_repo.h"

#include <fmt/format.h>

#include <map>

#include "core/crypto.h"

namespace certfleet::store {
namespace {

constexpr std::string_view kColumns =
    "serial, fqdn, type, parent_fqdn, issuer_serial, status, not_before, not_after, fingerprint, certificate_pem, "
    "revoked_at, revocation_reason, created_at, created_by, subject_kind";
constexpr std::string_view kCaColumns =
    "fqdn, serial, key_ref, key_hash, crl_number, crl_der, crl_this_update, crl_next_update";

constexpr std::string_view kGathering = "certificates";
constexpr Column kInsertTypes[] = {{"serial", "text"},          {"fqdn", "text"},          {"type", "text"},
                                   {"parent_fqdn", "text"},     {"issuer_serial", "text"}, {"status", "text"},
                                   {"not_before", "bigint"},    {"not_after", "bigint"},   {"fingerprint", "text"},
                                   {"certificate_pem", "text"}, {"created_at", "bigint"},  {"created_by", "text"},
                                   {"subject_kind", "text"}};

Result<void> WriteCertificates(Tx& tx, std::vector<Params>& rows) {
  return InsertRows(tx, "certificates", kInsertTypes, rows);
}

constexpr std::string_view kEventsGathering = "events";
constexpr Column kEventTypes[] = {{"at", "bigint"}, {"type", "text"}, {"payload", "text"}};

Result<void> WriteEvents(Tx& tx, std::vector<Params>& rows) { return InsertRows(tx, "events", kEventTypes, rows); }

Result<CertificateRecord> FromRow(const Row& r) {
  CertificateRecord c;
  c.serial = r.Text(0);
  c.fqdn = r.Text(1);
  CF_ASSIGN_OR_RETURN(c.type, r.Enum<CertType>(2, "certificates.type", kCertTypeNames));
  c.parent_fqdn = r.Text(3);
  c.issuer_serial = r.OptText(4);
  CF_ASSIGN_OR_RETURN(c.status, r.Enum<CertStatus>(5, "certificates.status", kCertStatusNames));
  c.not_before = r.Int(6);
  c.not_after = r.Int(7);
  c.fingerprint = r.Text(8);
  c.certificate_pem = r.Text(9);
  c.revoked_at = r.OptInt(10);
  if (auto reason = r.OptInt(11)) c.revocation_reason = static_cast<int>(*reason);
  c.created_at = r.Int(12);
  c.created_by = r.Text(13);
  CF_ASSIGN_OR_RETURN(c.subject_kind, r.Enum<SubjectKind>(14, "certificates.subject_kind", kSubjectKindNames));
  return c;
}

CaRecord CaFromRow(const Row& r) {
  CaRecord ca;
  ca.fqdn = r.Text(0);
  ca.serial = r.Text(1);
  ca.key_ref = r.Text(2);
  ca.key_hash = r.Text(3);
  ca.crl_number = r.Int(4);
  if (auto der = r.OptText(5)) ca.crl_der = Base64Decode(*der);
  ca.crl_this_update = r.OptInt(6);
  ca.crl_next_update = r.OptInt(7);
  return ca;
}

Result<std::vector<CertificateRecord>> Many(Tx& tx, const std::string& sql, const Params& params) {
  CF_RETURN_IF_ERROR(WriteGatheredCertificates(tx));
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query(sql, params));
  std::vector<CertificateRecord> out;
  out.reserve(rows.size());
  for (const auto& r : rows) {
    CF_ASSIGN_OR_RETURN(CertificateRecord c, FromRow(r));
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace

Result<void> WriteGatheredCertificates(Tx& tx) { return tx.FlushGathered(kGathering); }

Result<void> InsertCertificate(Tx& tx, const CertificateRecord& c) {
  // Gathered until the transaction's end: a group commit's certificates go in one statement,
  // which on PostgreSQL costs about half as much a row as a statement a row (the executor's
  // start, the table's nine indexes opened, its checks prepared, once for the group).
  tx.Gathered<Params>(kGathering, WriteCertificates)
      .push_back({c.serial, c.fqdn, std::string(CertTypeName(c.type)), c.parent_fqdn, OptionalValue(c.issuer_serial),
                  std::string(CertStatusName(c.status)), c.not_before, c.not_after, c.fingerprint, c.certificate_pem,
                  c.created_at, c.created_by, std::string(SubjectKindName(c.subject_kind))});
  return Ok();
}

Result<void> InsertCa(Tx& tx, const CaRecord& ca) {
  CF_RETURN_IF_ERROR(WriteGatheredCertificates(tx));
  CF_RETURN_IF_ERROR(tx.Exec("INSERT INTO cas (fqdn, serial, key_ref, key_hash, crl_number) VALUES (?, ?, ?, ?, 0)",
                             {ca.fqdn, ca.serial, ca.key_ref, ca.key_hash}));
  return Ok();
}

Result<std::optional<CertificateRecord>> FindCertificate(Tx& tx, std::string_view serial) {
  CF_RETURN_IF_ERROR(WriteGatheredCertificates(tx));
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne(fmt::format("SELECT {} FROM certificates WHERE serial = ?", kColumns),
                                            {std::string(serial)}));
  if (!row) return std::optional<CertificateRecord>();
  CF_ASSIGN_OR_RETURN(CertificateRecord c, FromRow(*row));
  return std::optional<CertificateRecord>(std::move(c));
}

Result<std::optional<std::string>> ActiveSerialForFqdn(Tx& tx, std::string_view fqdn) {
  CF_RETURN_IF_ERROR(WriteGatheredCertificates(tx));
  CF_ASSIGN_OR_RETURN(
      auto row,
      tx.QueryOne("SELECT serial FROM certificates WHERE fqdn = ? AND status = 'active' LIMIT 1", {std::string(fqdn)}));
  if (!row) return std::optional<std::string>();
  return std::optional<std::string>(row->Text(0));
}

Result<std::vector<CertificateRecord>> FindCertificatesByFqdn(Tx& tx, std::string_view fqdn) {
  return Many(tx, fmt::format("SELECT {} FROM certificates WHERE fqdn = ? ORDER BY created_at DESC, serial", kColumns),
              {std::string(fqdn)});
}

Result<std::optional<CaRecord>> FindCa(Tx& tx, std::string_view fqdn) {
  CF_ASSIGN_OR_RETURN(auto row,
                      tx.QueryOne(fmt::format("SELECT {} FROM cas WHERE fqdn = ?", kCaColumns), {std::string(fqdn)}));
  if (!row) return std::optional<CaRecord>();
  return std::optional<CaRecord>(CaFromRow(*row));
}

Result<CertStatus> CertificateStatus(Tx& tx, std::string_view serial) {
  CF_RETURN_IF_ERROR(WriteGatheredCertificates(tx));
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT status FROM certificates WHERE serial = ?", {std::string(serial)}));
  if (!row) return MakeError(ErrorCode::kNotFound, fmt::format("no certificate with serial {}", serial));
  return row->Enum<CertStatus>(0, "certificates.status", kCertStatusNames);
}

Result<CertStatus> ChainStatus(Tx& tx, std::string_view serial) {
  CF_RETURN_IF_ERROR(WriteGatheredCertificates(tx));
  // The certificate and its issuers, up to a root (its own issuer) or a CA certfleet does not
  // hold, in one round trip; the depth bounds a loop in bad data.
  CF_ASSIGN_OR_RETURN(
      Rows rows,
      tx.Query("WITH RECURSIVE up(serial, status, issuer_serial, depth) AS (SELECT serial, status, issuer_serial, 0 "
               "FROM certificates WHERE serial = ? UNION ALL SELECT c.serial, c.status, c.issuer_serial, up.depth + 1 "
               "FROM certificates c JOIN up ON c.serial = up.issuer_serial WHERE up.issuer_serial <> up.serial AND "
               "up.depth < 16) SELECT status FROM up ORDER BY depth",
               {std::string(serial)}));
  if (rows.empty()) return MakeError(ErrorCode::kNotFound, fmt::format("no certificate with serial {}", serial));
  for (const Row& r : rows) {
    CF_ASSIGN_OR_RETURN(CertStatus status, r.Enum<CertStatus>(0, "certificates.status", kCertStatusNames));
    if (status == CertStatus::kRevoked) return status;
  }
  return CertStatus::kActive;
}

Result<std::vector<CaRecord>> FindCasByKeyHash(Tx& tx, std::string_view key_hash_hex) {
  CF_ASSIGN_OR_RETURN(Rows rows,
                      tx.Query(fmt::format("SELECT {} FROM cas WHERE key_hash = ? ORDER BY fqdn", kCaColumns),
                               {std::string(key_hash_hex)}));
  std::vector<CaRecord> out;
  for (const auto& r : rows) out.push_back(CaFromRow(r));
  return out;
}

std::string ListCertificatesSql(const CertificateFilter& f, Params& params) {
  std::string sql = fmt::format("SELECT {} FROM certificates WHERE TRUE", kColumns);
  auto add = [&](std::string_view clause, Value v) {
    sql += clause;
    params.push_back(std::move(v));
  };
  if (f.parent_fqdn) add(" AND parent_fqdn = ?", *f.parent_fqdn);
  if (f.type) add(" AND type = ?", std::string(CertTypeName(*f.type)));
  if (f.status) add(" AND status = ?", std::string(CertStatusName(*f.status)));
  if (f.expires_before) add(" AND not_after < ?", *f.expires_before);
  if (f.after) {
    add(" AND (created_at, serial) > (?,", f.after->created_at);
    add(" ?)", f.after->serial);
  }
  add(" ORDER BY created_at, serial LIMIT ?", int64_t{f.limit});
  return sql;
}

Result<std::vector<CertificateRecord>> ListCertificates(Tx& tx, const CertificateFilter& f) {
  Params params;
  const std::string sql = ListCertificatesSql(f, params);
  return Many(tx, sql, params);
}

Result<bool> RevokeCertificate(Tx& tx, std::string_view serial, int64_t at, int reason) {
  CF_RETURN_IF_ERROR(WriteGatheredCertificates(tx));
  CF_ASSIGN_OR_RETURN(int64_t n, tx.Exec("UPDATE certificates SET status = 'revoked', revoked_at = ?, "
                                         "revocation_reason = ? WHERE serial = ? AND status = 'active'",
                                         {at, int64_t{reason}, std::string(serial)}));
  return n == 1;
}

Result<std::vector<CascadeChild>> CascadeChildren(Tx& tx, std::string_view issuer_serial) {
  CF_RETURN_IF_ERROR(WriteGatheredCertificates(tx));
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT serial, type FROM certificates WHERE issuer_serial = ? AND "
                                          "(status = 'active' OR type IN ('root', 'intermediate'))",
                                          {std::string(issuer_serial)}));
  std::vector<CascadeChild> out;
  for (const auto& r : rows) {
    CF_ASSIGN_OR_RETURN(CertType type, r.Enum<CertType>(1, "certificates.type", kCertTypeNames));
    out.push_back({r.Text(0), IsCa(type)});
  }
  return out;
}

namespace {

std::string IssuerLock(std::string_view serial) { return "issuer " + std::string(serial); }

struct IssuerCheck {
  std::string serial;
  std::string refusal;
};

Result<void> WriteIssuerChecks(Tx& tx, std::vector<IssuerCheck>& checks) {
  CF_RETURN_IF_ERROR(WriteGatheredCertificates(tx));
  // A statement per CA (a group has one or two), deferred (no round trip of its own) and after
  // the transaction's inserts. One for them all (serial = ANY) was planned as a scan of the
  // active certificates: 0.9 ms a group against 7 µs in bench/postgres.
  std::map<std::string, std::string> refusals;  // serial -> the first refusal naming it
  for (auto& c : checks) refusals.emplace(std::move(c.serial), std::move(c.refusal));
  // Each CA's lock shared, in the order of their serials, and its status read under it.
  for (const auto& [serial, refusal] : refusals) CF_RETURN_IF_ERROR(LockSharedForTransaction(tx, IssuerLock(serial)));
  for (auto& [serial, refusal] : refusals) {
    CF_RETURN_IF_ERROR(tx.QueryDeferred("SELECT status FROM certificates WHERE serial = ?", {serial},
                                        [refusal = std::move(refusal)](const Rows& rows) -> Result<void> {
                                          if (rows.size() != 1 || rows.front().Text(0) != "active") {
                                            return MakeError(ErrorCode::kFailedPrecondition, refusal);
                                          }
                                          return Ok();
                                        }));
  }
  return Ok();
}

}  // namespace

Result<void> LockIssuer(Tx& tx, std::string_view serial) { return LockForTransaction(tx, IssuerLock(serial)); }

Result<void> CheckIssuerActive(Tx& tx, std::string_view issuer_serial, std::string refusal) {
  tx.Gathered<IssuerCheck>("issuer-checks", WriteIssuerChecks)
      .push_back({std::string(issuer_serial), std::move(refusal)});
  return Ok();
}

Result<std::vector<CertificateRecord>> RevokedChildren(Tx& tx, std::string_view issuer_serial) {
  return Many(tx,
              fmt::format("SELECT {} FROM certificates WHERE issuer_serial = ? AND status = 'revoked' ORDER BY serial",
                          kColumns),
              {std::string(issuer_serial)});
}

Result<void> LockCaForCrl(Tx& tx, std::string_view ca_fqdn) {
  if (!tx.postgres()) return Ok();
  CF_RETURN_IF_ERROR(tx.Query("SELECT fqdn FROM cas WHERE fqdn = ? FOR NO KEY UPDATE", {std::string(ca_fqdn)}));
  return Ok();
}

Result<void> SaveCrl(Tx& tx, std::string_view ca_fqdn, int64_t number, const std::string& der, int64_t this_update,
                     int64_t next_update) {
  CF_RETURN_IF_ERROR(
      tx.Exec("UPDATE cas SET crl_number = ?, crl_der = ?, crl_this_update = ?, crl_next_update = ? WHERE fqdn = ?",
              {number, Base64Encode(der), this_update, next_update, std::string(ca_fqdn)}));
  return Ok();
}

Result<std::vector<std::string>> CasWithCrlDue(Tx& tx, int64_t before) {
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT fqdn FROM cas WHERE key_ref <> '' AND "
                                          "(crl_next_update IS NULL OR crl_next_update < ?) ORDER BY fqdn",
                                          {before}));
  std::vector<std::string> out;
  for (const auto& r : rows) out.push_back(r.Text(0));
  return out;
}

Result<void> AppendEvent(Tx& tx, int64_t at, std::string_view type, std::string_view payload_json) {
  tx.Gathered<Params>(kEventsGathering, WriteEvents).push_back({at, std::string(type), std::string(payload_json)});
  return Ok();
}

namespace {

constexpr std::string_view kPendingColumns = "fqdn, key_ref, csr_pem, parent_hint, created_by, created_at";

PendingCaRecord PendingFromRow(const Row& r) {
  PendingCaRecord p;
  p.fqdn = r.Text(0);
  p.key_ref = r.Text(1);
  p.csr_pem = r.Text(2);
  if (!r.IsNull(3)) p.parent_hint = r.Text(3);
  p.created_by = r.Text(4);
  p.created_at = r.Int(5);
  return p;
}

}  // namespace

Result<void> InsertPendingCa(Tx& tx, const PendingCaRecord& ca) {
  CF_RETURN_IF_ERROR(
      tx.Exec(fmt::format("INSERT INTO pending_cas ({}) VALUES (?, ?, ?, ?, ?, ?)", kPendingColumns),
              {ca.fqdn, ca.key_ref, ca.csr_pem, OptionalValue(ca.parent_hint), ca.created_by, ca.created_at}));
  return Ok();
}

Result<std::optional<PendingCaRecord>> FindPendingCa(Tx& tx, std::string_view fqdn) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne(fmt::format("SELECT {} FROM pending_cas WHERE fqdn = ?", kPendingColumns),
                                            {std::string(fqdn)}));
  if (!row) return std::optional<PendingCaRecord>();
  return std::optional<PendingCaRecord>(PendingFromRow(*row));
}

Result<std::vector<PendingCaRecord>> ListPendingCas(Tx& tx) {
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query(fmt::format("SELECT {} FROM pending_cas ORDER BY fqdn", kPendingColumns)));
  std::vector<PendingCaRecord> out;
  for (const auto& r : rows) out.push_back(PendingFromRow(r));
  return out;
}

Result<void> DeletePendingCa(Tx& tx, std::string_view fqdn) {
  CF_RETURN_IF_ERROR(tx.Exec("DELETE FROM pending_cas WHERE fqdn = ?", {std::string(fqdn)}));
  return Ok();
}

Result<std::vector<CaRecord>> ListCas(Tx& tx) {
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query(fmt::format("SELECT {} FROM cas ORDER BY fqdn", kCaColumns)));
  std::vector<CaRecord> out;
  for (const auto& r : rows) out.push_back(CaFromRow(r));
  return out;
}

}  // namespace certfleet::store
