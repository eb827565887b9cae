#include "store/group_commit.h"

#include <algorithm>
#include <optional>

#include "core/thread_name.h"

namespace certfleet::store {

GroupCommitter::GroupCommitter(Store& store, Options options) : store_(store), options_(options) {
  for (size_t i = 0; i < std::max<size_t>(options_.committers, 1); ++i) {
    committers_.emplace_back([this] {
      NameThisThread("cf-commit");
      Loop();
    });
  }
  completer_ = std::thread([this] {
    NameThisThread("cf-committed");
    Answer();
  });
}

GroupCommitter::~GroupCommitter() {
  Drain();  // an answer may queue more pieces: none is left behind
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_.notify_all();
  for (auto& t : committers_) t.join();
  {
    std::lock_guard lock(mu_);
    committed_all_ = true;
  }
  answer_.notify_all();
  completer_.join();
}

void GroupCommitter::Answer() {
  std::unique_lock lock(mu_);
  for (;;) {
    answer_.wait(lock, [&] { return committed_all_ || !answered_.empty(); });
    if (answered_.empty()) return;  // stopping, and every group answered
    std::deque<std::unique_ptr<Pending>> batch = std::move(answered_.front());
    answered_.pop_front();
    lock.unlock();
    for (auto& p : batch) p->done(std::move(p->result));
    lock.lock();
    if (--running_ == 0 && queue_.empty()) idle_.notify_all();
  }
}

void GroupCommitter::Submit(Piece piece, Done done) {
  auto pending = std::make_unique<Pending>();
  pending->piece = std::move(piece);
  pending->done = std::move(done);
  pending->queued_at = std::chrono::steady_clock::now();
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    // The committer waits for the first piece, and while it gathers for a full group.
    wake = queue_.empty() || queue_.size() + 1 == options_.gather_target;
    queue_.push_back(std::move(pending));
  }
  if (wake) work_.notify_one();
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

void GroupCommitter::Drain() {
  std::unique_lock lock(mu_);
  idle_.wait(lock, [&] { return queue_.empty() && running_ == 0; });
}

void GroupCommitter::Loop() {
  size_t last_batch = 0;  // this committer's
  std::unique_lock lock(mu_);
  for (;;) {
    work_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left
    if (last_batch > 1) Gather(lock);
    if (queue_.empty()) continue;  // another committer took the group
    std::deque<std::unique_ptr<Pending>> batch;
    while (!queue_.empty() && batch.size() < options_.max_batch) {
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    last_batch = batch.size();
    ++running_;
    lock.unlock();
    RunBatch(batch);
    lock.lock();
    answered_.push_back(std::move(batch));
    answer_.notify_one();
  }
}

void GroupCommitter::Gather(std::unique_lock<std::mutex>& lock) {
  const auto deadline = queue_.front()->queued_at + options_.gather_wait;
  // Looks again every gather_gap rather than at each new piece, which would wake this thread
  // once per piece.
  auto full = [&] { return stopping_ || queue_.size() >= options_.gather_target; };
  while (!full()) {
    const size_t had = queue_.size();
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline || work_.wait_until(lock, std::min(deadline, now + options_.gather_gap), full)) break;
    if (queue_.size() == had) break;  // nothing came for a whole gap
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
    // The audit entries' statements are the group's, not a piece's: they go with the COMMIT.
    Result<void> flushed = tx.FlushAll(/*last_too=*/true, /*answer_last=*/false);
    if (!flushed.ok()) piece_failed = true;
    return flushed;
  });
  if (piece_failed && batch.size() > 1) {
    committed = store_.Transact([&](Tx& tx) -> Result<void> {
      for (const auto& p : batch) {
        CF_RETURN_IF_ERROR(tx.Savepoint("piece"));
        p->result = p->piece(tx);
        // What the piece gathered is written inside its savepoint too, but for the audit
        // entries (`last`), which wait for the group's end: locking the chain's head here would
        // take it before the next pieces' rows, in the other order than a group's first pass.
        if (p->result.ok()) p->result = tx.FlushAll(/*last_too=*/false);
        // A deadlock, a serialization failure or a lost connection is the transaction's, not
        // the piece's: the whole pass runs again, as the first one would have.
        if (!p->result.ok() && p->result.error().code == ErrorCode::kUnavailable) return p->result.error();
        if (!p->result.ok()) CF_RETURN_IF_ERROR(tx.RollbackTo("piece"));
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
