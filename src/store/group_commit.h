#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

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
  // Called on a thread of the committer's own, in commit order, while the committer runs
  // the next group; the next answers wait until it returns: keep it short (hand the result
  // over to another thread).
  using Done = std::function<void(Result<void>)>;

  struct Options {
    // Bounds the time one transaction holds the write lock and the work lost to a failed commit.
    size_t max_batch = 128;
    // While pieces come from several callers (the last group held more than one), a group
    // waits for more before it commits: until it holds gather_target pieces, no new piece
    // came for gather_gap, or gather_wait passed since its first piece. A commit and its
    // sync cost about as much for 2 pieces as for 20, so under load fewer, larger groups
    // leave more CPU to the callers. A caller alone waits for no one, except for one gap
    // right after a busy spell.
    size_t gather_target = 24;
    std::chrono::microseconds gather_gap{300};
    std::chrono::microseconds gather_wait{3000};
    // Groups in flight at once, each a transaction on a connection of its own: with more than
    // one, a group's statements run while another's commit is waited for, but groups close
    // smaller (and commits cost the database more CPU a piece). SQLite has one writer: 1.
    size_t committers = 1;
  };

  explicit GroupCommitter(Store& store) : GroupCommitter(store, Options{}) {}
  GroupCommitter(Store& store, Options options);
  ~GroupCommitter();  // runs what is queued, then stops

  // Queues `piece` and returns at once; `done` gets its result.
  void Submit(Piece piece, Done done);
  // Queues `piece` and waits for its result.
  Result<void> Run(Piece piece);
  // Waits until nothing is queued or being committed: every piece queued before has had its
  // result. For a shutdown, before what the queued pieces use goes away.
  void Drain();

 private:
  struct Pending {
    Piece piece;
    Done done;
    Result<void> result;
    std::chrono::steady_clock::time_point queued_at;
  };
  void Loop();
  // Gives each committed group's pieces their results, in commit order, on a thread of its
  // own: the committer goes on to the next group meanwhile.
  void Answer();
  // Waits, lock held, while the group in the queue can still grow (see Options).
  void Gather(std::unique_lock<std::mutex>& lock);
  void RunBatch(const std::deque<std::unique_ptr<Pending>>& batch);

  Store& store_;
  const Options options_;
  std::mutex mu_;
  std::condition_variable work_;
  std::deque<std::unique_ptr<Pending>> queue_;                 // guarded by mu_
  bool stopping_ = false;                                      // guarded by mu_
  size_t running_ = 0;                                         // groups taken and not yet answered; guarded by mu_
  std::condition_variable idle_;                               // signalled when the queue is empty and nothing runs
  std::deque<std::deque<std::unique_ptr<Pending>>> answered_;  // committed groups to answer; guarded by mu_
  bool committed_all_ = false;                                 // the committers stopped; guarded by mu_
  std::condition_variable answer_;
  std::vector<std::thread> committers_;
  std::thread completer_;
};

}  // namespace certfleet::store
