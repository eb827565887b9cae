#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>

#include "core/result.h"
#include "store/store.h"

namespace certfleet::store {

// Commits many small write transactions as one. Each caller hands in its work and waits;
// one of the waiting callers (the leader) runs the queued pieces in a single transaction,
// commits once and wakes every caller with its own result. If a piece fails, the batch runs
// again with each piece inside its own SAVEPOINT, so that the failing one rolls back alone. A caller returns only after
// its piece committed (or failed), so nothing is acknowledged before it is stored. Pieces may run again if the whole
// transaction is retried, like any Store::Transact function. Thread-safe.
class GroupCommitter {
 public:
  explicit GroupCommitter(Store& store, size_t max_batch = kDefaultMaxBatch) : store_(store), max_batch_(max_batch) {}

  Result<void> Run(std::function<Result<void>(Tx&)> piece);

 private:
  // Bounds the time one transaction holds the write lock and the work lost to a failed commit.
  static constexpr size_t kDefaultMaxBatch = 128;

  struct Pending {
    std::function<Result<void>(Tx&)> piece;
    Result<void> result;
    bool done = false;           // guarded by mu_
    std::condition_variable cv;  // wakes this caller alone: its piece is done, or it leads next
  };
  void RunBatch(const std::deque<std::shared_ptr<Pending>>& batch);

  Store& store_;
  const size_t max_batch_;
  std::mutex mu_;
  std::deque<std::shared_ptr<Pending>> queue_;
  bool leader_active_ = false;
};

}  // namespace certfleet::store
