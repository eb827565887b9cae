#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "core/enum_names.h"
#include "core/result.h"

namespace certfleet::store {

enum class Dialect { kSqlite, kPostgres };

// A statement parameter. SQL is written with `?` placeholders for both drivers.
using Value = std::variant<std::nullptr_t, int64_t, std::string>;
using Params = std::vector<Value>;
// A nullable column's parameter: NULL when `v` is empty.
template <typename T>
Value OptionalValue(const std::optional<T>& v) {
  return v ? Value(*v) : Value(nullptr);
}

// One result row; cells are text as the database rendered them, or null.
class Row {
 public:
  explicit Row(std::vector<std::optional<std::string>> cells) : cells_(std::move(cells)) {}
  size_t size() const { return cells_.size(); }
  bool IsNull(size_t i) const { return !cells_.at(i).has_value(); }
  // The cell as text; "" for null.
  const std::string& Text(size_t i) const;
  // The cell as an integer; 0 for null.
  int64_t Int(size_t i) const;
  std::optional<std::string> OptText(size_t i) const { return cells_.at(i); }
  std::optional<int64_t> OptInt(size_t i) const;
  // The cell as a value of an enum with one string mapping (core/enum_names.h); kInternal
  // naming `column` for a value the mapping does not know.
  template <typename E, size_t N>
  Result<E> Enum(size_t i, std::string_view column, const std::string_view (&names)[N]) const {
    if (std::optional<E> v = ParseEnum<E>(Text(i), names)) return *v;
    return MakeError(ErrorCode::kInternal, std::string(column) + " holds an unknown value: " + Text(i));
  }

 private:
  std::vector<std::optional<std::string>> cells_;
};
using Rows = std::vector<Row>;

// A Tx runs statements inside one open transaction. Not thread-safe; valid only inside
// the Store::Transact call that created it.
class Tx {
 public:
  virtual ~Tx() = default;
  virtual Dialect dialect() const = 0;
  // Runs one statement; returns the number of rows it changed.
  virtual Result<int64_t> Exec(std::string_view sql, const Params& params = {}) = 0;
  virtual Result<Rows> Query(std::string_view sql, const Params& params = {}) = 0;
  // Runs several `;`-separated statements without parameters (migrations).
  virtual Result<void> ExecScript(std::string_view sql) = 0;
  // Runs a statement whose outcome the caller does not need at once. A driver may send it
  // without waiting for the answer (PostgreSQL pipelines it, saving a round trip each); its
  // error then comes from the next Exec, Query, ExecScript or Flush of this Tx, and at the
  // latest fails the commit. Statements run in the order they were given.
  virtual Result<void> ExecDeferred(std::string_view sql, const Params& params = {}) = 0;
  // A query whose rows `check` looks at once they are in: deferred like ExecDeferred (at the
  // latest at the next Flush), and an error `check` returns is the query's error, so that a
  // check made again inside a write transaction costs no round trip of its own.
  using RowsCheck = std::function<Result<void>(const Rows&)>;
  virtual Result<void> QueryDeferred(std::string_view sql, const Params& params, RowsCheck check) = 0;
  // Waits for the deferred statements; the first error among them, if any.
  virtual Result<void> Flush() = 0;

  // The first row, or nullopt when there is none.
  Result<std::optional<Row>> QueryOne(std::string_view sql, const Params& params = {});
  bool postgres() const { return dialect() == Dialect::kPostgres; }

