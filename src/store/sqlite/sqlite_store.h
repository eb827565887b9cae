#pragma once

#include <memory>
#include <string>

#include "store/store.h"

namespace certfleet::store::sqlite {

// The embedded store: one SQLite file in WAL mode, foreign keys on, busy timeout.
// `path` is a file path (relative to the working directory or absolute).
Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path, const Store::Options& options);

}  // namespace certfleet::store::sqlite
