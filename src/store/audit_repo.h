#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "store/store.h"

namespace certfleet::store {

// The audit log is append-only and hash-chained. It is made of chains (one on SQLite, whose
// writes are serialized anyway; eight on PostgreSQL, made by migration 24), each with its head row in
// audit_head: a write transaction appends to the first chain no other transaction is
// appending to, so that groups committing at once (on one node or several) do not wait for
// each other's commit. Each chain numbers its rows in a range of its own (chain c's rows are
// (c - 1) * kAuditChainSpan + 1, + 2, ...), so seq alone names a row and its chain.
constexpr int64_t kAuditChainSpan = int64_t{1} << 48;
inline int64_t AuditChainOf(int64_t seq) { return (seq - 1) / kAuditChainSpan + 1; }

// One row of the audit log.
struct AuditEntry {
  int64_t seq = 0;
  int64_t at = 0;
  std::string actor;    // "token:<id>", "cli", "system", ...
  std::string action;   // "token.create", ...
  std::string object;   // what was acted on
  std::string details;  // a JSON object; never secrets
  std::string prev_hash;
  std::string hash;
};

// Appends within the caller's transaction, so the entry commits with the change it
// records. hash = SHA-256 over prev_hash and the row's fields. The entries of a transaction
// are gathered (Tx::Gathered) and chained at its end, by Tx::FlushAll or, with the commit,
// Tx::WriteGathered: one look at a chain's head and one statement for a whole group commit.
Result<void> AppendAudit(Tx& tx, int64_t at, std::string_view actor, std::string_view action, std::string_view object,
                         std::string_view details_json);

// A number that grows with every change of state (the sum of the chains' heads).
Result<int64_t> AuditHeadSeq(Tx& tx);

struct AuditFilter {
  std::optional<std::string> actor;
  std::optional<std::string> action;
  // The cursor: per chain, the last row already read (a chain not named: none). Rows of a
  // chain commit in its order, so a reader following the cursor misses none.
  std::vector<int64_t> after;
  int limit = 100;
};
struct AuditPage {
  std::vector<AuditEntry> entries;  // the chains merged, oldest first (by time, then seq)
  std::vector<int64_t> next;        // the cursor after this page
};
Result<AuditPage> ListAudit(Tx& tx, const AuditFilter& filter);

struct AuditVerifyReport {
  int64_t chains = 0;  // chains looked at (up to the broken one)
  int64_t rows_checked = 0;
  std::optional<int64_t> first_broken_seq;
  std::string reason;
};
// Recomputes every chain in seq order, up to the heads as they were when it started, reading
// in pages.
Result<AuditVerifyReport> VerifyAuditChain(Store& store);

// The hash of a row given its predecessor's hash; exposed for tests and tools.
std::string AuditHash(const AuditEntry& e);

}  // namespace certfleet::store
