#include "jobs/scheduler.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/log.h"
#include "core/thread_name.h"

namespace certfleet::jobs {

Scheduler::Scheduler(store::Store& store, const Clock& clock) : store_(store), clock_(clock) {}

Scheduler::~Scheduler() { Stop(); }

Result<void> Scheduler::Add(std::string name, std::string_view spec, std::string_view kind, int max_attempts) {
  store::NewJob job;
  job.kind = std::string(kind);
  job.max_attempts = max_attempts;
  return Add(std::move(name), spec, std::move(job));
}

Result<void> Scheduler::Add(std::string name, std::string_view spec, store::NewJob job) {
  CF_ASSIGN_OR_RETURN(ScheduleSpec parsed, ScheduleSpec::Parse(spec));
  std::lock_guard lock(mu_);
  entries_.push_back(Entry{std::move(name), std::move(parsed), std::move(job)});
  return Ok();
}

bool Scheduler::leader() const {
  std::lock_guard lock(mu_);
  return lease_ != nullptr;
}

Result<int> Scheduler::Tick() {
  std::lock_guard lock(mu_);
  if (lease_ && !lease_->Held()) {
    log::Warn("scheduler lost its leader lease");
    lease_.reset();
  }
  if (!lease_) {
    next_due_.reset();
    CF_ASSIGN_OR_RETURN(lease_, store_.TryLead("scheduler"));
    if (!lease_) return 0;
    log::Info("scheduler is the leader on this node");
  }
  int enqueued = 0;
  const int64_t now = clock_.NowMillis();
  std::optional<int64_t> next_due;
  auto note = [&](int64_t at) { next_due = std::min(next_due.value_or(at), at); };
  for (const Entry& e : entries_) {
    Result<void> r = store_.Transact([&](store::Tx& tx) -> Result<void> {
      auto put = [&](const store::ScheduleState& next) {
        note(next.next_run_at);
        return store::PutSchedule(tx, e.name, next);
      };
      CF_ASSIGN_OR_RETURN(auto state, store::GetSchedule(tx, e.name));
      if (!state || state->spec != e.spec.text()) {
        // New or changed schedule: first firing from now on.
        return put({e.spec.text(), e.spec.NextAfter(now), state ? state->last_run_at : std::nullopt});
      }
      if (state->next_run_at > now) {
        note(state->next_run_at);
        return Ok();
      }
      store::NewJob job = e.job;
      job.run_at = now;
      job.dedupe_key = fmt::format("schedule:{}:{}", e.name, state->next_run_at);
      CF_ASSIGN_OR_RETURN(auto id, store::EnqueueJob(tx, job, now));
      if (id) ++enqueued;
      // The next firing counts from the one due, so that a late tick does not stretch an
      // interval; one missed while no node ran is made up once.
      int64_t next = e.spec.NextAfter(state->next_run_at);
      if (next <= now) next = e.spec.NextAfter(now);
      return put({e.spec.text(), next, now});
    });
    if (!r.ok()) log::Error("schedule", {{"schedule", e.name}, {"error", r.error().message}});
  }
  next_due_ = next_due;
  return enqueued;
}

void Scheduler::Start(std::chrono::milliseconds interval) {
  stopping_ = false;
  thread_ = std::thread([this, interval] {
    NameThisThread("cf-scheduler");
    for (;;) {
      Result<int> r = Tick();
      if (!r.ok()) log::Error("scheduler tick", {{"error", r.error().message}});
      std::unique_lock lock(mu_);
      // Until the next tick, or the next firing due before it (an interval shorter than a tick).
      auto wait = interval;
      if (next_due_) {
        wait = std::clamp(std::chrono::milliseconds(*next_due_ - clock_.NowMillis()), std::chrono::milliseconds(0),
                          interval);
      }
      if (clock_.WaitFor(cv_, lock, wait, [&] { return stopping_; })) return;
    }
  });
}

void Scheduler::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard lock(mu_);
  lease_.reset();
}

}  // namespace certfleet::jobs
