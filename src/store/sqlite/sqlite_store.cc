#include "store/sqlite/sqlite_store.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "core/log.h"
#include "core/thread_name.h"
#include "store/pool.h"
#include "store/sqlite/wal_vfs.h"

namespace certfleet::store::sqlite {
namespace {

// Writers queue on SQLite's single write lock; wait this long before answering "busy".
constexpr int kBusyTimeoutMs = 10'000;
// Whole-transaction retries after SQLITE_BUSY that outlasted the busy timeout.
constexpr int kMaxAttempts = 3;
// How long a log restart waits for readers still on the log, holding writers back meanwhile.
constexpr int kRestartWaitMs = 100;
constexpr int kPageBytes = 4096;            // SQLite's default page size, one log frame each
constexpr mode_t kDatabaseFileMode = 0600;  // owner read and write only
// The one writer's page cache (SQLite's default is 2 MiB). Indexes on random keys
// (fingerprints, serials) are written all over; a 100,000-certificate import (W3) went
// from 13,000 to 20,000 certificates/s with this. Readers keep the default: there are many.
constexpr int kWriterCacheKiB = 64 * 1024;

class Connection {
 public:
  explicit Connection(sqlite3* db) : db_(db) {}
  ~Connection() {
    for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
    sqlite3_close_v2(db_);
  }
  sqlite3* db() { return db_; }

  Result<sqlite3_stmt*> Prepare(std::string_view sql) {
    auto it = statements_.find(sql);
    if (it != statements_.end()) return it->second;
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) !=
        SQLITE_OK) {
      return MakeError(ErrorCode::kInternal, fmt::format("sqlite prepare: {} in: {}", sqlite3_errmsg(db_), sql));
    }
    statements_.emplace(std::string(sql), stmt);
    return stmt;
  }

 private:
  sqlite3* db_;
  std::map<std::string, sqlite3_stmt*, std::less<>> statements_;
};

Error SqliteError(sqlite3* db, int rc, std::string_view what) {
  ErrorCode code = ErrorCode::kInternal;
  int ext = sqlite3_extended_errcode(db);
  if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY) {
    code = ErrorCode::kAlreadyExists;
  } else if (ext == SQLITE_CONSTRAINT_FOREIGNKEY) {
    code = ErrorCode::kFailedPrecondition;
  } else if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) {
    code = ErrorCode::kUnavailable;
  }
  return Error{code, fmt::format("sqlite {}: {}", what, sqlite3_errmsg(db))};
}

class SqliteTx final : public Tx {
 public:
  explicit SqliteTx(Connection& conn) : conn_(conn) {}
  Dialect dialect() const override { return Dialect::kSqlite; }

  // SQLite runs in-process: nothing to gain from deferring.
  Result<void> ExecDeferred(std::string_view sql, const Params& params) override {
    CF_RETURN_IF_ERROR(Exec(sql, params));
    return Ok();
  }
  Result<void> QueryDeferred(std::string_view sql, const Params& params, RowsCheck check) override {
    CF_ASSIGN_OR_RETURN(Rows rows, Query(sql, params));
    return check(rows);
  }
  Result<void> Flush() override { return Ok(); }

  Result<int64_t> Exec(std::string_view sql, const Params& params) override {
    CF_ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Bind(sql, params));
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    }
    if (rc != SQLITE_DONE) return Finish(stmt, rc, sql);
    sqlite3_reset(stmt);
    return static_cast<int64_t>(sqlite3_changes64(conn_.db()));
  }

  Result<Rows> Query(std::string_view sql, const Params& params) override {
    CF_ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Bind(sql, params));
    Rows rows;
    int rc;
    const int n = sqlite3_column_count(stmt);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      std::vector<std::optional<std::string>> cells(n);
      for (int i = 0; i < n; ++i) {
        if (sqlite3_column_type(stmt, i) == SQLITE_NULL) continue;
        const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, i));
        cells[i] = std::string(text, sqlite3_column_bytes(stmt, i));
      }
      rows.emplace_back(std::move(cells));
    }
    if (rc != SQLITE_DONE) return Finish(stmt, rc, sql);
    sqlite3_reset(stmt);
    return rows;
  }

  Result<void> ExecScript(std::string_view sql) override {
    std::string s(sql);
    char* err = nullptr;
    if (sqlite3_exec(conn_.db(), s.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "unknown error";
      sqlite3_free(err);
      return MakeError(ErrorCode::kInternal, "sqlite script: " + msg);
    }
    return Ok();
  }

 private:
  Result<sqlite3_stmt*> Bind(std::string_view sql, const Params& params) {
    CF_ASSIGN_OR_RETURN(sqlite3_stmt * stmt, conn_.Prepare(sql));
    sqlite3_clear_bindings(stmt);
    if (static_cast<int>(params.size()) != sqlite3_bind_parameter_count(stmt)) {
      return MakeError(ErrorCode::kInternal, fmt::format("sqlite: {} parameters for {} placeholders in: {}",
                                                         params.size(), sqlite3_bind_parameter_count(stmt), sql));
    }
    for (size_t i = 0; i < params.size(); ++i) {
      const int idx = static_cast<int>(i) + 1;
      int rc = SQLITE_OK;
      if (const auto* v = std::get_if<int64_t>(&params[i])) {
        rc = sqlite3_bind_int64(stmt, idx, *v);
      } else if (const auto* s = std::get_if<std::string>(&params[i])) {
        rc = sqlite3_bind_text64(stmt, idx, s->data(), s->size(), SQLITE_TRANSIENT, SQLITE_UTF8);
      } else {
        rc = sqlite3_bind_null(stmt, idx);
      }
      if (rc != SQLITE_OK) return SqliteError(conn_.db(), rc, "bind");
    }
    return stmt;
  }

  Error Finish(sqlite3_stmt* stmt, int rc, std::string_view sql) {
    Error e = SqliteError(conn_.db(), rc, "step");
    sqlite3_reset(stmt);
    // As on PostgreSQL, a broken constraint's message names the constraint, not the statement.
    if (e.code != ErrorCode::kAlreadyExists && e.code != ErrorCode::kFailedPrecondition) {
      e.message += fmt::format(" in: {}", sql.substr(0, 200));
    }
    return e;
  }

  Connection& conn_;
};