  // What a repository gathers over a transaction to write in one go at its end (the audit
  // entries of a group commit, under one look at the chain's head, whose row lock is then held
  // only from there to the commit): the vector of T kept under `key`, empty on first use.
  // `write` writes it at FlushAll, in the order of first use, except that a gathering made
  // `last` (the audit log's, which locks the chain's head) is written after the others. A
  // rollback to a savepoint (RollbackTo) drops what was gathered since.
  template <typename T>
  std::vector<T>& Gathered(std::string_view key, std::function<Result<void>(Tx&, std::vector<T>&)> write,
                           bool last = false);
  // Writes what was gathered, then waits for the deferred statements, so that their errors
  // are known before the transaction goes on (a group commit's pieces). Without `last_too`,
  // the `last` gatherings wait for the next FlushAll or WriteGathered (a group commit's pieces
  // flush each alone, and the audit chain's head is locked once, at the group's end). A `last`
  // gathering's write waits for what was deferred before it (the audit log's reads the
  // chain's head); without `answer_last`, its own statements may still wait for the COMMIT.
  Result<void> FlushAll(bool last_too = true, bool answer_last = true);
  // Writes what was gathered, without waiting for the answers: the end of a write
  // transaction, which the drivers reach before COMMIT (PostgreSQL sends COMMIT behind what
  // is still deferred, one round trip for both).
  Result<void> WriteGathered(bool last_too = true);
  // Writes what was gathered under `key` now, so that reads later in the transaction see it.
  Result<void> FlushGathered(std::string_view key);
  // SAVEPOINT name, and what was gathered until then.
  Result<void> Savepoint(std::string_view name);
  // ROLLBACK TO SAVEPOINT name, and what was gathered since is dropped.
  Result<void> RollbackTo(std::string_view name);

 private:
  struct Gathering {
    std::string key;
    std::shared_ptr<void> state;
    std::function<Result<void>(Tx&)> write;
    std::function<size_t()> size;
    std::function<void(size_t)> truncate;
    bool last = false;
  };
  std::vector<Gathering> gathered_;
  // Per savepoint, each gathering's size when it was taken, in gathered_'s order (which
  // only grows until FlushAll).
  std::map<std::string, std::vector<size_t>, std::less<>> savepoints_;
};

template <typename T>
std::vector<T>& Tx::Gathered(std::string_view key, std::function<Result<void>(Tx&, std::vector<T>&)> write, bool last) {
  for (auto& g : gathered_) {
    if (g.key == key) return *static_cast<std::vector<T>*>(g.state.get());
  }
  auto state = std::make_shared<std::vector<T>>();
  std::vector<T>& out = *state;
  gathered_.push_back(
      Gathering{std::string(key), state, [state, write = std::move(write)](Tx& tx) { return write(tx, *state); },
                [state] { return state->size(); },
                [state](size_t n) {
                  state->erase(state->begin() + static_cast<ptrdiff_t>(std::min(n, state->size())), state->end());
                },
                last});
  return out;
}

// Held while this node is the one leader for a name (the scheduler); released on destruction.
class LeaderLease {
 public:
  virtual ~LeaderLease() = default;
  // False once the lease was lost (e.g. the database connection holding it broke).
  virtual bool Held() = 0;
};

enum class TxMode {
  kWrite,  // takes the write lock at BEGIN (SQLite: BEGIN IMMEDIATE) so it never fails midway on lock upgrade
  kRead,
  // Reads with no transaction around them: each statement sees the latest commit, and on
  // PostgreSQL costs one round trip instead of three. For lookups that tolerate a write
  // between two of their statements (the writes they lead to check again). SQLite: as kRead.
  kReadEach,
};

// The reason of the error Transact returns when the connection broke after COMMIT was sent:
// the transaction may have committed or not, and is not run again. Whoever undoes work outside
// the database when a write fails must not on this error, since committed rows may point at it.
inline constexpr std::string_view kCommitOutcomeUnknown = "commit outcome unknown";
inline bool MayHaveCommitted(const Error& e) { return e.reason == kCommitOutcomeUnknown; }

// A Store is the database: a connection pool and transactions. Thread-safe.
class Store {
 public:
  struct Options {
    int pool_size = 8;
  };

  // sqlite://PATH or postgresql://user:pass@host:port/db (any libpq URI).
  static Result<std::unique_ptr<Store>> Open(const std::string& url, const Options& options);
  virtual ~Store() = default;

  virtual Dialect dialect() const = 0;
  // Runs `fn` in one transaction: commits if it returns ok, rolls back otherwise. On a
  // serialization failure or deadlock, or a connection that broke before COMMIT, the whole
  // `fn` runs again, so it must change nothing outside the transaction. A connection that
  // broke once COMMIT was sent gives kCommitOutcomeUnknown (see MayHaveCommitted).
  virtual Result<void> Transact(const std::function<Result<void>(Tx&)>& fn, TxMode mode = TxMode::kWrite) = 0;
  // True when a round trip to the database works.
  virtual Result<void> Ping() = 0;
  // Takes the named leader lease if no node holds it; nullptr if another one does.
  virtual Result<std::unique_ptr<LeaderLease>> TryLead(std::string_view name) = 0;

