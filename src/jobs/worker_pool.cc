#include "jobs/worker_pool.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <exception>
#include <iterator>
#include <random>

#include "core/crypto.h"
#include "core/log.h"
#include "core/thread_name.h"

namespace certfleet::jobs {
namespace {

Result<boost::json::value> PayloadField(const store::Job& job, std::string_view key) {
  boost::system::error_code ec;
  boost::json::value payload = boost::json::parse(job.payload, ec);
  const boost::json::value* v = !ec && payload.is_object() ? payload.get_object().if_contains(key) : nullptr;
  if (v == nullptr) return MakeError(ErrorCode::kInvalidArgument, fmt::format("no {} in the job", key));
  return *v;
}

}  // namespace

Result<int64_t> JobContext::PayloadInt(std::string_view key) const {
  CF_ASSIGN_OR_RETURN(boost::json::value v, PayloadField(job_, key));
  if (!v.is_int64()) return MakeError(ErrorCode::kInvalidArgument, fmt::format("{} of the job is not a number", key));
  return v.get_int64();
}

Result<std::string> JobContext::PayloadString(std::string_view key) const {
  CF_ASSIGN_OR_RETURN(boost::json::value v, PayloadField(job_, key));
  if (!v.is_string()) return MakeError(ErrorCode::kInvalidArgument, fmt::format("{} of the job is not text", key));
  return std::string(v.get_string());
}

Result<void> JobContext::CompleteIn(store::Tx& tx) {
  CF_ASSIGN_OR_RETURN(bool recorded, complete_(tx));
  completed_ = recorded;
  return Ok();
}

WorkerPool::WorkerPool(store::Store& store, const Clock& clock, Options options)
    : store_(store), clock_(clock), options_(std::move(options)), owner_(options_.node_id + "/" + RandomToken(6)) {}

WorkerPool::~WorkerPool() { Stop(); }

void WorkerPool::Register(std::string kind, JobHandler handler, HandlerOptions options) {
  std::lock_guard lock(mu_);
  kinds_[std::move(kind)] = Kind{std::move(handler), std::move(options), 0};
}

void WorkerPool::Start() {
  std::lock_guard lock(mu_);
  stopping_ = false;
  for (int i = 0; i < options_.workers; ++i) {
    threads_.emplace_back([this] {
      NameThisThread("cf-worker");
      WorkerLoop();
    });
  }
  threads_.emplace_back([this] {
    NameThisThread("cf-heartbeat");
    HeartbeatLoop();
  });
}

Result<std::optional<store::Job>> WorkerPool::EnqueueHere(store::Tx& tx, const store::NewJob& job) {
  return store::EnqueueLeasedJob(tx, job, owner_, clock_.NowMillis(), options_.lease.count());
}

void WorkerPool::RunHere(store::Job job) {
  {
    std::lock_guard lock(mu_);
    running_ids_.insert(job.id);
    here_.push_back(std::move(job));
    ++wakes_;
  }
  cv_.notify_one();
}

std::optional<store::Job> WorkerPool::TakeHere() {
  std::lock_guard lock(mu_);
  for (auto it = here_.begin(); it != here_.end(); ++it) {
    auto kind = kinds_.find(it->kind);
    if (kind != kinds_.end() && kind->second.running >= kind->second.options.concurrency) continue;
    if (kind != kinds_.end()) ++kind->second.running;
    store::Job job = std::move(*it);
    here_.erase(it);
    return job;
  }
  return std::nullopt;
}

void WorkerPool::Stop() {
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    threads.swap(threads_);
  }
  cv_.notify_all();
  heartbeat_cv_.notify_all();
  for (auto& t : threads) t.join();
}

std::vector<std::string> WorkerPool::ReserveSlots() {
  std::lock_guard lock(mu_);
  std::vector<std::string> free;
  for (auto& [name, kind] : kinds_) {
    if (kind.running < kind.options.concurrency) {
      ++kind.running;
      free.push_back(name);
    }
  }
  return free;
}

void WorkerPool::ReleaseSlots(const std::vector<std::string>& kinds, const std::string& keep) {
  std::lock_guard lock(mu_);
  for (const auto& k : kinds) {
    if (k != keep) --kinds_[k].running;
  }
}

int64_t WorkerPool::BackoffMillis(const HandlerOptions& options, int attempt) const {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  double base = static_cast<double>(options.backoff_base.count());
  for (int i = 1; i < attempt && base < static_cast<double>(options.backoff_max.count()); ++i) base *= 2;
  base = std::min(base, static_cast<double>(options.backoff_max.count()));
  // Full jitter over [base/2, base]: retries of many failed jobs spread out instead of stampeding.
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  return static_cast<int64_t>(base * jitter(rng));
}

