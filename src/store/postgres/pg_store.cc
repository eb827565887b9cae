#include "store/postgres/pg_store.h"

#include <fmt/format.h>
#include <libpq-fe.h>

#include <map>

#include "core/config.h"
#include "core/crypto.h"
#include "store/pool.h"

namespace certfleet::store::postgres {
namespace {

// Whole-transaction retries after a serialization failure or deadlock.
constexpr int kMaxAttempts = 5;

using PgResultPtr = std::unique_ptr<PGresult, decltype(&PQclear)>;

class Connection {
 public:
  explicit Connection(PGconn* conn) : conn_(conn) {}
  ~Connection() { PQfinish(conn_); }
  PGconn* get() { return conn_; }
  bool Broken() const { return PQstatus(conn_) != CONNECTION_OK; }

  bool IsPrepared(std::string_view sql) const { return statements_.find(sql) != statements_.end(); }
  // The name of the prepared statement for `sql`, preparing it on first use.
  Result<std::string> Prepared(std::string_view sql, int nparams) {
    auto it = statements_.find(sql);
    if (it != statements_.end()) return it->second;
    std::string name = fmt::format("cf{}", statements_.size());
    PgResultPtr res(PQprepare(conn_, name.c_str(), ToPgPlaceholders(sql).c_str(), nparams, nullptr), &PQclear);
    if (PQresultStatus(res.get()) != PGRES_COMMAND_OK) return ResultError(res.get(), sql);
    statements_.emplace(std::string(sql), name);
    return name;
  }

  Error ResultError(const PGresult* res, std::string_view sql) {
    const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
    std::string_view sqlstate = state ? state : "";
    ErrorCode code = ErrorCode::kInternal;
    if (sqlstate == "23505") {
      code = ErrorCode::kAlreadyExists;
    } else if (sqlstate == "23503") {
      code = ErrorCode::kFailedPrecondition;
    } else if (sqlstate == "40001" || sqlstate == "40P01" || Broken() || sqlstate.starts_with("08") ||
               sqlstate.starts_with("57P")) {
      // A server shutting down or restarting (57P01-57P03) ends the connection with an answer
      // of its own, read before libpq sees the connection closed (a pipelined BEGIN's).
      code = ErrorCode::kUnavailable;
    }
    // A broken constraint is the caller's to explain, and its message may reach a client
    // (a 409): the constraint, not the statement or the row's values.
    if (code == ErrorCode::kAlreadyExists || code == ErrorCode::kFailedPrecondition) {
      const char* primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
      return Error{code, fmt::format("postgresql {}: {}", sqlstate, primary ? primary : "a constraint failed")};
    }
    std::string msg = res ? PQresultErrorMessage(res) : PQerrorMessage(conn_);
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    return Error{code, fmt::format("postgresql {}: {} in: {}", sqlstate, msg, sql.substr(0, 200))};
  }

 private:
  PGconn* conn_;
  std::map<std::string, std::string, std::less<>> statements_;
};

class PgTx final : public Tx {
 public:
  explicit PgTx(Connection& conn) : conn_(conn) {}
  Dialect dialect() const override { return Dialect::kPostgres; }

  Result<int64_t> Exec(std::string_view sql, const Params& params) override {
    CF_RETURN_IF_ERROR(Flush());
    CF_ASSIGN_OR_RETURN(auto res, Run(sql, params));
    const char* n = PQcmdTuples(res.get());
    return n && *n ? std::stoll(n) : int64_t{0};
  }

  Result<Rows> Query(std::string_view sql, const Params& params) override {
    CF_RETURN_IF_ERROR(Flush());
    CF_ASSIGN_OR_RETURN(auto res, Run(sql, params));
    return RowsOf(res.get());
  }

  Result<void> ExecScript(std::string_view sql) override {
    CF_RETURN_IF_ERROR(Flush());
    std::string s(sql);
    PgResultPtr res(PQexec(conn_.get(), s.c_str()), &PQclear);
    if (PQresultStatus(res.get()) != PGRES_COMMAND_OK && PQresultStatus(res.get()) != PGRES_TUPLES_OK) {
      return conn_.ResultError(res.get(), sql);
    }
    return Ok();
  }

