#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "store/store.h"

namespace certfleet::store {

// One row of the append-only, hash-chained audit log.
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
// are gathered and chained at its end (Tx::Gathered, Tx::FlushAll): one look at the chain's
// head and one statement for a whole group commit.
Result<void> AppendAudit(Tx& tx, int64_t at, std::string_view actor, std::string_view action, std::string_view object,
                         std::string_view details_json);

// The sequence number of the last entry: it grows with every change of state.
Result<int64_t> AuditHeadSeq(Tx& tx);

struct AuditFilter {
  std::optional<std::string> actor;
  std::optional<std::string> action;
  std::optional<int64_t> after_seq;  // cursor: rows with seq greater than this
  int limit = 100;
};
Result<std::vector<AuditEntry>> ListAudit(Tx& tx, const AuditFilter& filter);

struct AuditVerifyReport {
  int64_t rows_checked = 0;
  std::optional<int64_t> first_broken_seq;
  std::string reason;
};
// Recomputes the whole chain in seq order, reading in pages.
Result<AuditVerifyReport> VerifyAuditChain(Store& store);

// The hash of a row given its predecessor's hash; exposed for tests and tools.
std::string AuditHash(const AuditEntry& e);

}  // namespace certfleet::store
