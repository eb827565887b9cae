#include "store/audit_repo.h"

#include <fmt/format.h>

#include <algorithm>

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

constexpr int64_t kPostgresChains = 8;  // made by migration 24

int64_t ChainBase(int64_t chain) { return (chain - 1) * kAuditChainSpan; }

// Takes a chain's head for this transaction: on PostgreSQL the first one no other transaction
// holds, or chain 1 (waiting for it) while every chain is taken.
Result<Row> LockChainHead(Tx& tx) {
  std::optional<Row> head;
  if (tx.postgres()) {
    // Sent behind the transaction's deferred statements (a group's rows): one round trip for
    // them all, which also answers them before the entries are written (Tx::FlushAll's
    // `answer_last`).
    CF_RETURN_IF_ERROR(
        tx.QueryDeferred("SELECT id, seq, hash FROM audit_head ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED", {},
                         [&head](const Rows& rows) -> Result<void> {
                           if (!rows.empty()) head = rows.front();
                           return Ok();
                         }));
    CF_RETURN_IF_ERROR(tx.Flush());
    if (!head) {
      CF_ASSIGN_OR_RETURN(head, tx.QueryOne("SELECT id, seq, hash FROM audit_head WHERE id = 1 FOR UPDATE"));
    }
  } else {
    CF_ASSIGN_OR_RETURN(head, tx.QueryOne("SELECT id, seq, hash FROM audit_head WHERE id = 1"));
  }
  if (!head) return MakeError(ErrorCode::kInternal, "audit_head row missing: the schema was altered by hand");
  return *head;
}

