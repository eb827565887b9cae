#include "store/imports_repo.h"

#include <fmt/format.h>

#include "core/crypto.h"
#include "store/registry_repo.h"

namespace certfleet::store {
namespace {

constexpr std::string_view kColumns =
    "id, supplier, profile, bundle_type, manifest, state, position, seen, imported, already_present, rejected, "
    "conflicts, error, created_by, created_at, updated_at, started_at, finished_at, source, read_permille";

ImportRecord FromRow(const Row& r) {
  ImportRecord i;
  i.id = r.Int(0);
  i.supplier = r.Text(1);
  i.profile = r.Text(2);
  i.bundle_type = r.Text(3);
  i.manifest = r.Text(4);
  i.state = r.Text(5);
  i.position = r.Int(6);
  i.counts = ImportCounts{r.Int(7), r.Int(8), r.Int(9), r.Int(10), r.Int(11)};
  i.error = r.OptText(12);
  i.created_by = r.Text(13);
  i.created_at = r.Int(14);
  i.updated_at = r.Int(15);
  i.started_at = r.OptInt(16);
  i.finished_at = r.OptInt(17);
  i.source = r.OptText(18);
  i.read_permille = r.Int(19);
  return i;
}

}  // namespace

Result<int64_t> InsertImport(Tx& tx, const ImportRecord& r) {
  CF_ASSIGN_OR_RETURN(
      auto row,
      tx.QueryOne("INSERT INTO imports (supplier, profile, bundle_type, manifest, state, position, seen, imported, "
                  "already_present, rejected, conflicts, created_by, created_at, updated_at, source) VALUES (?, ?, ?, "
                  "?, ?, 0, 0, 0, 0, 0, 0, ?, ?, ?, ?) RETURNING id",
                  {r.supplier, r.profile, r.bundle_type, r.manifest, r.state, r.created_by, r.created_at, r.updated_at,
                   OptionalValue(r.source)}));
  return row->Int(0);
}

Result<int64_t> InsertImportVerifier(Tx& tx, const ImportVerifier& v) {
  CF_ASSIGN_OR_RETURN(auto row,
                      tx.QueryOne("INSERT INTO import_verifiers (fingerprint, subject, not_after, "
                                  "certificate_pem, source, created_by, created_at, removed_at) VALUES (?, "
                                  "?, ?, ?, ?, ?, ?, ?) RETURNING id",
                                  {v.fingerprint, v.subject, v.not_after, v.certificate_pem, OptionalValue(v.source),
                                   v.created_by, v.created_at, OptionalValue(v.removed_at)}));
  return row->Int(0);
}

Result<std::vector<ImportVerifier>> ActiveImportVerifiers(Tx& tx) {
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT id, fingerprint, subject, not_after, certificate_pem, source, "
                                          "created_by, created_at, removed_at FROM import_verifiers WHERE removed_at "
                                          "IS NULL ORDER BY id"));
  std::vector<ImportVerifier> out;
  for (const auto& r : rows) {
    out.push_back(
        {r.Int(0), r.Text(1), r.Text(2), r.Int(3), r.Text(4), r.OptText(5), r.Text(6), r.Int(7), r.OptInt(8)});
  }
  return out;
}

Result<bool> RemoveImportVerifier(Tx& tx, int64_t id, int64_t now) {
  CF_ASSIGN_OR_RETURN(
      int64_t changed,
      tx.Exec("UPDATE import_verifiers SET removed_at = ? WHERE id = ? AND removed_at IS NULL", {now, id}));
  return changed > 0;
}

Result<bool> VerifierSourceSeen(Tx& tx, std::string_view source) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT 1 FROM import_verifiers WHERE source = ?", {std::string(source)}));
  return row.has_value();
}

Result<bool> ImportSourceSeen(Tx& tx, std::string_view source) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT 1 FROM imports WHERE source = ?", {std::string(source)}));
  return row.has_value();
}

