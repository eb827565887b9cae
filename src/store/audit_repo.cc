#include "store/audit_repo.h"

#include <fmt/format.h>

#include "core/crypto.h"

namespace certfleet::store {
namespace {

constexpr std::string_view kColumns = "seq, at, actor, action, object, details, prev_hash, hash";
constexpr int kVerifyPage = 1000;  // rows read per transaction when verifying

AuditEntry FromRow(const Row& r) {
  return AuditEntry{r.Int(0), r.Int(1), r.Text(2), r.Text(3), r.Text(4), r.Text(5), r.Text(6), r.Text(7)};
}

// AppendAudit on PostgreSQL: AuditHash computed by the database from the head it locks
// (octet_length is in bytes, as std::string::size, in a UTF-8 database).
constexpr std::string_view kPgAppend = R"sql(
WITH v (at, actor, action, object, details) AS (VALUES (?::bigint, ?::text, ?::text, ?::text, ?::text)),
head AS (SELECT seq + 1 AS seq, hash AS prev_hash FROM audit_head WHERE id = 1 FOR UPDATE),
entry AS (
  SELECT head.seq, v.at, v.actor, v.action, v.object, v.details, head.prev_hash,
         encode(sha256(convert_to(
           octet_length(head.prev_hash) || ':' || head.prev_hash ||
           octet_length(head.seq::text) || ':' || head.seq::text ||
           octet_length(v.at::text) || ':' || v.at::text ||
           octet_length(v.actor) || ':' || v.actor ||
           octet_length(v.action) || ':' || v.action ||
           octet_length(v.object) || ':' || v.object ||
           octet_length(v.details) || ':' || v.details, 'UTF8')), 'hex') AS hash
  FROM head, v),
moved AS (UPDATE audit_head SET seq = entry.seq, hash = entry.hash FROM entry WHERE audit_head.id = 1)
INSERT INTO audit_log (seq, at, actor, action, object, details, prev_hash, hash)
SELECT seq, at, actor, action, object, details, prev_hash, hash FROM entry)sql";

// Length-prefixed fields, so no two different rows serialize alike.
void AddField(std::string& out, std::string_view v) {
  out += std::to_string(v.size());
  out += ':';
  out += v;
}

}  // namespace

std::string AuditHash(const AuditEntry& e) {
  std::string data;
  AddField(data, e.prev_hash);
  AddField(data, std::to_string(e.seq));
  AddField(data, std::to_string(e.at));
  AddField(data, e.actor);
  AddField(data, e.action);
  AddField(data, e.object);
  AddField(data, e.details);
  return Sha256Hex(data);
}

Result<void> AppendAudit(Tx& tx, int64_t at, std::string_view actor, std::string_view action, std::string_view object,
                         std::string_view details_json) {
  AuditEntry e;
  e.at = at;
  e.actor = actor;
  e.action = action;
  e.object = object;
  e.details = details_json.empty() ? "{}" : std::string(details_json);
  if (tx.postgres()) {
    // One statement, sent without waiting for its answer: it takes the head's row lock, and
    // the pieces of a group commit append one after another without a round trip each.
    return tx.ExecDeferred(kPgAppend, {e.at, e.actor, e.action, e.object, e.details});
  }
  // SQLite: the transaction holds the database's one write lock already, and a plain read
  // costs less than RETURNING's temporary table.
  CF_ASSIGN_OR_RETURN(auto head, tx.QueryOne("SELECT seq + 1, hash FROM audit_head WHERE id = 1"));
  if (!head) return MakeError(ErrorCode::kInternal, "audit_head row missing: the schema was altered by hand");
  e.seq = head->Int(0);
  e.prev_hash = head->Text(1);
  e.hash = AuditHash(e);
  CF_RETURN_IF_ERROR(tx.ExecDeferred("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", {e.seq, e.hash}));
  return tx.ExecDeferred(
      "INSERT INTO audit_log (seq, at, actor, action, object, details, prev_hash, hash) VALUES (?, ?, ?, ?, ?, "
      "?, ?, ?)",
      {e.seq, e.at, e.actor, e.action, e.object, e.details, e.prev_hash, e.hash});
}

Result<std::vector<AuditEntry>> ListAudit(Tx& tx, const AuditFilter& filter) {
  std::string sql = fmt::format("SELECT {} FROM audit_log WHERE seq > ?", kColumns);
  Params params{filter.after_seq.value_or(0)};
  if (filter.actor) {
    sql += " AND actor = ?";
    params.emplace_back(*filter.actor);
  }
  if (filter.action) {
    sql += " AND action = ?";
    params.emplace_back(*filter.action);
  }
  sql += " ORDER BY seq LIMIT ?";
  params.emplace_back(int64_t{filter.limit});
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query(sql, params));
  std::vector<AuditEntry> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back(FromRow(r));
  return out;
}

Result<AuditVerifyReport> VerifyAuditChain(Store& store) {
  AuditVerifyReport report;
  std::string prev_hash(64, '0');
  int64_t expected_seq = 1;
  int64_t cursor = 0;
  for (;;) {
    CF_ASSIGN_OR_RETURN(
        Rows rows, store.Query(fmt::format("SELECT {} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?", kColumns),
                               {cursor, int64_t{kVerifyPage}}));
    for (const auto& r : rows) {
      AuditEntry e = FromRow(r);
      auto broken = [&](std::string reason) {
        report.first_broken_seq = e.seq;
        report.reason = std::move(reason);
        return report;
      };
      if (e.seq != expected_seq)
        return broken(fmt::format("expected row {}, found row {} (rows removed)", expected_seq, e.seq));
      if (e.prev_hash != prev_hash) return broken("prev_hash does not match the previous row's hash");
      if (AuditHash(e) != e.hash) return broken("the row's contents do not match its hash (row altered)");
      prev_hash = e.hash;
      ++expected_seq;
      ++report.rows_checked;
      cursor = e.seq;
    }
    if (rows.size() < static_cast<size_t>(kVerifyPage)) break;
  }
  CF_ASSIGN_OR_RETURN(Rows head, store.Query("SELECT seq, hash FROM audit_head WHERE id = 1"));
  if (head.empty() || head[0].Int(0) != expected_seq - 1 || head[0].Text(1) != prev_hash) {
    report.first_broken_seq = expected_seq;
    report.reason = "the chain's last rows were removed (head does not match the last row)";
  }
  return report;
}

}  // namespace certfleet::store
