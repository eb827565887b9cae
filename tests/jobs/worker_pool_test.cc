#include "jobs/worker_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <semaphore>
#include <thread>

#include "testing/db.h"

namespace certfleet::jobs {
namespace {

using std::chrono::milliseconds;

class WorkerPoolTest : public ::testing::TestWithParam<store::Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam(), &url_);
    ASSERT_NE(store_, nullptr);
  }
  int64_t Enqueue(const std::string& kind, int max_attempts = 5) {
    std::optional<int64_t> id;
    EXPECT_TRUE(store_
                    ->Transact([&](store::Tx& tx) -> Result<void> {
                      CF_ASSIGN_OR_RETURN(
                          id, store::EnqueueJob(tx, store::NewJob{kind, "{}", 0, max_attempts, std::nullopt},
                                                clock_.NowMillis()));
                      return Ok();
                    })
                    .ok());
    return id.value_or(0);
  }
  store::Job Get(int64_t id) {
    std::optional<store::Job> job;
    EXPECT_TRUE(store_
                    ->Transact([&](store::Tx& tx) -> Result<void> {
                      CF_ASSIGN_OR_RETURN(job, store::GetJob(tx, id));
                      return Ok();
                    })
                    .ok());
    return job.value_or(store::Job{});
  }
  WorkerPool::Options PoolOptions(std::string node, milliseconds lease = milliseconds(60'000)) {
    WorkerPool::Options o;
    o.node_id = std::move(node);
    o.workers = 4;
    o.lease = lease;
    o.poll = milliseconds(20);
    return o;
  }

  ManualClock clock_;
  std::unique_ptr<store::Store> store_;
  std::string url_;
};

