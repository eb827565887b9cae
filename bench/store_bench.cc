// Store throughput on the embedded SQLite driver: the job queue's full cycle (enqueue,
// lease, complete), audit appends, and storing an issued certificate, each committed as in
// production. These are the store's share of the workflows' figures (bench/issue).
#include <benchmark/benchmark.h>

#include <filesystem>

#include "core/crypto.h"
#include "store/audit_repo.h"
#include "store/certificates_repo.h"
#include "store/group_commit.h"
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

// What storing one issued certificate costs on its own: the inventory row, the audit entry
// and the event, with the argument's number of certificates per transaction (the group
// committer's batches under concurrent issuance hold about 20).
void BM_StoreIssuedCertificate(benchmark::State& state) {
  auto st = OpenTemp();
  const std::string pem(900, 'P');  // the size of a P-256 leaf in PEM
  const int64_t per_transaction = state.range(0);
  int64_t n = 0;
  auto piece = [&](Tx& tx) -> Result<void> {
    ++n;
    CertificateRecord c;
    c.serial = HexEncode(RandomBytes(16));
    c.fqdn = c.serial + ".iot.example.com";
    c.type = CertType::kDevice;
    c.parent_fqdn = "iot.example.com";
    c.status = CertStatus::kActive;
    c.not_before = n;
    c.not_after = n + 1000;
    c.fingerprint = HexEncode(RandomBytes(32));
    c.certificate_pem = pem;
    c.created_at = n;
    c.created_by = "bench";
    CF_RETURN_IF_ERROR(InsertCertificate(tx, c));
    CF_RETURN_IF_ERROR(
        AppendAudit(tx, n, "bench", "certificate.create", "certificate:" + c.serial, R"({"type":"device"})"));
    return AppendEvent(tx, n, "certificates/created", R"({"FQDN":"x","Type":"Client"})");
  };
  for (auto _ : state) {
    Result<void> r = st->Transact([&](Tx& tx) -> Result<void> {
      for (int64_t i = 0; i < per_transaction; ++i) CF_RETURN_IF_ERROR(piece(tx));
      return Ok();
    });
    if (!r.ok()) state.SkipWithError(r.error().message.c_str());
  }
  state.counters["certs_per_s"] = benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_StoreIssuedCertificate)
    ->Arg(1)
    ->Arg(4)
    ->Arg(16)
    ->Arg(64)
    ->Unit(benchmark::kMicrosecond)
    ->MinTime(1.0)
    ->UseRealTime();

}  // namespace
}  // namespace certfleet::store
