#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "jobs/schedule_spec.h"
#include "store/jobs_repo.h"
#include "store/store.h"

namespace certfleet::jobs {

// Turns schedules into jobs. Among all nodes sharing a database one scheduler is active
// (a leader lease: an advisory lock on PostgreSQL, a file lock on SQLite); each firing
// enqueues one job with a dedupe key, so even two leaders could not enqueue it twice.
// A firing missed while no node ran is made up once at the next tick. Start's loop ticks at
// its interval, and sooner when a firing is due sooner. Thread-safe.
class Scheduler {
 public:
  Scheduler(store::Store& store, const Clock& clock);
  ~Scheduler();

  // `job` is the template of the job each firing enqueues (its run_at and dedupe key are set per firing).
  Result<void> Add(std::string name, std::string_view spec, store::NewJob job);
  // The same for a job of `kind` with an empty payload, tried `max_attempts` times.
  Result<void> Add(std::string name, std::string_view spec, std::string_view kind, int max_attempts);
  // Takes or checks the leader lease, then enqueues every due firing. Returns how many
  // jobs it enqueued (0 when another node leads).
  Result<int> Tick();
  bool leader() const;

  void Start(std::chrono::milliseconds interval);
  void Stop();

 private:
  struct Entry {
    std::string name;
    ScheduleSpec spec;
    store::NewJob job;
  };

  store::Store& store_;
  const Clock& clock_;
  std::vector<Entry> entries_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::unique_ptr<store::LeaderLease> lease_;
  std::optional<int64_t> next_due_;  // ms: the earliest next firing the last tick saw, when leading
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace certfleet::jobs
