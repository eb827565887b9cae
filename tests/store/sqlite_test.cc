// The SQLite driver's own behaviour: checkpoints on a thread of their own, and commits that
// are on disk, in a file any SQLite can read, before they are acknowledged.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <thread>

#include "store/sqlite/sqlite_store.h"
#include "testing/db.h"

namespace certfleet::store::sqlite {
namespace {

using namespace std::chrono_literals;

// Runs `sql` (one value) on `path` through SQLite's own default VFS, as any other tool reads
// the file; an empty string if it fails.
std::string QueryWithPlainSqlite(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  std::string value;
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK &&
      sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) == SQLITE_OK && sqlite3_step(stmt) == SQLITE_ROW) {
    value = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
  }
  sqlite3_finalize(stmt);
  sqlite3_close_v2(db);
  return value;
}

TEST(SqliteStore, CheckpointsKeepTheLogShortWhileWritesGoOn) {
  const std::string path = testing::TempDir() + "/wal.db";
  const CheckpointPolicy policy{.interval = 20ms, .restart_frames = 256};
  auto store = OpenSqliteStore(path, {}, policy);
  ASSERT_TRUE(store.ok()) << store.error().message;
  Store& st = **store;
  ASSERT_TRUE(st.Exec("CREATE TABLE rows (id INTEGER PRIMARY KEY, data TEXT NOT NULL)").ok());

  // About 80 MiB in 400 transactions of 64 rows of 3,000 bytes (a page each), with no pause
  // long enough for the log to empty by itself.
  constexpr int kTransactions = 400;
  constexpr int kRowsPerTransaction = 64;
  const std::string row(3000, 'x');
  uintmax_t longest_log = 0;
  for (int t = 0; t < kTransactions; ++t) {
    Result<void> r = st.Transact([&](Tx& tx) -> Result<void> {
      for (int i = 0; i < kRowsPerTransaction; ++i) {
        CF_RETURN_IF_ERROR(tx.Exec("INSERT INTO rows (data) VALUES (?)", {row}));
      }
      return Ok();
    });
    ASSERT_TRUE(r.ok()) << r.error().message;
    std::error_code ec;
    longest_log = std::max(longest_log, std::filesystem::file_size(path + "-wal", ec));
    std::this_thread::sleep_for(1ms);
  }
  // Written: 400 x 64 frames (100 MiB of log without checkpoints). The log starts over once it
  // passes 256 frames (1 MiB) and is cut back to that length; between two checkpoints (20 ms)
  // a few transactions add to it.
  EXPECT_LT(longest_log, 32u << 20) << "the log grew to " << longest_log << " bytes";
  auto rows = Read(st, [](Tx& tx) { return tx.QueryOne("SELECT COUNT(*) FROM rows"); });
  ASSERT_TRUE(rows.ok() && rows->has_value());
  EXPECT_EQ((*rows)->Int(0), kTransactions * kRowsPerTransaction);
  // The checkpointed pages are in the database file itself.
  EXPECT_GT(std::filesystem::file_size(path), uintmax_t{kTransactions} * kRowsPerTransaction * 3000 / 2);
}

TEST(SqliteStore, EveryAcknowledgedCommitSurvivesAKilledProcess) {
  const std::string path = testing::TempDir() + "/killed.db";
  int acks[2];
  ASSERT_EQ(pipe(acks), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Small commits, a frame or two each: far below the size at which gathered log frames
    // are written out early, so only the commit itself can have put them on disk.
    close(acks[0]);
    auto store = OpenSqliteStore(path, {});
    if (!store.ok() || !(*store)->Exec("CREATE TABLE rows (id INTEGER PRIMARY KEY, data TEXT NOT NULL)").ok()) _exit(2);
    for (int i = 0; i < 200; ++i) {
      if (!(*store)->Exec("INSERT INTO rows (data) VALUES (?)", {std::string(500, 'r')}).ok()) _exit(3);
      if (write(acks[1], "+", 1) != 1) _exit(4);
    }
    kill(getpid(), SIGKILL);  // no destructor, no close: as a crash or kill -9
  }
  close(acks[1]);
  int acknowledged = 0;
  char c;
  while (read(acks[0], &c, 1) == 1) ++acknowledged;
  close(acks[0]);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the writer stopped early, exit status " << WEXITSTATUS(status);
  EXPECT_EQ(acknowledged, 200);
  EXPECT_EQ(QueryWithPlainSqlite(path, "SELECT COUNT(*) FROM rows"), std::to_string(acknowledged));
}

TEST(SqliteStore, TransactionsLargerThanThePageCacheCommitWhole) {
  // 24 MiB in one transaction: SQLite spills pages into the log before the commit and reads
  // them back, and writes frames far beyond what one write call of its VFS may carry.
  const std::string path = testing::TempDir() + "/large.db";
  auto store = OpenSqliteStore(path, {});
  ASSERT_TRUE(store.ok()) << store.error().message;
  Store& st = **store;
  ASSERT_TRUE(st.Exec("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data TEXT NOT NULL)").ok());
  constexpr int kRows = 96;
  Result<void> r = st.Transact([&](Tx& tx) -> Result<void> {
    for (int i = 0; i < kRows; ++i) {
      CF_RETURN_IF_ERROR(tx.Exec("INSERT INTO blobs (data) VALUES (?)", {std::string(256 << 10, 'a' + i % 26)}));
    }
    // Read back inside the transaction, from pages that left the cache.
    CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT SUM(LENGTH(data)) FROM blobs WHERE substr(data, 1, 1) = 'a'"));
    if (!row || row->Int(0) != 4 * (256 << 10)) return MakeError(ErrorCode::kInternal, "read back wrong");
    return Ok();
  });
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(QueryWithPlainSqlite(path, "SELECT SUM(LENGTH(data)) FROM blobs"), std::to_string(kRows * (256 << 10)));
  EXPECT_EQ(QueryWithPlainSqlite(path, "PRAGMA integrity_check"), "ok");
}

}  // namespace
}  // namespace certfleet::store::sqlite
