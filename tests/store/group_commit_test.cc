#include "store/group_commit.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <optional>
#include <thread>

#include "testing/db.h"

namespace certfleet::store {
namespace {

class GroupCommitTest : public ::testing::TestWithParam<Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam());
    ASSERT_NE(store_, nullptr);
    ASSERT_TRUE(store_->Exec("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT UNIQUE)").ok());
  }
  std::unique_ptr<Store> store_;
};

// Threads insert through one committer, every thread also a name all share: only the first
// of those may succeed. With `deferred` the inserts are pipelined (Tx::ExecDeferred), so a
// failure shows only at a later statement, possibly another piece's.
void InsertConcurrently(Store& store, bool deferred, size_t committers = 1) {
  GroupCommitter group(store, {.max_batch = 16, .committers = committers});
  constexpr int kThreads = 8, kPerThread = 25;
  std::atomic<int> ok{0}, duplicates{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const int64_t id = t * 1000 + i;
        // Every thread also inserts one name all threads share: only the first may succeed.
        const std::string name = i == 0 ? "shared" : "n" + std::to_string(id);
        Result<void> r = group.Run([&](Tx& tx) -> Result<void> {
          if (deferred) return tx.ExecDeferred("INSERT INTO items (id, name) VALUES (?, ?)", {id, name});
          CF_RETURN_IF_ERROR(tx.Exec("INSERT INTO items (id, name) VALUES (?, ?)", {id, name}));
          return Ok();
        });
        if (r.ok()) {
          ++ok;
        } else if (r.error().code == ErrorCode::kAlreadyExists) {
          ++duplicates;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(duplicates, kThreads - 1);
  EXPECT_EQ(ok, kThreads * kPerThread - (kThreads - 1));
  EXPECT_EQ(store.Query("SELECT COUNT(*) FROM items")->at(0).Int(0), ok.load())
      << "every acknowledged piece is stored, and no failed one";
}

TEST_P(GroupCommitTest, EveryPieceCommitsOrFailsAlone) { InsertConcurrently(*store_, false); }

TEST_P(GroupCommitTest, EveryPieceCommitsOrFailsAloneWithDeferredStatements) { InsertConcurrently(*store_, true); }

TEST_P(GroupCommitTest, EveryPieceCommitsOrFailsAloneWithTwoGroupsInFlight) {
  InsertConcurrently(*store_, false, 2);
  ASSERT_TRUE(store_->Exec("DELETE FROM items").ok());
  InsertConcurrently(*store_, true, 2);
}

TEST_P(GroupCommitTest, SubmittedPiecesGetTheirResultsWithoutWaiting) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<int64_t, std::optional<ErrorCode>>> results;  // by piece: nothing when it committed
  {
    GroupCommitter group(*store_);
    for (int64_t id = 1; id <= 20; ++id) {
      const std::string name = id == 20 ? "n1" : "n" + std::to_string(id);  // the last one a duplicate
      group.Submit(
          [id, name](Tx& tx) {
            return tx.ExecDeferred("INSERT INTO items (id, name) VALUES (?, ?)", {id, name});
          },
          [&, id](Result<void> r) {
            std::lock_guard lock(mu);
            results.emplace_back(id, r.ok() ? std::nullopt : std::optional<ErrorCode>(r.error().code));
            cv.notify_one();
          });
    }
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return results.size() == 20; }));
  }
  for (const auto& [id, code] : results) {
    EXPECT_EQ(code, id == 20 ? std::optional<ErrorCode>(ErrorCode::kAlreadyExists) : std::nullopt) << "piece " << id;
  }
  EXPECT_EQ(store_->Query("SELECT COUNT(*) FROM items")->at(0).Int(0), 19);
}

