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

// Length-prefixed fields, so no two different rows serialize alike.
void AddField(std::string& out, std::string_view v) {
  out += std::to_string(v.size());
  out += ':';
  out += v;
}

constexpr Column kAuditColumns[] = {{"seq", "bigint"},  {"at", "bigint"},    {"actor", "text"},     {"action", "text"},
                                    {"object", "text"}, {"details", "text"}, {"prev_hash", "text"}, {"hash", "text"}};

// Chains `entries` onto the head and writes them, with the new head.
Result<void> WriteAudit(Tx& tx, std::vector<AuditEntry>& entries) {
  if (entries.empty()) return Ok();
  CF_ASSIGN_OR_RETURN(auto head, tx.QueryOne(tx.postgres() ? "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE"
                                                           : "SELECT seq, hash FROM audit_head WHERE id = 1"));
  if (!head) return MakeError(ErrorCode::kInternal, "audit_head row missing: the schema was altered by hand");
  int64_t seq = head->Int(0);
  std::string prev = head->Text(1);
  std::vector<Params> rows;
  rows.reserve(entries.size());
  for (AuditEntry& e : entries) {
    e.seq = ++seq;
    e.prev_hash = std::move(prev);
    e.hash = AuditHash(e);
    prev = e.hash;
    rows.push_back({e.seq, e.at, e.actor, e.action, e.object, e.details, e.prev_hash, e.hash});
  }
  CF_RETURN_IF_ERROR(tx.ExecDeferred("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", {seq, prev}));
  return InsertRows(tx, "audit_log", kAuditColumns, rows);
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
  // Gathered until the transaction's end: a group commit's entries take the chain's head
  // once (on PostgreSQL its row lock, held from then to the commit, so written last) and go
  // in one statement.
  tx.Gathered<AuditEntry>("audit", WriteAudit, /*last=*/true)
      .push_back(AuditEntry{0, at, std::string(actor), std::string(action), std::string(object),
                            details_json.empty() ? "{}" : std::string(details_json), "", ""});
  return Ok();
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

Result<int64_t> AuditHeadSeq(Tx& tx) {
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT seq FROM audit_head WHERE id = 1"));
  return rows.empty() ? int64_t{0} : rows.front().Int(0);
}

}  // namespace certfleet::store