TEST_P(WorkerPoolTest, AJobWhoseWorkerDiedRunsAgainAndCompletesOnce) {
  const int64_t id = Enqueue("work");
  // A worker leases the job and dies without finishing it.
  std::optional<store::Job> lost;
  ASSERT_TRUE(store_
                  ->Transact([&](store::Tx& tx) -> Result<void> {
                    CF_ASSIGN_OR_RETURN(lost,
                                        store::LeaseJob(tx, {"work"}, "crashed-node/w1", clock_.NowMillis(), 60'000));
                    return Ok();
                  })
                  .ok());
  ASSERT_TRUE(lost.has_value());

  int runs = 0;
  WorkerPool pool(*store_, clock_, PoolOptions("survivor"));
  pool.Register("work", [&](JobContext&) -> Result<void> {
    ++runs;
    return Ok();
  });
  auto ran = pool.RunOne();
  ASSERT_TRUE(ran.ok()) << ran.error().message;
  EXPECT_FALSE(*ran) << "the lease is still valid: nobody else may run the job";

  clock_.Advance(milliseconds(60'001));
  ran = pool.RunOne();
  ASSERT_TRUE(ran.ok());
  EXPECT_TRUE(*ran);
  EXPECT_EQ(runs, 1);
  store::Job job = Get(id);
  EXPECT_EQ(job.state, store::JobState::kDone);
  EXPECT_EQ(job.attempts, 2);

  // The dead worker comes back and tries to record its stale attempt: refused.
  bool recorded = true;
  ASSERT_TRUE(store_
                  ->Transact([&](store::Tx& tx) -> Result<void> {
                    CF_ASSIGN_OR_RETURN(
                        recorded, store::CompleteJob(tx, id, "crashed-node/w1", lost->attempts, clock_.NowMillis()));
                    return Ok();
                  })
                  .ok());
  EXPECT_FALSE(recorded);
  EXPECT_FALSE(*pool.RunOne());
  EXPECT_EQ(runs, 1);
}

TEST_P(WorkerPoolTest, AJobThatAlwaysFailsEndsDeadWithItsLastError) {
  const int64_t id = Enqueue("flaky", 3);
  int runs = 0;
  WorkerPool pool(*store_, clock_, PoolOptions("n1"));
  pool.Register(
      "flaky",
      [&](JobContext& ctx) -> Result<void> {
        ++runs;
        return MakeError(ErrorCode::kUnavailable, "upstream down (attempt " + std::to_string(ctx.job().attempts) + ")");
      },
      HandlerOptions{1, milliseconds(1000), milliseconds(10'000)});
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(pool.RunOne().ok());
    store::Job j = Get(id);
    if (j.state == store::JobState::kFailed) {
      EXPECT_GT(j.run_at, clock_.NowMillis()) << "a retry waits for its backoff";
    }
    clock_.Advance(milliseconds(10'001));
  }
  store::Job job = Get(id);
  EXPECT_EQ(runs, 3);
  EXPECT_EQ(job.state, store::JobState::kDead);
  EXPECT_EQ(job.attempts, 3);
  EXPECT_EQ(job.last_error.value_or(""), "upstream down (attempt 3)");
  EXPECT_TRUE(job.finished_at.has_value());

  // An operator retries it: queued with fresh attempts.
  bool retried = false;
  ASSERT_TRUE(store_
                  ->Transact([&](store::Tx& tx) -> Result<void> {
                    CF_ASSIGN_OR_RETURN(retried, store::RetryDeadJob(tx, id, clock_.NowMillis()));
                    return Ok();
                  })
                  .ok());
  EXPECT_TRUE(retried);
  EXPECT_EQ(Get(id).state, store::JobState::kQueued);
  EXPECT_EQ(Get(id).max_attempts, 6) << "three more";
  // Its attempts count on: a late run of attempt 3 (its lease ran out) cannot complete it.
  auto leased = store::Write(
      *store_, [&](store::Tx& tx) { return store::LeaseJob(tx, {"flaky"}, "a", clock_.NowMillis(), 1000); });
  ASSERT_TRUE(leased.ok() && leased->has_value());
  EXPECT_EQ((*leased)->attempts, 4);
  EXPECT_FALSE(
      *store::Write(*store_, [&](store::Tx& tx) { return store::CompleteJob(tx, id, "a", 3, clock_.NowMillis()); }));
}

TEST_P(WorkerPoolTest, InvalidArgumentIsPermanent) {
  const int64_t id = Enqueue("strict", 5);
  WorkerPool pool(*store_, clock_, PoolOptions("n1"));
  pool.Register("strict",
                [](JobContext&) -> Result<void> { return MakeError(ErrorCode::kInvalidArgument, "bad payload"); });
  ASSERT_TRUE(pool.RunOne().ok());
  EXPECT_EQ(Get(id).state, store::JobState::kDead);
  EXPECT_EQ(Get(id).attempts, 1);
}

// A kind may retry some errors only: the others end the job at once.
TEST_P(WorkerPoolTest, AKindRetriesOnlyTheErrorsItNames) {
  const int64_t busy = Enqueue("picky", 5);
  const int64_t broken = Enqueue("picky", 5);
  WorkerPool pool(*store_, clock_, PoolOptions("n1"));
  pool.Register(
      "picky",
      [&](JobContext& ctx) -> Result<void> {
        if (ctx.job().id == busy) return MakeError(ErrorCode::kFailedPrecondition, "busy");
        return MakeError(ErrorCode::kUnavailable, "refused");
      },
      HandlerOptions{.retried = [](const Error& e) { return e.code == ErrorCode::kFailedPrecondition; }});
  ASSERT_TRUE(pool.RunOne().ok());
  ASSERT_TRUE(pool.RunOne().ok());
  EXPECT_EQ(Get(busy).state, store::JobState::kFailed) << "retried later";
  EXPECT_EQ(Get(broken).state, store::JobState::kDead);
  EXPECT_EQ(Get(broken).attempts, 1);
}

TEST_P(WorkerPoolTest, ProgressIsRecorded) {
  const int64_t id = Enqueue("long");
  WorkerPool pool(*store_, clock_, PoolOptions("n1"));
  pool.Register("long", [](JobContext& ctx) -> Result<void> {
    ctx.Progress(40, 100);
    return Ok();
  });
  ASSERT_TRUE(pool.RunOne().ok());
  EXPECT_EQ(Get(id).progress_done, 40);
  EXPECT_EQ(Get(id).progress_total, 100);
}

// A handler that, once started, waits for the test to let it finish.
struct HeldHandler {
  std::atomic<int> runs{0};
  std::counting_semaphore<> started{0};
  std::counting_semaphore<> release{0};
  JobHandler Get() {
    return [this](JobContext&) -> Result<void> {
      ++runs;
      started.release();
      release.acquire();
      return Ok();
    };
  }
};

// A handler that counts its runs and returns at once.
JobHandler Counting(std::atomic<int>& runs) {
  return [&runs](JobContext&) -> Result<void> {
    ++runs;
    return Ok();
  };
}

TEST_P(WorkerPoolTest, ALongJobKeepsItsLeaseWhileItRuns) {
  const int64_t id = Enqueue("slow");
  HeldHandler held;
  WorkerPool::Options one = PoolOptions("a", milliseconds(900));  // renewed every 300 ms
  one.workers = 1;
  WorkerPool a(*store_, clock_, one);
  WorkerPool b(*store_, clock_, PoolOptions("b", milliseconds(900)));
  std::atomic<int> b_runs{0};
  a.Register("slow", held.Get());
  b.Register("slow", Counting(b_runs));
  a.Start();
  ASSERT_TRUE(held.started.try_acquire_for(std::chrono::seconds(60)));
  ASSERT_TRUE(clock_.WaitForSleepers(1)) << "a's heartbeat waits for its first renewal";
  // Four renewal intervals: the lease first taken has run out, the renewed one has not.
  for (int i = 0; i < 4; ++i) {
    clock_.Advance(milliseconds(300));
    ASSERT_TRUE(clock_.WaitForSleepers(1)) << "the heartbeat renewed the lease and waits again";
  }
  EXPECT_FALSE(*b.RunOne()) << "the lease was renewed, so another node does not take the job over";
  held.release.release();
  a.Stop();
  EXPECT_EQ(Get(id).state, store::JobState::kDone);
  EXPECT_EQ(held.runs, 1);
  EXPECT_EQ(b_runs, 0);
}

TEST_P(WorkerPoolTest, AJobWhoseLeaseIsNotRenewedIsTakenOver) {
  // The same as above without a heartbeat (RunOne alone renews nothing): what the lease
  // renewal prevents does happen.
  const int64_t id = Enqueue("slow");
  HeldHandler held;
  WorkerPool a(*store_, clock_, PoolOptions("a", milliseconds(900)));
  WorkerPool b(*store_, clock_, PoolOptions("b", milliseconds(900)));
  std::atomic<int> b_runs{0};
  a.Register("slow", held.Get());
  b.Register("slow", Counting(b_runs));
  std::thread first([&] { EXPECT_TRUE(*a.RunOne()); });
  ASSERT_TRUE(held.started.try_acquire_for(std::chrono::seconds(60)));
  clock_.Advance(milliseconds(901));
  EXPECT_TRUE(*b.RunOne()) << "the lease ran out";
  EXPECT_EQ(b_runs, 1);
  EXPECT_EQ(Get(id).state, store::JobState::kDone);
  held.release.release();
  first.join();
  EXPECT_EQ(held.runs, 1);
  EXPECT_EQ(Get(id).state, store::JobState::kDone) << "the first run's late completion changes nothing";
}

// A run whose lease ran out (its node lost the database for longer) may still be working
// when the same node leases the job again: the first run's end must not stop the renewal of
// the second's lease.
TEST_P(WorkerPoolTest, TwoRunsOfOneJobOnOneNodeEachKeepTheLeaseRenewed) {
  const int64_t id = Enqueue("slow");
  std::counting_semaphore<> started{0};
  std::binary_semaphore release_first{0};
  std::binary_semaphore release_second{0};
  WorkerPool::Options one = PoolOptions("a", milliseconds(900));  // renewed every 300 ms
  one.workers = 1;
  WorkerPool a(*store_, clock_, one);
  a.Register(
      "slow",
      [&](JobContext& ctx) -> Result<void> {
        started.release();
        (ctx.job().attempts == 1 ? release_first : release_second).acquire();
        return Ok();
      },
      HandlerOptions{2});
  std::thread first([&] { EXPECT_TRUE(*a.RunOne()); });
  ASSERT_TRUE(started.try_acquire_for(std::chrono::seconds(60)));
  clock_.Advance(milliseconds(901));
  std::thread second([&] { EXPECT_TRUE(*a.RunOne()); });  // reclaims the lease, runs attempt 2
  ASSERT_TRUE(started.try_acquire_for(std::chrono::seconds(60)));
  release_first.release();
  first.join();
  const int64_t leased_until = Get(id).lease_expires_at.value_or(0);
  a.Start();
  ASSERT_TRUE(clock_.WaitForSleepers(2)) << "the heartbeat and the idle worker";
  clock_.Advance(milliseconds(300));
  ASSERT_TRUE(clock_.WaitForSleepers(2));
  EXPECT_EQ(Get(id).lease_expires_at, leased_until + 300) << "the second run's lease is renewed";
  release_second.release();
  second.join();
  a.Stop();
  EXPECT_EQ(Get(id).state, store::JobState::kDone);
  EXPECT_EQ(Get(id).attempts, 2);
}

TEST_P(WorkerPoolTest, AJobQueuedHereRunsWithoutALeaseAndOtherwiseAfterItsLeaseRunsOut) {
  auto queue_here = [&](WorkerPool& pool, const std::string& dedupe) {
    std::optional<store::Job> job;
    EXPECT_TRUE(store_
                    ->Transact([&](store::Tx& tx) -> Result<void> {
                      CF_ASSIGN_OR_RETURN(job, pool.EnqueueHere(tx, store::NewJob{"here", "{}", 0, 3, dedupe}));
                      return Ok();
                    })
                    .ok());
    return job;
  };
  std::atomic<int> runs{0};
  WorkerPool a(*store_, clock_, PoolOptions("a"));
  WorkerPool b(*store_, clock_, PoolOptions("b"));
  a.Register("here", Counting(runs));
  b.Register("here", Counting(runs));

  // Queued already leased to `a`: no other pool may take it, and `a` runs it once handed over.
  std::optional<store::Job> job = queue_here(a, "here:1");
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->state, store::JobState::kRunning);
  EXPECT_EQ(job->attempts, 1);
  EXPECT_FALSE(queue_here(a, "here:1").has_value()) << "one job per dedupe key";
  EXPECT_FALSE(*b.RunOne());
  a.RunHere(*job);
  EXPECT_TRUE(*a.RunOne());
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(Get(job->id).state, store::JobState::kDone);
  EXPECT_EQ(Get(job->id).attempts, 1);

  // Queued by a node that stops before running it: another node runs it once the lease ran out.
  job = queue_here(a, "here:2");
  ASSERT_TRUE(job.has_value());
  EXPECT_FALSE(*b.RunOne());
  clock_.Advance(milliseconds(60'001));
  EXPECT_TRUE(*b.RunOne());
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(Get(job->id).state, store::JobState::kDone);
  EXPECT_EQ(Get(job->id).attempts, 2);
}

TEST_P(WorkerPoolTest, ConcurrencyPerKindIsBounded) {
  constexpr int kJobs = 4;
  for (int i = 0; i < kJobs; ++i) Enqueue("serial");
  std::atomic<int> now_running{0}, max_running{0};
  HeldHandler held;
  WorkerPool pool(*store_, clock_, PoolOptions("n1"));  // four workers
  JobHandler run = held.Get();
  pool.Register(
      "serial",
      [&](JobContext& ctx) -> Result<void> {
        const int n = ++now_running;
        int m = max_running;
        while (n > m && !max_running.compare_exchange_weak(m, n)) {
        }
        Result<void> r = run(ctx);
        --now_running;
        return r;
      },
      HandlerOptions{1});
  pool.Start();
  for (int i = 0; i < kJobs; ++i) {
    ASSERT_TRUE(held.started.try_acquire_for(std::chrono::seconds(60)));
    // Every idle worker looks for work once more while this job runs, and finds none it may take.
    clock_.Advance(milliseconds(20));
    ASSERT_TRUE(clock_.WaitForSleepers(3 + 1)) << "three idle workers and the heartbeat";
    EXPECT_EQ(now_running, 1);
    held.release.release();
  }
  pool.Stop();
  EXPECT_EQ(held.runs, kJobs);
  EXPECT_EQ(max_running, 1);
}

INSTANTIATE_TEST_SUITE_P(Drivers, WorkerPoolTest, testing::kBothDialects, testing::DialectName);

TEST(WorkerPoolPostgres, TwoPoolsNeverRunTheSameJobAtTheSameTime) {
  std::string url;
  auto store_a = testing::FreshStore(store::Dialect::kPostgres, &url);
  ASSERT_NE(store_a, nullptr);
  auto store_b = store::Store::Open(url, {8});  // a second node: its own connections
  ASSERT_TRUE(store_b.ok());
  constexpr int kJobs = 200;
  ASSERT_TRUE(store_a
                  ->Transact([&](store::Tx& tx) -> Result<void> {
                    for (int i = 0; i < kJobs; ++i)
                      CF_RETURN_IF_ERROR(store::EnqueueJob(tx, store::NewJob{"unit", "{}", 0, 3, std::nullopt}, 0));
                    return Ok();
                  })
                  .ok());

  std::mutex mu;
  std::map<int64_t, int> running, runs;
  std::atomic<int> overlaps{0}, done{0};
  std::map<std::string, int> per_node;
  auto handler = [&](const std::string& node) {
    return [&, node](JobContext& ctx) -> Result<void> {
      {
        std::lock_guard lock(mu);
        if (running[ctx.job().id]++ > 0) ++overlaps;
        ++runs[ctx.job().id];
        ++per_node[node];
      }
      std::this_thread::yield();
      {
        std::lock_guard lock(mu);
        --running[ctx.job().id];
      }
      ++done;
      return Ok();
    };
  };
  WorkerPool::Options o;
  o.workers = 4;
  o.poll = milliseconds(10);
  o.node_id = "a";
  ManualClock clock;
  WorkerPool a(*store_a, clock, o);
  o.node_id = "b";
  WorkerPool b(**store_b, clock, o);
  a.Register("unit", handler("a"), HandlerOptions{4});
  b.Register("unit", handler("b"), HandlerOptions{4});
  a.Start();
  b.Start();
  // When every thread of both pools waits on the clock (2 x 4 workers and 2 heartbeats)
  // and jobs are left (a worker found none free for a moment), the clock moves on.
  for (int moves = 0; moves < 1000; ++moves) {
    ASSERT_TRUE(clock.WaitForSleepers(10));
    if (done == kJobs) break;
    clock.Advance(o.poll);
  }
  a.Stop();
  b.Stop();
  EXPECT_EQ(done, kJobs);
  EXPECT_EQ(overlaps, 0);
  EXPECT_EQ(runs.size(), static_cast<size_t>(kJobs));
  for (const auto& [id, n] : runs) EXPECT_EQ(n, 1) << "job " << id;
  EXPECT_GT(per_node["a"], 0);
  EXPECT_GT(per_node["b"], 0);
  auto left = store_a->Query("SELECT COUNT(*) FROM jobs WHERE state <> 'done'");
  EXPECT_EQ(left->at(0).Int(0), 0);
}

}  // namespace
}  // namespace certfleet::jobs
