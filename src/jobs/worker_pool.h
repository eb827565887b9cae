#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "store/jobs_repo.h"
#include "store/store.h"

namespace certfleet::jobs {

// What a handler sees of the job it runs.
class JobContext {
 public:
  JobContext(const store::Job& job, std::function<void(int64_t, int64_t)> progress,
             std::function<Result<bool>(store::Tx&)> complete)
      : job_(job), progress_(std::move(progress)), complete_(std::move(complete)) {}
  const store::Job& job() const { return job_; }
  // A field of the job's JSON payload; kInvalidArgument (the job is dead at once: retrying
  // cannot help) when it is missing or of another type.
  Result<int64_t> PayloadInt(std::string_view key) const;
  Result<std::string> PayloadString(std::string_view key) const;
  // Records progress (done of total) where `GET /v1/jobs/{id}` shows it.
  void Progress(int64_t done, int64_t total) { progress_(done, total); }
  // Marks the job done in `tx`, the handler's last transaction, so that its work and its
  // completion commit together (a transaction fewer). A handler that calls it and then
  // returns Ok leaves nothing more for the pool to record. `tx` may run again (a retried
  // batch): so may this.
  Result<void> CompleteIn(store::Tx& tx);
  // Whether CompleteIn ran, and whether the job's lease was still this attempt's then.
  std::optional<bool> completed() const { return completed_; }

 private:
  const store::Job& job_;
  std::function<void(int64_t, int64_t)> progress_;
  std::function<Result<bool>(store::Tx&)> complete_;
  std::optional<bool> completed_;
};

// Runs one job. May run twice for one job (a crash or lease expiry between the work and
// its completion), so it must be idempotent. Returning an error with code
// kInvalidArgument marks the job dead at once (retrying cannot help); any other error
// is retried with backoff until max_attempts.
using JobHandler = std::function<Result<void>(JobContext&)>;

struct HandlerOptions {
  int concurrency = 1;                           // at most this many jobs of the kind at once on this node
  std::chrono::milliseconds backoff_base{1000};  // first retry delay; doubles per attempt
  std::chrono::milliseconds backoff_max{3600 * 1000};
  // Which errors are worth another attempt; nullptr: every error but kInvalidArgument. The
  // others mark the job dead at once.
  std::function<bool(const Error&)> retried = nullptr;
};

// A pool of worker threads that lease due jobs from the store's job table, run their
// handlers, renew leases while they run, and record the outcome. Several pools (nodes)
// may share one PostgreSQL database. Thread-safe.
class WorkerPool {
 public:
  struct Options {
    std::string node_id;  // unique per process; part of each lease owner
    int workers = 4;      // jobs at once on this node: imports and mail runs are I/O bound
    // How long a job stays leased without a renewal: a minute, renewed every 20 s, so a
    // crashed node's jobs run elsewhere within a minute and two lost renewals are survived.
    std::chrono::milliseconds lease{60'000};
    // How often an idle worker looks for due jobs: half a second, the latency of a new job.
    std::chrono::milliseconds poll{500};
  };

  WorkerPool(store::Store& store, const Clock& clock, Options options);
  ~WorkerPool();

  // Register every kind before Start().
  void Register(std::string kind, JobHandler handler, HandlerOptions options = {});
  void Start();
  // Stops leasing, waits for running handlers to return, then joins the threads.
  void Stop();

  // For work a client waits on (ACME validation): queues `job` in `tx` already leased to this
  // node, for RunHere to start once `tx` has committed, with no wait for a poll and no lease
  // transaction. A node that stops before running it leaves a lease that expires and is
  // reclaimed like any other, so the job still runs. nullopt when its dedupe key exists.
  Result<std::optional<store::Job>> EnqueueHere(store::Tx& tx, const store::NewJob& job);
  // Hands a job EnqueueHere returned (committed) to this node's workers.
  void RunHere(store::Job job);

  // Reclaims expired leases, then leases one due job and runs it in the calling thread.
  // True if a job ran. The worker threads call this in a loop; tests call it directly.
  Result<bool> RunOne();

 private:
  struct Kind {
    JobHandler handler;
    HandlerOptions options;
    int running = 0;
  };

  void WorkerLoop();
  // A job RunHere handed over whose kind has a free slot (taken), if any.
  std::optional<store::Job> TakeHere();
  // Runs a leased job's handler and records its outcome.
  Result<void> Execute(const store::Job& job);
  void HeartbeatLoop();
  // Kinds with a free slot, their slots reserved; ReleaseSlots undoes it for those unused.
  std::vector<std::string> ReserveSlots();
  void ReleaseSlots(const std::vector<std::string>& kinds, const std::string& keep);
  int64_t BackoffMillis(const HandlerOptions& options, int attempt) const;

  store::Store& store_;
  const Clock& clock_;
  const Options options_;
  const std::string owner_;

  std::mutex mu_;
  std::condition_variable cv_;            // workers wait on it
  std::condition_variable heartbeat_cv_;  // the heartbeat waits on it
  std::map<std::string, Kind> kinds_;
  // Leases this node renews: the jobs running and those in here_, once per run (a job whose
  // lease ran out while it ran may be leased again here before that run ends).
  std::multiset<int64_t> running_ids_;
  std::deque<store::Job> here_;
  bool stopping_ = false;
  uint64_t wakes_ = 0;  // counts RunHere(); a worker that saw another count looks again
  std::vector<std::thread> threads_;
  std::atomic<int64_t> last_reclaim_{INT64_MIN / 2};
};

}  // namespace certfleet::jobs