// Leader leases on one machine: an exclusive flock on a file beside the database, so two
// processes on the same SQLite file never both lead.
class FileLease final : public LeaderLease {
 public:
  explicit FileLease(int fd) : fd_(fd) {}
  ~FileLease() override {
    flock(fd_, LOCK_UN);
    close(fd_);
  }
  bool Held() override { return true; }

 private:
  int fd_;
};

class SqliteStore final : public Store {
 public:
  SqliteStore(std::string path, int pool_size, CheckpointPolicy checkpoints)
      : path_(std::move(path)), checkpoints_(checkpoints), pool_(pool_size, [this] { return Connect(); }) {}
  ~SqliteStore() override {
    {
      std::lock_guard lock(checkpoint_mu_);
      stopping_ = true;
    }
    checkpoint_cv_.notify_all();
    if (checkpointer_.joinable()) checkpointer_.join();
  }

  Result<void> StartCheckpointer() {
    CF_ASSIGN_OR_RETURN(auto conn, Connect());
    // Writers wait while a restart waits for readers: give up soon and try at the next round.
    sqlite3_busy_timeout(conn->db(), kRestartWaitMs);
    checkpointer_ = std::thread([this, conn = std::move(conn)] {
      NameThisThread("cf-checkpoint");
      CheckpointLoop(*conn);
    });
    return Ok();
  }

  Dialect dialect() const override { return Dialect::kSqlite; }

  Result<std::unique_ptr<Connection>> Connect() {
    sqlite3* db = nullptr;
    int rc = sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             WalCombiningVfs());
    auto conn = std::make_unique<Connection>(db);
    if (rc != SQLITE_OK) {
      return MakeError(ErrorCode::kUnavailable, fmt::format("opening {}: {}", path_, sqlite3_errmsg(db)));
    }
    sqlite3_busy_timeout(db, kBusyTimeoutMs);
    char* err = nullptr;
    // synchronous=FULL syncs the log at every commit: an acknowledged write survives a power
    // cut, not only a crash of the process. The combining VFS needs it, and makes it cheap:
    // one write and one fdatasync per commit of a group. Checkpoints are the checkpointer
    // thread's (wal_autocheckpoint=0); a log that grew during a burst is cut back to the
    // restart length when it starts over.
    const std::string pragmas = fmt::format(
        "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON; PRAGMA synchronous=FULL; PRAGMA temp_store=MEMORY; "
        "PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit={};",
        int64_t{checkpoints_.restart_frames} * kPageBytes);
    if (sqlite3_exec(db, pragmas.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "";
      sqlite3_free(err);
      return MakeError(ErrorCode::kUnavailable, fmt::format("configuring {}: {}", path_, msg));
    }
    return conn;
  }