// A group's answers are given on a thread of their own: the committer runs the next group
// meanwhile. Here the first piece's answer waits for a second piece, submitted by that
// answer, to run: with answers on the committer's thread it never would.
TEST_P(GroupCommitTest, TheNextGroupRunsWhileAnAnswerIsGiven) {
  std::mutex mu;
  std::condition_variable cv;
  bool second_ran = false, second_answered = false;
  std::optional<bool> ran_while_answering;
  {
    GroupCommitter group(*store_);
    auto second = [&](Tx& tx) -> Result<void> {
      CF_RETURN_IF_ERROR(tx.Exec("INSERT INTO items (id, name) VALUES (2, 'second')"));
      std::lock_guard lock(mu);
      second_ran = true;
      cv.notify_all();
      return Ok();
    };
    auto first = [](Tx& tx) -> Result<void> {
      CF_RETURN_IF_ERROR(tx.Exec("INSERT INTO items (id, name) VALUES (1, 'first')"));
      return Ok();
    };
    group.Submit(first, [&](Result<void> written) {
      ASSERT_TRUE(written.ok()) << written.error().message;
      group.Submit(second, [&](Result<void> r) {
        EXPECT_TRUE(r.ok());
        std::lock_guard lock(mu);
        second_answered = true;
        cv.notify_all();
      });
      std::unique_lock lock(mu);
      ran_while_answering = cv.wait_for(lock, std::chrono::seconds(30), [&] { return second_ran; });
    });
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return second_answered; }));
  }
  EXPECT_EQ(ran_while_answering, std::optional<bool>(true));
  EXPECT_EQ(store_->Query("SELECT COUNT(*) FROM items")->at(0).Int(0), 2);
}

TEST_P(GroupCommitTest, DrainReturnsOnceEveryQueuedAndRunningPieceHasItsResult) {
  // Two groups in flight on PostgreSQL: the first piece's group still runs after the others'
  // committed and the queue is empty. SQLite has one writer: the others wait in the queue.
  GroupCommitter group(*store_, {.committers = GetParam() == Dialect::kPostgres ? size_t{2} : size_t{1}});
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> answered{0};
  group.Submit(
      [released](Tx& tx) -> Result<void> {
        released.wait();
        CF_RETURN_IF_ERROR(tx.Exec("INSERT INTO items (id, name) VALUES (1, 'n1')"));
        return Ok();
      },
      [&](const Result<void>& r) {
        EXPECT_TRUE(r.ok());
        ++answered;
      });
  for (int64_t id = 2; id <= 10; ++id) {
    group.Submit(
        [id](Tx& tx) {
          return tx.ExecDeferred("INSERT INTO items (id, name) VALUES (?, ?)", {id, std::to_string(id)});
        },
        [&](const Result<void>& r) {
          EXPECT_TRUE(r.ok());
          ++answered;
        });
  }
  auto drained = std::async(std::launch::async, [&] {
    group.Drain();
    return answered.load();
  });
  EXPECT_EQ(drained.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout)
      << "Drain returned while a piece still ran";
  release.set_value();
  EXPECT_EQ(drained.get(), 10) << "every piece had its result when Drain returned";
  group.Drain();  // nothing left: returns at once
}

TEST_P(GroupCommitTest, ALonePiecesDeferredFailureIsItsResult) {
  GroupCommitter group(*store_);
  ASSERT_TRUE(store_->Exec("INSERT INTO items (id, name) VALUES (1, 'a')").ok());
  Result<void> r = group.Run([](Tx& tx) { return tx.ExecDeferred("INSERT INTO items (id, name) VALUES (2, 'a')"); });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kAlreadyExists);
}

