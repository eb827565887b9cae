// Store throughput on the embedded SQLite driver: the job queue's full cycle (enqueue,
// lease, complete) and audit appends, each a committed transaction as in production.
// No figure is named by an issue yet; this gives the baseline later changes compare to.
#include <benchmark/benchmark.h>

#include <filesystem>

#include "core/crypto.h"
#include "core/log.h"
#include "store/audit_repo.h"
#include "store/jobs_repo.h"
#include "store/migrations.h"

namespace certfleet::store {
namespace {

std::unique_ptr<Store> OpenTemp() {
  auto dir = std::filesystem::temp_directory_path() / ("certfleet-bench-" + RandomToken(6));
  std::filesystem::create_directories(dir);
  auto st = Store::Open("sqlite://" + (dir / "bench.db").string(), {4});
  if (!st.ok() || !Migrate(**st).ok()) std::abort();
  return std::move(st).value();
}

void BM_JobCycle(benchmark::State& state) {
  auto st = OpenTemp();
  int64_t now = 1;
  for (auto _ : state) {
    ++now;
    Result<void> r = st->Transact([&](Tx& tx) -> Result<void> {
      CF_RETURN_IF_ERROR(EnqueueJob(tx, NewJob{"bench", "{}", 0, 3, std::nullopt}, now));
      return Ok();
    });
    std::optional<Job> job;
    r = st->Transact([&](Tx& tx) -> Result<void> {
      CF_ASSIGN_OR_RETURN(job, LeaseJob(tx, {"bench"}, "bench-node", now, 60'000));
      return Ok();
    });
    r = st->Transact([&](Tx& tx) -> Result<void> {
      CF_RETURN_IF_ERROR(CompleteJob(tx, job->id, "bench-node", job->attempts, now));
      return Ok();
    });
    if (!r.ok()) state.SkipWithError(r.error().message.c_str());
  }
  state.counters["jobs_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_JobCycle)->Unit(benchmark::kMicrosecond)->MinTime(1.0)->UseRealTime();

void BM_AuditAppend(benchmark::State& state) {
  auto st = OpenTemp();
  int64_t now = 1;
  for (auto _ : state) {
    Result<void> r = st->Transact([&](Tx& tx) -> Result<void> {
      CF_RETURN_IF_ERROR(AppendAudit(tx, ++now, "bench", "thing.create", "thing:x", R"({"n":1})"));
      return Ok();
    });
    if (!r.ok()) state.SkipWithError(r.error().message.c_str());
  }
  state.counters["appends_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_AuditAppend)->Unit(benchmark::kMicrosecond)->MinTime(1.0)->UseRealTime();

}  // namespace
}  // namespace certfleet::store

int main(int argc, char** argv) {
  certfleet::log::SetLevel("warn");
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
