// The SQLite driver's own behaviour: checkpoints on a thread of their own.
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "store/sqlite/sqlite_store.h"
#include "testing/db.h"

namespace certfleet::store::sqlite {
namespace {

using namespace std::chrono_literals;

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

}  // namespace
}  // namespace certfleet::store::sqlite