// When a piece fails, the group runs again with a savepoint per piece. A deadlock there (what
// kUnavailable stands for) is the transaction's: the pass runs again, rather than failing the
// piece that happened to meet it.
TEST_P(GroupCommitTest, ADeadlockInTheSavepointPassRunsThePassAgain) {
  GroupCommitter group(*store_);
  ASSERT_TRUE(store_->Exec("INSERT INTO items (id, name) VALUES (1, 'taken')").ok());
  // The first group holds the committer until the three pieces below are queued: they then
  // go as one group.
  std::promise<void> queued, running;
  std::shared_future<void> go = queued.get_future().share();
  std::future<Result<void>> first = std::async(std::launch::async, [&] {
    return group.Run([&running, go](Tx&) -> Result<void> {
      running.set_value();  // a lone piece that succeeds runs once
      go.wait();
      return Ok();
    });
  });
  running.get_future().wait();
  std::atomic<int> b_runs{0};
  std::vector<std::future<Result<void>>> results;
  auto submit = [&](GroupCommitter::Piece piece) {
    auto done = std::make_shared<std::promise<Result<void>>>();
    results.push_back(done->get_future());
    group.Submit(std::move(piece), [done](Result<void> r) { done->set_value(std::move(r)); });
  };
  submit([](Tx& tx) -> Result<void> {
    CF_RETURN_IF_ERROR(tx.Exec("INSERT INTO items (id, name) VALUES (2, 'taken')"));
    return Ok();
  });
  submit([&](Tx& tx) -> Result<void> {
    // The first pass stops at the piece before, so its first run is in the savepoint pass: a
    // deadlock there.
    if (++b_runs == 1) return MakeError(ErrorCode::kUnavailable, "deadlock detected");
    CF_RETURN_IF_ERROR(tx.Exec("INSERT INTO items (id, name) VALUES (3, 'b')"));
    return Ok();
  });
  submit([](Tx& tx) -> Result<void> {
    CF_RETURN_IF_ERROR(tx.Exec("INSERT INTO items (id, name) VALUES (4, 'c')"));
    return Ok();
  });
  queued.set_value();
  ASSERT_TRUE(first.get().ok());
  Result<void> a = results[0].get(), b = results[1].get(), c = results[2].get();
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.error().code, ErrorCode::kAlreadyExists);
  EXPECT_TRUE(b.ok()) << b.error().message;
  EXPECT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(b_runs.load(), 2) << "the savepoint pass (deadlock), and that pass again";
  EXPECT_EQ(store_->Query("SELECT COUNT(*) FROM items WHERE id IN (3, 4)")->at(0).Int(0), 2);
}

TEST_P(GroupCommitTest, APieceSeesWhatEarlierPiecesOfItsGroupWrote) {
  GroupCommitter group(*store_);
  ASSERT_TRUE(group
                  .Run([](Tx& tx) -> Result<void> {
                    CF_RETURN_IF_ERROR(tx.Exec("INSERT INTO items (id, name) VALUES (1, 'a')"));
                    return Ok();
                  })
                  .ok());
  auto second = group.Run([](Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT name FROM items WHERE id = 1"));
    if (!row) return MakeError(ErrorCode::kNotFound, "missing");
    return MakeError(ErrorCode::kFailedPrecondition, "seen " + row->Text(0));
  });
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().message, "seen a");
}

// The store, counting the transactions run through it.
class CountingStore final : public Store {
 public:
  explicit CountingStore(Store& inner) : inner_(inner) {}
  Dialect dialect() const override { return inner_.dialect(); }
  Result<void> Transact(const std::function<Result<void>(Tx&)>& fn, TxMode mode) override {
    ++transactions;
    return inner_.Transact(fn, mode);
  }
  Result<void> Ping() override { return inner_.Ping(); }
  Result<std::unique_ptr<LeaderLease>> TryLead(std::string_view name) override { return inner_.TryLead(name); }
  std::atomic<int> transactions{0};

 private:
  Store& inner_;
};

// Inserts item `id` through `group` and waits for its result.
Result<void> InsertItem(GroupCommitter& group, int64_t id) {
  return group.Run([id](Tx& tx) { return tx.ExecDeferred("INSERT INTO items (id) VALUES (?)", {id}); });
}

// Makes the committer's last group one of two pieces, as under concurrent callers: a first
// piece holds the committer while two more queue behind it.
void CommitAGroupOfTwo(GroupCommitter& group) {
  std::promise<void> started, release, first, second;
  std::shared_future<void> released = release.get_future().share();
  std::thread holder([&] {
    ASSERT_TRUE(group
                    .Run([&](Tx&) -> Result<void> {
                      started.set_value();
                      released.wait();
                      return Ok();
                    })
                    .ok());
  });
  started.get_future().wait();
  for (auto [id, done] : {std::pair{int64_t{1001}, &first}, std::pair{int64_t{1002}, &second}}) {
    group.Submit([id](Tx& tx) { return tx.ExecDeferred("INSERT INTO items (id) VALUES (?)", {id}); },
                 [done](Result<void> r) {
                   EXPECT_TRUE(r.ok());
                   done->set_value();
                 });
  }
  release.set_value();
  holder.join();
  first.get_future().wait();
  second.get_future().wait();
}