Result<std::optional<ImportRecord>> FindImport(Tx& tx, int64_t id) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT " + std::string(kColumns) + " FROM imports WHERE id = ?", {id}));
  if (!row) return std::optional<ImportRecord>();
  return std::optional<ImportRecord>(FromRow(*row));
}

Result<std::vector<ImportRecord>> ListImports(Tx& tx, std::optional<int64_t> before, int limit) {
  CF_ASSIGN_OR_RETURN(
      Rows rows, tx.Query("SELECT " + std::string(kColumns) + " FROM imports WHERE id < ? ORDER BY id DESC LIMIT ?",
                          {before.value_or(INT64_MAX), int64_t{limit}}));
  std::vector<ImportRecord> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back(FromRow(r));
  return out;
}

Result<void> UpdateImport(Tx& tx, const ImportRecord& r) {
  CF_RETURN_IF_ERROR(tx.ExecDeferred(
      "UPDATE imports SET state = ?, position = ?, read_permille = ?, seen = ?, imported = ?, already_present = ?, "
      "rejected = ?, conflicts = ?, error = ?, updated_at = ?, started_at = ?, finished_at = ? WHERE id = ?",
      {r.state, r.position, r.read_permille, r.counts.seen, r.counts.imported, r.counts.already_present,
       r.counts.rejected, r.counts.conflicts, OptionalValue(r.error), r.updated_at, OptionalValue(r.started_at),
       OptionalValue(r.finished_at), r.id}));
  return Ok();
}

Result<std::vector<ImportBatch>> ImportBatches(Tx& tx, int64_t import_id) {
  CF_ASSIGN_OR_RETURN(Rows rows,
                      tx.Query("SELECT first_entry, entries FROM import_batches WHERE import_id = ? ORDER BY "
                               "first_entry",
                               {import_id}));
  std::vector<ImportBatch> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back(ImportBatch{r.Int(0), r.Int(1)});
  return out;
}

Result<void> RecordImportBatch(Tx& tx, int64_t import_id, const ImportBatch& batch, const ImportCounts& counts,
                               int64_t read_permille, int64_t now) {
  CF_RETURN_IF_ERROR(tx.ExecDeferred("INSERT INTO import_batches (import_id, first_entry, entries) VALUES (?, ?, ?)",
                                     {import_id, batch.first, batch.entries}));
  return tx.ExecDeferred(
      "UPDATE imports SET state = CASE WHEN state = 'queued' THEN 'running' ELSE state END, position = position + ?, "
      "seen = seen + ?, imported = imported + ?, already_present = already_present + ?, rejected = rejected + ?, "
      "conflicts = conflicts + ?, read_permille = CASE WHEN read_permille > ? THEN read_permille ELSE ? END, "
      "started_at = COALESCE(started_at, ?), updated_at = ? WHERE id = ?",
      {batch.entries, counts.seen, counts.imported, counts.already_present, counts.rejected, counts.conflicts,
       read_permille, read_permille, now, now, import_id});
}

Result<void> InsertImportRows(Tx& tx, int64_t import_id, const std::vector<ImportRow>& rows) {
  static constexpr Column kColumns[] = {{"import_id", "bigint"}, {"idx", "bigint"},       {"status", "text"},
                                        {"thing_name", "text"},  {"fingerprint", "text"}, {"reason", "text"}};
  std::vector<Params> values;
  values.reserve(rows.size());
  for (const auto& r : rows) values.push_back({import_id, r.index, r.status, r.thing_name, r.fingerprint, r.reason});
  return InsertRows(tx, "import_rows", kColumns, values);
}

Result<std::vector<ImportRow>> ListImportRows(Tx& tx, int64_t import_id, std::optional<std::string> status,
                                              int64_t after, int limit) {
  std::string sql = "SELECT idx, status, thing_name, fingerprint, reason FROM import_rows WHERE import_id = ?";
  Params params{import_id};
  if (status) {
    sql += " AND status = ?";
    params.emplace_back(*status);
  }
  sql += " AND idx > ? ORDER BY idx LIMIT ?";
  params.emplace_back(after);
  params.emplace_back(int64_t{limit});
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query(sql, params));
  std::vector<ImportRow> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back(ImportRow{r.Int(0), r.Text(1), r.Text(2), r.Text(3), r.Text(4)});
  return out;
}