  // Deferred statements go out in libpq's pipeline mode: sent one after another, their
  // answers read together by Flush.
  Result<void> ExecDeferred(std::string_view sql, const Params& params) override {
    return SendDeferred(sql, params, nullptr);
  }

  Result<void> QueryDeferred(std::string_view sql, const Params& params, RowsCheck check) override {
    return SendDeferred(sql, params, std::move(check));
  }

  Result<void> Flush() override {
    if (pending_.empty()) return Ok();
    std::optional<Error> first;
    if (PQpipelineSync(conn_.get()) != 1) first = conn_.ResultError(nullptr, pending_.front().sql);
    for (const auto& p : pending_) {
      PgResultPtr res(PQgetResult(conn_.get()), &PQclear);
      const auto status = PQresultStatus(res.get());
      if (!first && status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
        first = conn_.ResultError(res.get(), p.sql);
      if (!first && p.check) {
        if (Result<void> checked = p.check(RowsOf(res.get())); !checked.ok()) first = checked.error();
      }
      if (p.commit && status == PGRES_COMMAND_OK) committed_ = std::string_view(PQcmdStatus(res.get())) == "COMMIT";
      while (PGresult* rest = PQgetResult(conn_.get())) PQclear(rest);  // the null that ends each statement's answer
    }
    // The sync point's own answer.
    while (PGresult* sync = PQgetResult(conn_.get())) {
      const bool done = PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
      PQclear(sync);
      if (done) break;
    }
    pending_.clear();
    if (PQexitPipelineMode(conn_.get()) != 1 && !first) first = conn_.ResultError(nullptr, "leaving pipeline mode");
    if (first) return *first;
    return Ok();
  }

  // BEGIN, deferred: it goes with the transaction's first statements.
  Result<void> Begin(TxMode mode) {
    return SendControl(mode == TxMode::kWrite ? "BEGIN" : "BEGIN READ ONLY", /*commit=*/false);
  }

  // COMMIT behind the statements still deferred, and waits for them all: one round trip.
  // A transaction a failed statement aborted ends with ROLLBACK whatever was asked: when the
  // caller went on past that failure, none of its writes are stored, and saying so is the truth.
  Result<void> Commit() {
    committed_ = false;
    CF_RETURN_IF_ERROR(SendControl("COMMIT", /*commit=*/true));
    CF_RETURN_IF_ERROR(Flush());
    if (!committed_) {
      return MakeError(ErrorCode::kInternal, "the transaction was rolled back: one of its statements had failed");
    }
    return Ok();
  }

 private:
  static constexpr size_t kSqlInErrors = 200;  // how much of a statement an error message quotes

  // A deferred statement sent and not yet answered.
  struct Pending {
    std::string sql;      // its start, for errors
    RowsCheck check;      // for a QueryDeferred
    bool commit = false;  // the transaction's COMMIT
  };

  static Rows RowsOf(PGresult* res) {
    Rows rows;
    const int nrows = PQntuples(res);
    const int ncols = PQnfields(res);
    rows.reserve(nrows);
    for (int r = 0; r < nrows; ++r) {
      std::vector<std::optional<std::string>> cells(ncols);
      for (int c = 0; c < ncols; ++c) {
        if (!PQgetisnull(res, r, c)) cells[c] = std::string(PQgetvalue(res, r, c), PQgetlength(res, r, c));
      }
      rows.emplace_back(std::move(cells));
    }
    return rows;
  }

  Result<void> SendDeferred(std::string_view sql, const Params& params, RowsCheck check) {
    // Preparing waits for its answer, which cannot happen inside a pipeline.
    if (!conn_.IsPrepared(sql)) CF_RETURN_IF_ERROR(Flush());
    CF_ASSIGN_OR_RETURN(std::string name, conn_.Prepared(sql, static_cast<int>(params.size())));
    Bound bound(params);
    return Send(sql, std::move(check), /*commit=*/false, [&] {
      return PQsendQueryPrepared(conn_.get(), name.c_str(), static_cast<int>(params.size()), bound.values.data(),
                                 nullptr, nullptr, 0);
    });
  }

  // A transaction's BEGIN or COMMIT, deferred.
  Result<void> SendControl(const char* sql, bool commit) {
    return Send(sql, nullptr, commit,
                [&] { return PQsendQueryParams(conn_.get(), sql, 0, nullptr, nullptr, nullptr, nullptr, 0); });
  }

  // Sends a statement in pipeline mode (`send` makes libpq's call); its answer waits for Flush.
  template <typename SendFn>
  Result<void> Send(std::string_view sql, RowsCheck check, bool commit, SendFn send) {
    if (pending_.empty() && PQenterPipelineMode(conn_.get()) != 1) return conn_.ResultError(nullptr, sql);
    if (send() != 1) {
      Error e = conn_.ResultError(nullptr, sql);
      if (pending_.empty()) PQexitPipelineMode(conn_.get());
      Result<void> drained = Flush();
      return drained.ok() ? e : drained;
    }
    pending_.push_back(Pending{std::string(sql.substr(0, kSqlInErrors)), std::move(check), commit});
    return Ok();
  }

  // Parameters as the text libpq sends.
  struct Bound {
    explicit Bound(const Params& params) : text(params.size()), values(params.size(), nullptr) {
      for (size_t i = 0; i < params.size(); ++i) {
        if (const auto* v = std::get_if<int64_t>(&params[i])) {
          text[i] = std::to_string(*v);
          values[i] = text[i].c_str();
        } else if (const auto* s = std::get_if<std::string>(&params[i])) {
          values[i] = s->c_str();
        }
      }
    }
    std::vector<std::string> text;
    std::vector<const char*> values;
  };

  Result<PgResultPtr> Run(std::string_view sql, const Params& params) {
    CF_ASSIGN_OR_RETURN(std::string name, conn_.Prepared(sql, static_cast<int>(params.size())));
    Bound bound(params);
    PgResultPtr res(PQexecPrepared(conn_.get(), name.c_str(), static_cast<int>(params.size()), bound.values.data(),
                                   nullptr, nullptr, 0),
                    &PQclear);
    auto status = PQresultStatus(res.get());
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) return conn_.ResultError(res.get(), sql);
    return res;
  }

