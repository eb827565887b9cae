#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/result.h"
#include "store/store.h"

namespace certfleet::store {

// Writes a consistent copy of the SQLite database of `db_url` (sqlite://PATH) to `dest` (a
// new file, mode 0600) while certfleet keeps serving: SQLite's online backup API copies one
// read snapshot, and writers go on meanwhile (WAL). kFailedPrecondition for PostgreSQL,
// whose own pg_dump does this.
Result<void> BackupSqlite(const std::string& db_url, const std::string& dest);

// The row counts of the tables that hold the product's state (certificates, CAs, devices,
// registry, hosts, renewals, jobs, audit log, …), by table: what a backup's manifest records
// and a restore is checked against.
Result<std::vector<std::pair<std::string, int64_t>>> RowCounts(Store& store);

}  // namespace certfleet::store
