#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>

#include "store/store.h"

namespace certfleet::testing {

// The URL of the PostgreSQL server the ctest fixture started; fails the test if absent.
std::string PostgresAdminUrl();
// A new, empty, migrated database of the given kind: a SQLite file in a fresh temporary
// folder, or a fresh database on the fixture's PostgreSQL server. `url` receives its URL.
std::unique_ptr<store::Store> FreshStore(store::Dialect dialect, std::string* url = nullptr, int pool_size = 8);
// For INSTANTIATE_TEST_SUITE_P over both drivers:
//   INSTANTIATE_TEST_SUITE_P(Drivers, MyTest, testing::kBothDialects, testing::DialectName);
inline const auto kBothDialects = ::testing::Values(store::Dialect::kSqlite, store::Dialect::kPostgres);
inline std::string DialectName(const ::testing::TestParamInfo<store::Dialect>& info) {
  return info.param == store::Dialect::kSqlite ? "SQLite" : "PostgreSQL";
}

// A fresh temporary folder.
std::string TempDir();

// Until a backend of the store's PostgreSQL database waits for a lock, or `ended` (the side
// that would wait finished without waiting); whether one waits. Bounded in tries, not time.
bool SomeoneWaitsForALock(store::Store& store, const std::atomic<bool>& ended);

}  // namespace certfleet::testing
