#pragma once

#include <string_view>

#include "store/store.h"

namespace certfleet::store {

// A schema change. `sql` is written once for both databases; `{{id}}` becomes an
// auto-incrementing 64-bit primary key in each dialect. `postgres_sql` runs after it on
// PostgreSQL only (what only several writers at once need).
struct Migration {
  int version;
  std::string_view name;
  std::string_view sql;
  std::string_view postgres_sql = {};
};

// Applies, in order and each in its own transaction, the migrations not applied yet.
// Safe to run from several nodes at once. Returns how many were applied.
Result<int> Migrate(Store& store);
// The highest applied version, 0 for an empty database.
Result<int> SchemaVersion(Store& store);

}  // namespace certfleet::store
