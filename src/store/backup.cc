#include "store/backup.h"

#include <fmt/format.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <memory>

namespace certfleet::store {
namespace {

constexpr const char* kCountedTables[] = {"certificates",
                                          "cas",
                                          "pending_cas",
                                          "devices",
                                          "registry_objects",
                                          "registry_links",
                                          "hosts",
                                          "renewal_runs",
                                          "renewals",
                                          "jobs",
                                          "audit_log",
                                          "events",
                                          "api_tokens",
                                          "imports",
                                          "import_rows",
                                          "distribution_records",
                                          "ca_keys"};

struct SqliteCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using SqlitePtr = std::unique_ptr<sqlite3, SqliteCloser>;

Result<SqlitePtr> OpenFile(const std::string& path, int flags) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  SqlitePtr db(raw);
  if (rc != SQLITE_OK) {
    return MakeError(ErrorCode::kUnavailable,
                     fmt::format("opening {}: {}", path, raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  }
  return db;
}

}  // namespace

Result<void> BackupSqlite(const std::string& db_url, const std::string& dest) {
  constexpr std::string_view kScheme = "sqlite://";
  if (!db_url.starts_with(kScheme)) {
    return MakeError(ErrorCode::kFailedPrecondition, "only a SQLite store is copied here; PostgreSQL has pg_dump");
  }
  CF_ASSIGN_OR_RETURN(SqlitePtr source, OpenFile(db_url.substr(kScheme.size()), SQLITE_OPEN_READONLY));
  const mode_t old_mask = umask(077);  // the copy is as private as the database
  auto target = OpenFile(dest, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  umask(old_mask);
  if (!target.ok()) return target.error();
  // A busy writer may hold the database briefly: wait for it rather than fail.
  sqlite3_busy_timeout(source.get(), 30'000);
  sqlite3_backup* backup = sqlite3_backup_init(target->get(), "main", source.get(), "main");
  if (!backup) return MakeError(ErrorCode::kUnavailable, fmt::format("backup: {}", sqlite3_errmsg(target->get())));
  const int step = sqlite3_backup_step(backup, -1);  // every page, from one read snapshot
  const int finish = sqlite3_backup_finish(backup);
  if (step != SQLITE_DONE || finish != SQLITE_OK) {
    return MakeError(ErrorCode::kUnavailable, fmt::format("backup to {}: {}", dest, sqlite3_errstr(step)));
  }
  return Ok();
}

Result<std::vector<std::pair<std::string, int64_t>>> RowCounts(Store& store) {
  return Read(store, [](Tx& tx) -> Result<std::vector<std::pair<std::string, int64_t>>> {
    std::vector<std::pair<std::string, int64_t>> out;
    for (const char* table : kCountedTables) {
      CF_ASSIGN_OR_RETURN(Rows rows, tx.Query(fmt::format("SELECT COUNT(*) FROM {}", table)));
      out.emplace_back(table, rows.at(0).Int(0));
    }
    return out;
  });
}

}  // namespace certfleet::store