// Chains `entries` onto a chain's head and writes them, with the new head.
Result<void> WriteAudit(Tx& tx, std::vector<AuditEntry>& entries) {
  if (entries.empty()) return Ok();
  CF_ASSIGN_OR_RETURN(Row head, LockChainHead(tx));
  const int64_t chain = head.Int(0);
  int64_t seq = head.Int(1);
  std::string prev = head.Text(2);
  std::vector<Params> rows;
  rows.reserve(entries.size());
  for (AuditEntry& e : entries) {
    e.seq = ++seq;
    e.prev_hash = std::move(prev);
    e.hash = AuditHash(e);
    prev = e.hash;
    rows.push_back({e.seq, e.at, e.actor, e.action, e.object, e.details, e.prev_hash, e.hash});
  }
  CF_RETURN_IF_ERROR(tx.ExecDeferred("UPDATE audit_head SET seq = ?, hash = ? WHERE id = ?", {seq, prev, chain}));
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

Result<AuditPage> ListAudit(Tx& tx, const AuditFilter& filter) {
  std::string sql = fmt::format("SELECT {} FROM audit_log WHERE seq > ? AND seq <= ?", kColumns);
  if (filter.actor) sql += " AND actor = ?";
  if (filter.action) sql += " AND action = ?";
  sql += " ORDER BY seq LIMIT ?";
  // Each chain's next rows, in its order; then merged oldest first.
  CF_ASSIGN_OR_RETURN(Rows heads, tx.Query("SELECT id FROM audit_head ORDER BY id"));
  AuditPage page;
  std::vector<std::vector<AuditEntry>> chains;
  std::vector<int64_t> bases, read;  // per chain: its base, and the last row read (its base: none)
  for (const auto& h : heads) {
    const int64_t base = ChainBase(h.Int(0));
    int64_t after = base;
    for (int64_t a : filter.after) {
      if (AuditChainOf(a) == h.Int(0)) after = std::max(after, a);
    }
    bases.push_back(base);
    read.push_back(after);
    Params params{after, base + kAuditChainSpan};
    if (filter.actor) params.emplace_back(*filter.actor);
    if (filter.action) params.emplace_back(*filter.action);
    params.emplace_back(int64_t{filter.limit});
    CF_ASSIGN_OR_RETURN(Rows rows, tx.Query(sql, params));
    auto& chain = chains.emplace_back();
    for (const auto& r : rows) chain.push_back(FromRow(r));
  }
  std::vector<size_t> taken(chains.size(), 0);
  while (page.entries.size() < static_cast<size_t>(filter.limit)) {
    std::optional<size_t> oldest;
    for (size_t c = 0; c < chains.size(); ++c) {
      if (taken[c] == chains[c].size()) continue;
      const AuditEntry& e = chains[c][taken[c]];
      const AuditEntry* o = oldest ? &chains[*oldest][taken[*oldest]] : nullptr;
      if (!o || std::pair(e.at, e.seq) < std::pair(o->at, o->seq)) oldest = c;
    }
    if (!oldest) break;
    read[*oldest] = chains[*oldest][taken[*oldest]].seq;
    page.entries.push_back(std::move(chains[*oldest][taken[*oldest]++]));
  }
  for (size_t c = 0; c < chains.size(); ++c) {
    if (read[c] > bases[c]) page.next.push_back(read[c]);
  }
  return page;
}

Result<AuditVerifyReport> VerifyAuditChain(Store& store) {
  AuditVerifyReport report;
  auto broken = [&](int64_t seq, std::string reason) {
    report.first_broken_seq = seq;
    report.reason = std::move(reason);
    return report;
  };
  // The heads first: rows appended while this runs are past them and wait for the next run.
  CF_ASSIGN_OR_RETURN(Rows heads, store.Query("SELECT id, seq, hash FROM audit_head ORDER BY id"));
  const int64_t chains = store.dialect() == Dialect::kPostgres ? kPostgresChains : 1;
  for (int64_t id = 1; id <= chains; ++id) {
    if (static_cast<int64_t>(heads.size()) < id || heads[id - 1].Int(0) != id) {
      return broken(ChainBase(id) + 1, fmt::format("chain {}'s head row is missing", id));
    }
  }
  for (const auto& head : heads) {
    ++report.chains;
    const int64_t base = ChainBase(head.Int(0));
    std::string prev_hash(64, '0');
    int64_t expected_seq = base + 1;
    for (int64_t cursor = base;;) {
      CF_ASSIGN_OR_RETURN(Rows rows, store.Query(fmt::format("SELECT {} FROM audit_log WHERE seq > ? AND seq <= ? "
                                                             "ORDER BY seq LIMIT ?",
                                                             kColumns),
                                                 {cursor, head.Int(1), int64_t{kVerifyPage}}));
      for (const auto& r : rows) {
        AuditEntry e = FromRow(r);
        if (e.seq != expected_seq) {
          return broken(e.seq, fmt::format("expected row {}, found row {} (rows removed)", expected_seq, e.seq));
        }
        if (e.prev_hash != prev_hash) return broken(e.seq, "prev_hash does not match the previous row's hash");
        if (AuditHash(e) != e.hash) return broken(e.seq, "the row's contents do not match its hash (row altered)");
        prev_hash = e.hash;
        ++expected_seq;
        ++report.rows_checked;
        cursor = e.seq;
      }
      if (rows.size() < static_cast<size_t>(kVerifyPage)) break;
    }
    if (head.Int(1) != expected_seq - 1 || head.Text(2) != prev_hash) {
      return broken(expected_seq, "the chain's last rows were removed (head does not match the last row)");
    }
  }
  // Rows no chain leads to: past their chain's head (in one statement, so that rows and heads
  // committed together are seen together), or outside every chain.
  CF_ASSIGN_OR_RETURN(Rows stray, store.Query("SELECT MIN(l.seq) FROM audit_log l LEFT JOIN audit_head h "
                                              "ON h.id = (l.seq - 1) / ? + 1 WHERE h.id IS NULL OR l.seq < 1 OR "
                                              "l.seq > h.seq",
                                              {kAuditChainSpan}));
  if (!stray.empty() && !stray[0].IsNull(0)) {
    return broken(stray[0].Int(0), "a row past its chain's head (the head was moved back, or the row added)");
  }
  return report;
}

Result<int64_t> AuditHeadSeq(Tx& tx) {
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT CAST(COALESCE(SUM(seq), 0) AS BIGINT) FROM audit_head"));
  return rows.empty() ? int64_t{0} : rows.front().Int(0);
}

}  // namespace certfleet::store