  Result<void> Transact(const std::function<Result<void>(Tx&)>& fn, TxMode mode) override {
    for (int attempt = 1;; ++attempt) {
      Result<void> r = Ok();
      if (mode == TxMode::kWrite) {
        // SQLite has one writer at a time; writers of this process queue here instead of in
        // SQLite's busy handler, which sleeps for milliseconds between tries. They share one
        // connection, whose page cache stays valid from one commit to the next, where a
        // pooled connection would reread every page another connection's commit changed.
        std::lock_guard writer(write_mu_);
        if (!writer_) {
          CF_ASSIGN_OR_RETURN(writer_, Connect());
          const std::string cache = fmt::format("PRAGMA cache_size=-{}", kWriterCacheKiB);
          if (sqlite3_exec(writer_->db(), cache.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
            return MakeError(ErrorCode::kUnavailable, "configuring the writer's page cache");
          }
        }
        r = RunOnce(*writer_, fn, mode);
      } else {
        CF_ASSIGN_OR_RETURN(auto conn, pool_.Acquire());
        r = RunOnce(*conn, fn, mode);
      }
      if (r.ok() || r.error().code != ErrorCode::kUnavailable || attempt >= kMaxAttempts) return r;
    }
  }

  Result<void> Ping() override {
    return Transact(
        [](Tx& tx) -> Result<void> {
          return tx.Query("SELECT 1").ok() ? Ok() : MakeError(ErrorCode::kUnavailable, "sqlite ping failed");
        },
        TxMode::kRead);
  }

  Result<std::unique_ptr<LeaderLease>> TryLead(std::string_view name) override {
    std::string lock_path = fmt::format("{}.{}.lock", path_, name);
    int fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return MakeError(ErrorCode::kUnavailable, "cannot open lock file " + lock_path);
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      close(fd);
      return std::unique_ptr<LeaderLease>();
    }
    return std::unique_ptr<LeaderLease>(std::make_unique<FileLease>(fd));
  }

 private:
  void CheckpointLoop(Connection& conn) {
    std::unique_lock lock(checkpoint_mu_);
    while (!checkpoint_cv_.wait_for(lock, checkpoints_.interval, [&] { return stopping_; })) {
      lock.unlock();
      int frames = 0;
      int copied = 0;
      int rc = sqlite3_wal_checkpoint_v2(conn.db(), nullptr, SQLITE_CHECKPOINT_PASSIVE, &frames, &copied);
      if (rc == SQLITE_OK && frames >= checkpoints_.restart_frames) {
        // Copies the few frames committed since with writers held back, and waits for the
        // readers still on the log, so that the next writer starts the log over.
        std::lock_guard writer(write_mu_);
        rc = sqlite3_wal_checkpoint_v2(conn.db(), nullptr, SQLITE_CHECKPOINT_RESTART, &frames, &copied);
      }
      if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
        log::Warn("sqlite checkpoint failed", {{"error", sqlite3_errmsg(conn.db())}});
      }
      lock.lock();
    }
  }

  // Runs one of BEGIN, COMMIT, ROLLBACK through the connection's statement cache.
  static int Control(Connection& conn, std::string_view sql) {
    auto stmt = conn.Prepare(sql);
    if (!stmt.ok()) return SQLITE_ERROR;
    const int rc = sqlite3_step(*stmt);
    sqlite3_reset(*stmt);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
  }

  static Result<void> RunOnce(Connection& conn, const std::function<Result<void>(Tx&)>& fn, TxMode mode) {
    int rc = Control(conn, mode == TxMode::kWrite ? "BEGIN IMMEDIATE" : "BEGIN");
    if (rc != SQLITE_OK) return SqliteError(conn.db(), rc, "begin");
    SqliteTx tx(conn);
    Result<void> r = Ok();
    try {
      r = fn(tx);
    } catch (...) {
      // Else the connection (the writer, for every write after) would stay inside the transaction.
      Control(conn, "ROLLBACK");
      throw;
    }
    if (r.ok()) r = tx.WriteGathered();  // what was gathered for the end (statements run at once here)
    if (!r.ok()) {
      Control(conn, "ROLLBACK");
      return r;
    }
    rc = Control(conn, "COMMIT");
    if (rc != SQLITE_OK) {
      Error e = SqliteError(conn.db(), rc, "commit");
      Control(conn, "ROLLBACK");
      return e;
    }
    return Ok();
  }

  const std::string path_;
  const CheckpointPolicy checkpoints_;
  Pool<Connection> pool_;
  std::mutex write_mu_;
  std::unique_ptr<Connection> writer_;  // guarded by write_mu_
  std::mutex checkpoint_mu_;
  std::condition_variable checkpoint_cv_;
  bool stopping_ = false;  // guarded by checkpoint_mu_
  std::thread checkpointer_;
};

}  // namespace

Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path, const Store::Options& options,
                                               const CheckpointPolicy& checkpoints) {
  if (path.empty()) return MakeError(ErrorCode::kInvalidArgument, "sqlite:// needs a file path");
  std::error_code ec;
  auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (ec) return MakeError(ErrorCode::kUnavailable, fmt::format("creating {}: {}", parent.string(), ec.message()));
  // The database holds token hashes, keys' references and the whole registry: certfleet's
  // alone. SQLite gives its -wal and -shm files the database file's mode, so creating it
  // 0600 here covers them too; a file an older version made 0644 is narrowed.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, kDatabaseFileMode);
  if (fd < 0 || ::fchmod(fd, kDatabaseFileMode) != 0) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    return MakeError(ErrorCode::kUnavailable, fmt::format("opening {}: {}", path, std::strerror(err)));
  }
  ::close(fd);
  auto store = std::make_unique<SqliteStore>(path, options.pool_size, checkpoints);
  CF_RETURN_IF_ERROR(store->Ping());
  CF_RETURN_IF_ERROR(store->StartCheckpointer());
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace certfleet::store::sqlite
