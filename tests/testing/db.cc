#include "testing/db.h"

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/crypto.h"
#include "store/migrations.h"

namespace certfleet::testing {

std::string TempDir() {
  const char* state = std::getenv("CERTFLEET_TEST_STATE");
  std::filesystem::path base = state ? state : std::filesystem::temp_directory_path();
  std::filesystem::path dir = base / "tmp" / RandomToken(8);
  std::filesystem::create_directories(dir);
  return dir.string();
}

std::string PostgresAdminUrl() {
  const char* state = std::getenv("CERTFLEET_TEST_STATE");
  std::ifstream in(std::string(state ? state : "") + "/pg/url");
  std::string url;
  std::getline(in, url);
  if (url.empty()) ADD_FAILURE() << "no PostgreSQL URL: run through ctest (the pg fixture starts the server)";
  return url;
}

std::unique_ptr<store::Store> FreshStore(store::Dialect dialect, std::string* url_out, int pool_size) {
  std::string url;
  if (dialect == store::Dialect::kSqlite) {
    url = "sqlite://" + TempDir() + "/test.db";
  } else {
    const std::string admin = PostgresAdminUrl();
    std::string name = "t_" + HexEncode(RandomBytes(6));
    PGconn* conn = PQconnectdb(admin.c_str());
    PGresult* res = PQexec(conn, ("CREATE DATABASE " + name).c_str());
    EXPECT_EQ(PQresultStatus(res), PGRES_COMMAND_OK) << PQerrorMessage(conn);
    PQclear(res);
    PQfinish(conn);
    url = admin.substr(0, admin.rfind('/') + 1) + name;
  }
  if (url_out) *url_out = url;
  auto st = store::Store::Open(url, {pool_size});
  EXPECT_TRUE(st.ok()) << st.error().message;
  if (!st.ok()) return nullptr;
  auto migrated = store::Migrate(**st);
  EXPECT_TRUE(migrated.ok()) << migrated.error().message;
  return std::move(st).value();
}

bool SomeoneWaitsForALock(store::Store& store, const std::atomic<bool>& ended) {
  for (int i = 0; i < 100'000 && !ended; ++i) {
    auto rows = store.Query(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'");
    if (rows.ok() && rows->at(0).Int(0) > 0) return true;
  }
  return false;
}

}  // namespace certfleet::testing