  Connection& conn_;
  std::vector<Pending> pending_;
  bool committed_ = false;  // what the last Commit's COMMIT answered
};

Result<std::unique_ptr<Connection>> Connect(const std::string& url) {
  auto conn = std::make_unique<Connection>(PQconnectdb(url.c_str()));
  if (conn->Broken()) {
    std::string msg = PQerrorMessage(conn->get());
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    return MakeError(ErrorCode::kUnavailable, fmt::format("connecting to {}: {}", MaskUrlCredentials(url), msg));
  }
  PgResultPtr res(PQexec(conn->get(), "SET client_min_messages TO warning"), &PQclear);
  return conn;
}

// A session-level advisory lock held on a connection of its own.
class AdvisoryLease final : public LeaderLease {
 public:
  explicit AdvisoryLease(std::unique_ptr<Connection> conn) : conn_(std::move(conn)) {}
  // Released at once: closing the connection alone releases the lock only once the server gets
  // round to it, and another node trying right after (a step-down, a handover) would not lead.
  ~AdvisoryLease() override {
    if (conn_->Broken()) return;
    PgResultPtr res(PQexec(conn_->get(), "SELECT pg_advisory_unlock_all()"), &PQclear);
  }
  AdvisoryLease(const AdvisoryLease&) = delete;
  AdvisoryLease& operator=(const AdvisoryLease&) = delete;
  bool Held() override {
    PgResultPtr res(PQexec(conn_->get(), "SELECT 1"), &PQclear);
    return PQresultStatus(res.get()) == PGRES_TUPLES_OK;
  }

 private:
  std::unique_ptr<Connection> conn_;  // closing it releases the lock
};

class PgStore final : public Store {
 public:
  PgStore(std::string url, int pool_size) : url_(std::move(url)), pool_(pool_size, [this] { return Connect(url_); }) {}