Result<bool> WorkerPool::RunOne() {
  // Reclaiming scans the running jobs: once per poll interval per pool is often enough.
  const int64_t now = clock_.NowMillis();
  int64_t last = last_reclaim_.load();
  if (now - last >= options_.poll.count() && last_reclaim_.compare_exchange_strong(last, now)) {
    CF_RETURN_IF_ERROR(store_.Transact([&](store::Tx& tx) -> Result<void> {
      CF_RETURN_IF_ERROR(store::ReclaimExpiredLeases(tx, now));
      return Ok();
    }));
  }
  std::optional<store::Job> job = TakeHere();
  if (!job) {
    std::vector<std::string> kinds = ReserveSlots();
    auto leased = store::Write(store_, [&](store::Tx& tx) {
      return store::LeaseJob(tx, kinds, owner_, clock_.NowMillis(), options_.lease.count());
    });
    ReleaseSlots(kinds, leased.ok() && *leased ? (*leased)->kind : std::string());
    if (!leased.ok()) return leased.error();
    if (!*leased) return false;
    job = std::move(*leased);
    std::lock_guard lock(mu_);
    running_ids_.insert(job->id);
  }
  CF_RETURN_IF_ERROR(Execute(*job));
  return true;
}

Result<void> WorkerPool::Execute(const store::Job& job) {
  JobHandler handler;
  HandlerOptions handler_options;
  {
    std::lock_guard lock(mu_);
    auto kind = kinds_.find(job.kind);
    if (kind != kinds_.end()) {
      handler = kind->second.handler;
      handler_options = kind->second.options;
    }
  }
  log::Info("job started", {{"job_id", job.id}, {"kind", job.kind}, {"attempt", job.attempts}});
  JobContext ctx(
      job,
      [&](int64_t done, int64_t total) {
        Result<void> r = store_.Transact([&](store::Tx& tx) -> Result<void> {
          CF_RETURN_IF_ERROR(store::SetJobProgress(tx, job.id, owner_, done, total, clock_.NowMillis()));
          return Ok();
        });
        if (!r.ok()) log::Warn("recording job progress", {{"job_id", job.id}, {"error", r.error().message}});
      },
      [&](store::Tx& tx) { return store::CompleteJob(tx, job.id, owner_, job.attempts, clock_.NowMillis()); });
  Result<void> outcome = Ok();
  try {
    outcome = handler ? handler(ctx) : MakeError(ErrorCode::kInvalidArgument, "no handler for the job's kind");
  } catch (const std::exception& e) {
    outcome = MakeError(ErrorCode::kInternal, std::string("handler threw: ") + e.what());
  } catch (...) {
    outcome = MakeError(ErrorCode::kInternal, "handler threw a non-standard exception");
  }
  {
    std::lock_guard lock(mu_);
    running_ids_.erase(running_ids_.find(job.id));
    auto kind = kinds_.find(job.kind);
    if (kind != kinds_.end()) --kind->second.running;
  }

  // A handler that completed the job in its own transaction left nothing to record.
  const std::optional<bool> completed = outcome.ok() ? ctx.completed() : std::nullopt;
  bool recorded = completed.value_or(false);
  const int64_t finished = clock_.NowMillis();
  Result<void> saved = completed ? Ok() : store_.Transact([&](store::Tx& tx) -> Result<void> {
    if (outcome.ok()) {
      CF_ASSIGN_OR_RETURN(recorded, store::CompleteJob(tx, job.id, owner_, job.attempts, finished));
    } else {
      const bool permanent = outcome.error().code == ErrorCode::kInvalidArgument ||
                             (handler_options.retried && !handler_options.retried(outcome.error()));
      CF_ASSIGN_OR_RETURN(recorded,
                          store::FailJob(tx, job.id, owner_, job.attempts, outcome.error().message,
                                         finished + BackoffMillis(handler_options, job.attempts), permanent, finished));
    }
    return Ok();
  });
  if (!saved.ok()) return saved.error();
  log::Fields fields{{"job_id", job.id}, {"kind", job.kind}, {"attempt", job.attempts}};
  if (!recorded) {
    log::Warn("job finished after its lease was lost; another worker owns it now", fields);
  } else if (outcome.ok()) {
    log::Info("job done", fields);
  } else {
    fields["error"] = outcome.error().message;
    log::Warn("job attempt failed", fields);
  }
  return Ok();
}

void WorkerPool::WorkerLoop() {
  for (;;) {
    uint64_t seen = 0;
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      seen = wakes_;
    }
    Result<bool> ran = RunOne();
    if (!ran.ok()) log::Error("job worker", {{"error", ran.error().message}});
    if (ran.ok() && *ran) continue;
    std::unique_lock lock(mu_);
    clock_.WaitFor(cv_, lock, options_.poll, [&] { return stopping_ || wakes_ != seen; });
  }
}

void WorkerPool::HeartbeatLoop() {
  // Renew at a third of the lease, so two renewals may fail before another node re-runs the job.
  const auto interval = options_.lease / 3;
  for (;;) {
    std::vector<int64_t> ids;
    {
      std::unique_lock lock(mu_);
      if (clock_.WaitFor(heartbeat_cv_, lock, interval, [&] { return stopping_; })) return;
      std::unique_copy(running_ids_.begin(), running_ids_.end(), std::back_inserter(ids));
    }
    if (ids.empty()) continue;
    const int64_t now = clock_.NowMillis();
    Result<void> r = store_.Transact([&](store::Tx& tx) -> Result<void> {
      CF_RETURN_IF_ERROR(store::ExtendLeases(tx, owner_, ids, now + options_.lease.count(), now));
      return Ok();
    });
    if (!r.ok()) log::Error("renewing job leases", {{"error", r.error().message}});
  }
}

}  // namespace certfleet::jobs