  // One statement in its own transaction.
  Result<int64_t> Exec(std::string_view sql, const Params& params = {});
  Result<Rows> Query(std::string_view sql, const Params& params = {});
};

// A column of a many-row write: its name and its PostgreSQL type ("text", "bigint").
struct Column {
  std::string_view name;
  std::string_view pg_type;
};
// Writes `rows` (a value per column each) into `table`, with `tail` after the values (e.g.
// "ON CONFLICT (kind, name) DO NOTHING"). On PostgreSQL it is one statement whatever the
// number of rows (each column goes as one array parameter), elsewhere one prepared statement
// a row. Deferred (see Tx::ExecDeferred). As in PostgreSQL, a row that conflicts with another
// of the same call is allowed with DO NOTHING only.
Result<void> InsertRows(Tx& tx, std::string_view table, std::span<const Column> columns,
                        const std::vector<Params>& rows, std::string_view tail = {});
// Runs an INSERT … RETURNING id and gives the id.
Result<int64_t> InsertReturningId(Tx& tx, std::string_view sql, const Params& params);
// Serializes the transactions that call it with the same `key` among all nodes: on
// PostgreSQL an advisory lock held until the transaction ends; SQLite's writers are
// serialized already.
Result<void> LockForTransaction(Tx& tx, int64_t key);
// The same with a key made from `name` (a SHA-256 prefix), for locks of one row's identity
// ("enroll device:d1", "renewal host:h1") that hold before the row is read or even exists.
Result<void> LockForTransaction(Tx& tx, std::string_view name);
// The same lock if no other transaction holds it (true), without waiting: for a transaction
// that holds several such locks (a group commit's), where waiting could deadlock with another
// holding them in another order.
Result<bool> TryLockForTransaction(Tx& tx, std::string_view name);
// The same lock shared: transactions that share it run at once, one that takes it alone
// (LockForTransaction) waits for them, and those asking after it wait for it (PostgreSQL
// queues lock requests: a stream of sharers never starves it). Deferred (see
// Tx::ExecDeferred): it is held from when the statements before it have run.
Result<void> LockSharedForTransaction(Tx& tx, std::string_view name);
// `column IN <values>` for a WHERE clause, the values appended to `params` as one parameter,
// so that the statement is prepared once whatever their number.
std::string InValues(const Tx& tx, std::string_view column, const std::vector<std::string>& values, Params& params);

// Runs `fn(tx)`, which returns a Result<T>, in one transaction and returns what it
// returned: `auto jobs = store::Read(st, [&](Tx& tx) { return ListJobs(tx, filter); });`
template <typename Fn>
auto InTransaction(Store& store, TxMode mode, Fn&& fn) -> std::invoke_result_t<Fn&, Tx&> {
  using R = std::invoke_result_t<Fn&, Tx&>;
  if constexpr (std::is_void_v<typename R::value_type>) {
    return store.Transact(fn, mode);
  } else {
    std::optional<typename R::value_type> out;
    CF_RETURN_IF_ERROR(store.Transact(
        [&](Tx& tx) -> Result<void> {
          R r = fn(tx);
          if (!r.ok()) return r.error();
          out.emplace(std::move(r).value());
          return Ok();
        },
        mode));
    return std::move(*out);
  }
}
template <typename Fn>
auto Read(Store& store, Fn&& fn) {
  return InTransaction(store, TxMode::kRead, std::forward<Fn>(fn));
}
// The same with TxMode::kReadEach: each statement on its own (one round trip on PostgreSQL).
template <typename Fn>
auto ReadEach(Store& store, Fn&& fn) {
  return InTransaction(store, TxMode::kReadEach, std::forward<Fn>(fn));
}
template <typename Fn>
auto Write(Store& store, Fn&& fn) {
  return InTransaction(store, TxMode::kWrite, std::forward<Fn>(fn));
}

}  // namespace certfleet::store