Result<std::map<std::string, std::string>> ImportedCertificateThings(Tx& tx,
                                                                     const std::vector<std::string>& fingerprints) {
  std::map<std::string, std::string> out;
  if (fingerprints.empty()) return out;
  Params params;
  const std::string where = InValues(tx, "fingerprint", fingerprints, params);
  CF_ASSIGN_OR_RETURN(Rows rows,
                      tx.Query("SELECT fingerprint, thing_name FROM imported_certificates WHERE " + where, params));
  for (const auto& r : rows) out.emplace(r.Text(0), r.Text(1));
  return out;
}

Result<std::optional<ImportedCertificate>> FindImportedCertificate(Tx& tx, std::string_view ref) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT fingerprint, source, thing_name, import_id, created_at FROM "
                                            "imported_certificates WHERE ref = ?",
                                            {std::string(ref)}));
  if (!row) return std::optional<ImportedCertificate>();
  return std::optional<ImportedCertificate>(
      ImportedCertificate{row->Text(0), std::string(ref), row->Text(1), row->Text(2), "", row->Int(3), row->Int(4)});
}

Result<void> InsertImportedCertificates(Tx& tx, const std::vector<ImportedCertificate>& certificates) {
  static constexpr Column kColumns[] = {{"fingerprint", "text"}, {"ref", "text"},         {"source", "text"},
                                        {"thing_name", "text"},  {"certificate", "text"}, {"import_id", "bigint"},
                                        {"created_at", "bigint"}};
  std::vector<Params> rows;
  rows.reserve(certificates.size());
  for (const auto& c : certificates) {
    rows.push_back({c.fingerprint, c.ref, c.source, c.thing_name, Base64Encode(c.der), c.import_id, c.created_at});
  }
  return InsertRows(tx, "imported_certificates", kColumns, rows);
}

namespace {
constexpr std::string_view kImportedRefPrefix = "import:";
}  // namespace

Result<std::optional<std::string>> ImportedCertificateAttachment(Tx& tx, std::string_view fingerprint) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT l.state FROM imported_certificates x JOIN registry_links l ON "
                                            "l.to_name = x.ref AND l.kind = ? WHERE x.fingerprint = ?",
                                            {std::string(kThingCertificate), std::string(fingerprint)}));
  if (!row) return std::optional<std::string>();
  return std::optional<std::string>(row->Text(0));
}

std::string ImportedRef(int64_t import_id, int64_t entry) {
  return fmt::format("{}{:010}:{:010}", kImportedRefPrefix, import_id, entry);
}

bool IsImportedRef(std::string_view ref) { return ref.starts_with(kImportedRefPrefix); }

Result<std::vector<std::pair<int64_t, std::string>>> ImportsOfDeadJobs(Tx& tx, std::string_view job_kind) {
  // The payload is {"import_id":N}, as ImportService writes it: N starts at its 14th character.
  CF_ASSIGN_OR_RETURN(
      Rows rows,
      tx.Query("SELECT i.id, COALESCE(j.last_error, '') FROM jobs j JOIN imports i ON i.id = "
               "CAST(substr(j.payload, 14, length(j.payload) - 14) AS BIGINT) WHERE j.kind = ? AND j.state = 'dead' "
               "AND j.payload LIKE '{\"import_id\":%}' AND i.state IN ('queued', 'running') ORDER BY i.id",
               {std::string(job_kind)}));
  std::vector<std::pair<int64_t, std::string>> out;
  for (const auto& r : rows) out.emplace_back(r.Int(0), r.Text(1));
  return out;
}

}  // namespace certfleet::store