  Dialect dialect() const override { return Dialect::kPostgres; }

  Result<void> Transact(const std::function<Result<void>(Tx&)>& fn, TxMode mode) override {
    for (int attempt = 1;; ++attempt) {
      CF_ASSIGN_OR_RETURN(auto conn, pool_.Acquire());
      bool committing = false;
      Result<void> r = Ok();
      try {
        r = RunOnce(*conn, fn, mode, committing);
      } catch (...) {
        // Closed rather than pooled: it may be inside the transaction, or in pipeline mode, and
        // closing it rolls back.
        conn.Discard();
        throw;
      }
      const bool broken = conn->Broken();
      if (broken) {
        conn.Discard();
        pool_.DropIdle();
      }
      if (r.ok()) return r;
      // Whether the server committed before the connection broke cannot be known here: running
      // `fn` again could do its work twice.
      if (broken && committing) {
        return Error{ErrorCode::kUnavailable,
                     "the connection to PostgreSQL broke while the transaction committed: it may or may not have "
                     "committed (" +
                         r.error().message + ")",
                     std::string(kCommitOutcomeUnknown)};
      }
      if (r.error().code != ErrorCode::kUnavailable || attempt >= kMaxAttempts) return r;
    }
  }

  Result<void> Ping() override {
    return Transact(
        [](Tx& tx) -> Result<void> {
          return tx.Query("SELECT 1").ok() ? Ok() : MakeError(ErrorCode::kUnavailable, "postgresql ping failed");
        },
        TxMode::kRead);
  }

  Result<std::unique_ptr<LeaderLease>> TryLead(std::string_view name) override {
    CF_ASSIGN_OR_RETURN(auto conn, Connect(url_));
    // Advisory locks take a 64-bit key: the first 8 bytes of SHA-256 of the name.
    std::string digest = Sha256(name);
    int64_t key = 0;
    for (int i = 0; i < 8; ++i) key = (key << 8) | static_cast<uint8_t>(digest[i]);
    std::string sql = fmt::format("SELECT pg_try_advisory_lock({})", key);
    PgResultPtr res(PQexec(conn->get(), sql.c_str()), &PQclear);
    if (PQresultStatus(res.get()) != PGRES_TUPLES_OK) return conn->ResultError(res.get(), sql);
    if (std::string_view(PQgetvalue(res.get(), 0, 0)) != "t") return std::unique_ptr<LeaderLease>();
    return std::unique_ptr<LeaderLease>(std::make_unique<AdvisoryLease>(std::move(conn)));
  }

 private:
  // `committing` turns true once COMMIT is sent.
  static Result<void> RunOnce(Connection& conn, const std::function<Result<void>(Tx&)>& fn, TxMode mode,
                              bool& committing) {
    PgTx tx(conn);
    if (mode == TxMode::kReadEach) return fn(tx);
    CF_RETURN_IF_ERROR(tx.Begin(mode));
    Result<void> r = fn(tx);
    // What was gathered written before COMMIT or ROLLBACK; what is still deferred (the audit
    // entries) goes with COMMIT.
    if (r.ok()) r = tx.WriteGathered();
    if (r.ok()) {
      committing = true;
      r = tx.Commit();
    }
    if (!r.ok()) {
      (void)tx.Flush();  // what is still deferred answered, so that ROLLBACK can be sent
      PgResultPtr res(PQexec(conn.get(), "ROLLBACK"), &PQclear);
    }
    return r;
  }

  const std::string url_;
  Pool<Connection> pool_;
};

}  // namespace

std::string ToPgPlaceholders(std::string_view sql) {
  std::string out;
  out.reserve(sql.size() + 16);
  int n = 0;
  bool quoted = false;
  for (char c : sql) {
    if (c == '\'') quoted = !quoted;
    if (c == '?' && !quoted) {
      out += fmt::format("${}", ++n);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

Result<std::unique_ptr<Store>> OpenPgStore(const std::string& url, const Store::Options& options) {
  auto store = std::make_unique<PgStore>(url, options.pool_size);
  CF_RETURN_IF_ERROR(store->Ping());
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace certfleet::store::postgres
