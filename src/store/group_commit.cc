#include "store/group_commit.h"

namespace certfleet::store {

Result<void> GroupCommitter::Run(std::function<Result<void>(Tx&)> piece) {
  auto pending = std::make_shared<Pending>();
  pending->piece = std::move(piece);
  std::unique_lock lock(mu_);
  queue_.push_back(pending);
  while (!pending->done) {
    if (leader_active_) {
      pending->cv.wait(lock);
      continue;
    }
    leader_active_ = true;
    std::deque<std::shared_ptr<Pending>> batch;
    while (!queue_.empty() && batch.size() < max_batch_) {
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    lock.unlock();
    RunBatch(batch);
    lock.lock();
    for (auto& p : batch) {
      p->done = true;
      p->cv.notify_one();
    }
    leader_active_ = false;
    // Waking every waiter would wake those whose pieces wait for the next batch only for
    // them to sleep again; the oldest one leads the next batch.
    if (!queue_.empty()) queue_.front()->cv.notify_one();
  }
  return pending->result;
}

void GroupCommitter::RunBatch(const std::deque<std::shared_ptr<Pending>>& batch) {
  // First without savepoints, which cost two statements per piece (two round trips on
  // PostgreSQL): pieces rarely fail. If one does, everything rolls back and the batch runs
  // again with each piece inside its own savepoint, so that only the failing one is undone.
  bool piece_failed = false;
  Result<void> committed = store_.Transact([&](Tx& tx) -> Result<void> {
    piece_failed = false;
    for (const auto& p : batch) {
      p->result = p->piece(tx);
      if (!p->result.ok()) {
        piece_failed = true;
        return p->result.error();
      }
    }
    // A deferred statement's error may show only now, or in a later piece than its own: the
    // batch then runs again piece by piece, where each piece's own errors stay its own.
    Result<void> flushed = tx.Flush();
    if (!flushed.ok()) piece_failed = true;
    return flushed;
  });
  if (piece_failed && batch.size() > 1) {
    committed = store_.Transact([&](Tx& tx) -> Result<void> {
      for (const auto& p : batch) {
        CF_RETURN_IF_ERROR(tx.Exec("SAVEPOINT piece"));
        p->result = p->piece(tx);
        if (p->result.ok()) p->result = tx.Flush();
        if (!p->result.ok()) CF_RETURN_IF_ERROR(tx.Exec("ROLLBACK TO SAVEPOINT piece"));
        CF_RETURN_IF_ERROR(tx.Exec("RELEASE SAVEPOINT piece"));
      }
      return Ok();
    });
  }
  if (!committed.ok()) {
    for (const auto& p : batch) p->result = committed.error();
  }
}

}  // namespace certfleet::store
