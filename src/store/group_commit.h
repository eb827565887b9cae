#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "core/result.h"
#include "store/store.h"

namespace certfleet::store {

// Commits many small write transactions as one. Callers hand in pieces of work; a thread of
// the committer's own runs the queued pieces in a single transaction, commits once and gives
// each caller its own result. If a piece fails, the batch runs again with each piece inside
// its own SAVEPOINT, so that the failing one rolls back alone. A result is given only after
// its piece committed (or failed), so nothing is acknowledged before it is stored. Pieces
// may run again if the whole transaction is retried, like any Store::Transact function.
// Thread-safe.
class GroupCommitter {
 public:
  using Piece = std::function<Result<void>(Tx&)>;
  // Called on the committer's thread, which runs the next batch only once it returns: keep
  // it short (hand the result over to another thread).
  using Done = std::function<void(Result<void>)>;

  explicit GroupCommitter(Store& store, size_t max_batch = kDefaultMaxBatch);
  ~GroupCommitter();  // runs what is queued, then stops

  // Queues `piece` and returns at once; `done` gets its result.
  void Submit(Piece piece, Done done);
  // Queues `piece` and waits for its result.
  Result<void> Run(Piece piece);

 private:
  // Bounds the time one transaction holds the write lock and the work lost to a failed commit.
  static constexpr size_t kDefaultMaxBatch = 128;

  struct Pending {
    Piece piece;
    Done done;
    Result<void> result;
  };
  void Loop();
  void RunBatch(const std::deque<std::unique_ptr<Pending>>& batch);

  Store& store_;
  const size_t max_batch_;
  std::mutex mu_;
  std::condition_variable work_;
  std::deque<std::unique_ptr<Pending>> queue_;  // guarded by mu_
  bool stopping_ = false;                       // guarded by mu_
  std::thread committer_;
};

}  // namespace certfleet::store