TEST_P(GroupCommitTest, UnderConcurrencyPiecesArrivingCloseTogetherShareOneCommit) {
  CountingStore counting(*store_);
  GroupCommitter group(
      counting, {.gather_target = 8, .gather_gap = std::chrono::seconds(5), .gather_wait = std::chrono::seconds(20)});
  CommitAGroupOfTwo(group);
  const int before = counting.transactions;
  // Eight pieces 20 ms apart: without gathering each would be committed alone.
  std::atomic<int> done{0};
  for (int64_t id = 1; id <= 8; ++id) {
    group.Submit([id](Tx& tx) { return tx.ExecDeferred("INSERT INTO items (id) VALUES (?)", {id}); },
                 [&](Result<void> r) {
                   EXPECT_TRUE(r.ok());
                   ++done;
                 });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  while (done < 8) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(counting.transactions - before, 1);
  EXPECT_EQ(store_->Query("SELECT COUNT(*) FROM items")->at(0).Int(0), 10);
}

TEST_P(GroupCommitTest, ALoneCallerAfterABusySpellWaitsOneGapNotTheWholeGathering) {
  const auto gap = std::chrono::milliseconds(50);
  const auto wait = std::chrono::seconds(30);
  GroupCommitter group(*store_, {.gather_target = 8, .gather_gap = gap, .gather_wait = wait});
  CommitAGroupOfTwo(group);
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(InsertItem(group, 1).ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, wait / 2) << "held back for the whole gathering time";
}

// What a piece gathers for the transaction's end (Tx::Gathered) is its own too: a gathered
// row that fails fails its piece alone, and `last` gatherings (the audit log's) are written
// at the group's end, after every piece's other writes.
TEST_P(GroupCommitTest, AGatheredWriteThatFailsFailsItsPieceAlone) {
  auto write = [](Tx& tx, std::vector<Params>& rows) -> Result<void> {
    for (const auto& row : rows) CF_RETURN_IF_ERROR(tx.ExecDeferred("INSERT INTO items (id, name) VALUES (?, ?)", row));
    return Ok();
  };
  ASSERT_TRUE(store_->Exec("CREATE TABLE log (n INTEGER PRIMARY KEY, items INTEGER NOT NULL)").ok());
  // Written last: how many items there were by then.
  auto count_items = [](Tx& tx, std::vector<int64_t>& ns) -> Result<void> {
    for (int64_t n : ns) {
      CF_RETURN_IF_ERROR(tx.Exec("INSERT INTO log (n, items) SELECT ?, COUNT(*) FROM items", {n}));
    }
    return Ok();
  };
  GroupCommitter group(*store_);
  // The committer is held in a first piece until the four are queued: they form one group.
  // They are queued once it runs that piece, else (a committer slow to wake) the first of
  // them could join its group.
  std::promise<void> queued;
  std::shared_future<void> all_queued = queued.get_future().share();
  std::promise<void> holding;
  group.Submit(
      [all_queued, &holding](Tx&) -> Result<void> {
        holding.set_value();  // a lone piece that succeeds runs once
        all_queued.wait();
        return Ok();
      },
      [](Result<void>) {});
  holding.get_future().wait();
  std::vector<std::future<Result<void>>> results;
  for (int64_t i = 0; i < 4; ++i) {
    auto promise = std::make_shared<std::promise<Result<void>>>();
    results.push_back(promise->get_future());
    group.Submit(
        [&, i](Tx& tx) -> Result<void> {
          tx.Gathered<int64_t>("log", count_items, /*last=*/true).push_back(i);
          tx.Gathered<Params>("items", write).push_back({i, i == 2 ? std::string("n1") : "n" + std::to_string(i)});
          return Ok();
        },
        [promise](Result<void> r) { promise->set_value(std::move(r)); });
  }
  queued.set_value();
  for (int64_t i = 0; i < 4; ++i) {
    Result<void> r = results[i].get();
    EXPECT_EQ(r.ok(), i != 2) << "piece " << i;
  }
  auto items = store_->Query("SELECT id FROM items ORDER BY id");
  ASSERT_EQ(items->size(), 3u);
  EXPECT_EQ(items->at(2).Int(0), 3);
  auto log = store_->Query("SELECT n, items FROM log ORDER BY n");
  ASSERT_EQ(log->size(), 3u) << "the failed piece's `last` gathering went with it";
  for (const auto& row : *log) {
    EXPECT_EQ(row.Int(1), 3) << "`last` gatherings are written at the group's end, after every piece's other writes";
  }
}

INSTANTIATE_TEST_SUITE_P(Drivers, GroupCommitTest, testing::kBothDialects, testing::DialectName);

}  // namespace
}  // namespace certfleet::store
