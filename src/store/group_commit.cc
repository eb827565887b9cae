#include "store/group_commit.h"

#include <optional>

#include "core/thread_name.h"

namespace certfleet::store {

GroupCommitter::GroupCommitter(Store& store, size_t max_batch) : store_(store), max_batch_(max_batch) {
  committer_ = std::thread([this] {
    NameThisThread("cf-commit");
    Loop();
  });
}

GroupCommitter::~GroupCommitter() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_.notify_one();
  committer_.join();
}

void GroupCommitter::Submit(Piece piece, Done done) {
  auto pending = std::make_unique<Pending>();
  pending->piece = std::move(piece);
  pending->done = std::move(done);
  bool was_empty = false;
  {
    std::lock_guard lock(mu_);
    was_empty = queue_.empty();
    queue_.push_back(std::move(pending));
  }
  if (was_empty) work_.notify_one();
}

Result<void> GroupCommitter::Run(Piece piece) {
  struct Waiter {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<Result<void>> result;
  };
  auto waiter = std::make_shared<Waiter>();
  Submit(std::move(piece), [waiter](Result<void> r) {
    std::lock_guard lock(waiter->mu);
    waiter->result = std::move(r);
    waiter->cv.notify_one();
  });
  std::unique_lock lock(waiter->mu);
  waiter->cv.wait(lock, [&] { return waiter->result.has_value(); });
  return *waiter->result;
}

void GroupCommitter::Loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    work_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left
    std::deque<std::unique_ptr<Pending>> batch;
    while (!queue_.empty() && batch.size() < max_batch_) {
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    lock.unlock();
    RunBatch(batch);
    for (auto& p : batch) p->done(std::move(p->result));
    lock.lock();
  }
}

void GroupCommitter::RunBatch(const std::deque<std::unique_ptr<Pending>>& batch) {
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
