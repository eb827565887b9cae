#include "distribution/distribution_service.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <filesystem>

#include "core/crypto.h"
#include "core/log.h"
#include "distribution/layout.h"
#include "distribution/warehouse_run.h"
#include "store/audit_repo.h"
#include "store/distribution_repo.h"

namespace certfleet::distribution {
namespace fs = std::filesystem;
namespace json = boost::json;

DistributionService::DistributionService(store::Store& store, blob::BlobStore& inbound, mail::Mailer& mailer,
                                         const Clock& clock, Options options)
    : store_(store), inbound_(inbound), mailer_(mailer), clock_(clock), options_(std::move(options)) {}

std::string DistributionService::SealZipPassword(std::string_view warehouse, std::string_view password) const {
  if (options_.master_key.empty()) return std::string(password);
  return SealSecret(options_.master_key, fmt::format("zip-password:{}", warehouse), password);
}

Result<ScanResult> DistributionService::Scan() {
  const auto start = std::chrono::steady_clock::now();
  ScanResult result;
  CF_RETURN_IF_ERROR(inbound_.List(options_.prefix, [&](std::vector<blob::ObjectInfo>& page) -> Result<void> {
    result.objects += static_cast<int64_t>(page.size());
    CF_ASSIGN_OR_RETURN(int64_t marked, MarkChanged(page));
    result.marked += marked;
    return Ok();
  }));
  result.millis = Since(start);
  log::Info("scanned the inbound store", {{"store", inbound_.Describe()},
                                          {"objects", result.objects},
                                          {"marked_pending", result.marked},
                                          {"millis", result.millis}});
  return result;
}

Result<int64_t> DistributionService::MarkChanged(const std::vector<blob::ObjectInfo>& objects) {
  std::vector<store::DistributionObject> known;
  known.reserve(objects.size());
  for (const auto& o : objects) {
    auto where = Classify(o.key, options_.prefix);
    if (auto* why = std::get_if<std::string>(&where)) {
      if (FirstWarning(o)) log::Warn("ignoring inbound object", {{"key", o.key.substr(0, 300)}, {"reason", *why}});
      continue;
    }
    auto& f = std::get<InboundFile>(where);
    known.push_back({o.key, std::move(f.warehouse), std::move(f.gateway_eui), o.etag, o.last_modified_millis, o.size});
  }
  const int64_t now = clock_.NowMillis();
  return store::Write(store_, [&](store::Tx& tx) -> Result<int64_t> {
    CF_ASSIGN_OR_RETURN(int64_t marked, store::RecordObjects(tx, known, now));
    if (marked > 0) {
      CF_RETURN_IF_ERROR(
          store::AppendAudit(tx, now, kDistributionActor, "distribution.mark_pending", "inbound",
                             json::serialize(json::object{{"records", marked}, {"objects", known.size()}})));
    }
    return marked;
  });
}

bool DistributionService::FirstWarning(const blob::ObjectInfo& object) {
  std::lock_guard lock(warned_mu_);
  if (warned_.size() >= kMaxRemembered) warned_.clear();
  return warned_.insert(object.key + "\n" + object.etag).second;
}

Result<SendResult> DistributionService::SendPending(const std::function<void(int64_t, int64_t)>& progress) {
  // One run at a time over all nodes: two would mail the same files twice.
  CF_ASSIGN_OR_RETURN(auto lease, store_.TryLead("distribution-send"));
  if (!lease) return MakeError(ErrorCode::kUnavailable, "another distribution run is in progress");
  SendResult result;
  CF_ASSIGN_OR_RETURN(auto warehouses, store::Read(store_, [&](store::Tx& tx) {
                        return store::WarehousesToSend(tx, options_.max_attempts);
                      }));
  const int64_t now = clock_.NowMillis();
  const std::string run_dir = fmt::format("{}/run-{}-{}", options_.work_dir, Stamp(now), HexEncode(RandomBytes(4)));
  int64_t done = 0;
  for (const auto& warehouse : warehouses) {
    ++result.warehouses;
    WarehouseRun run({store_, inbound_, mailer_, clock_, options_, counters_}, warehouse,
                     fmt::format("{}/{}", run_dir, warehouse), result, [&](int64_t n) {
                       done += n;
                       if (progress) progress(done, 0);
                     });
    Result<void> r = run.Run();
    if (!r.ok()) log::Error("distribution failed", {{"warehouse", warehouse}, {"error", r.error().message}});
  }
  std::error_code ec;
  fs::remove_all(run_dir, ec);
  log::Info("distribution run finished", {{"warehouses", result.warehouses},
                                          {"gateways_sent", result.gateways_sent},
                                          {"gateways_failed", result.gateways_failed},
                                          {"mails_sent", result.mails_sent},
                                          {"mails_failed", result.mails_failed}});
  return result;
}

}  // namespace certfleet::distribution
