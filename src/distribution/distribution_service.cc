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
#include "store/jobs_repo.h"

namespace certfleet::distribution {
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

constexpr size_t kMaxRecipients = 50;
constexpr size_t kMinPasswordChars = 12;  // AES-256 ZIPs are only as strong as their password
constexpr size_t kMaxPasswordChars = 128;

}  // namespace

DistributionService::DistributionService(store::Store& store, blob::BlobStore& inbound, mail::Mailer& mailer,
                                         const Clock& clock, Options options)
    : store_(store), inbound_(inbound), mailer_(mailer), clock_(clock), options_(std::move(options)) {}

Result<store::WarehouseSettings> DistributionService::PutWarehouse(const std::string& name,
                                                                   std::vector<std::string> recipients,
                                                                   const PasswordChange& zip_password,
                                                                   std::string_view actor) {
  auto invalid = [](std::string message) { return MakeError(ErrorCode::kInvalidArgument, std::move(message)); };
  if (!IsWarehouseName(name)) return invalid("a warehouse name is 1 to 64 letters, digits, '_', '-' or '.'");
  if (recipients.empty() || recipients.size() > kMaxRecipients) {
    return invalid(fmt::format("recipients: 1 to {} mail addresses", kMaxRecipients));
  }
  for (const auto& r : recipients) {
    if (!mail::IsMailAddress(r)) return invalid("recipients must be mail addresses (name@domain)");
  }
  using Kind = PasswordChange::Kind;
  const std::string& password = zip_password.password;
  if (zip_password.kind == Kind::kSet && (password.size() < kMinPasswordChars || password.size() > kMaxPasswordChars)) {
    return invalid(
        fmt::format("zip_password: {} to {} characters, or null for plain ZIPs", kMinPasswordChars, kMaxPasswordChars));
  }
  store::WarehouseSettings w;
  w.name = name;
  w.recipients = std::move(recipients);
  if (zip_password.kind == Kind::kSet) {
    w.zip_password = options_.master_key.empty()
                         ? password
                         : SealSecret(options_.master_key, fmt::format("zip-password:{}", name), password);
  }
  w.updated_at = clock_.NowMillis();
  w.updated_by = std::string(actor);
  CF_RETURN_IF_ERROR(store::Write(store_, [&](store::Tx& tx) -> Result<void> {
    if (zip_password.kind == Kind::kKeep) {
      CF_ASSIGN_OR_RETURN(auto stored, store::FindWarehouse(tx, name));
      w.zip_password = stored ? stored->zip_password : std::nullopt;
    }
    CF_RETURN_IF_ERROR(store::PutWarehouse(tx, w));
    json::object details{{"recipients", json::value_from(w.recipients)}, {"zip_encrypted", w.zip_password.has_value()}};
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, w.updated_at, actor, "distribution.warehouse.put", "warehouse:" + name,
                                          json::serialize(details)));
    return Ok();
  }));
  return w;
}

Result<std::vector<store::WarehouseSettings>> DistributionService::Warehouses() {
  return store::Read(store_, [](store::Tx& tx) { return store::ListWarehouses(tx); });
}

Result<std::vector<store::DistributionRecord>> DistributionService::Records(const store::RecordFilter& filter) {
  return store::Read(store_, [&](store::Tx& tx) { return store::ListRecords(tx, filter); });
}

Result<std::vector<store::Delivery>> DistributionService::Deliveries(const std::optional<std::string>& warehouse,
                                                                     std::optional<int64_t> before, int limit) {
  return store::Read(store_, [&](store::Tx& tx) { return store::ListDeliveries(tx, warehouse, before, limit); });
}

Result<std::vector<std::pair<std::string, int64_t>>> DistributionService::RecordCounts() {
  return store::Read(store_, [](store::Tx& tx) { return store::CountRecordsByStatus(tx); });
}

Result<int64_t> DistributionService::Resend(const std::string& warehouse, const std::vector<std::string>& gateway_euis,
                                            bool failed_only, std::string_view actor) {
  constexpr size_t kMaxGateways = 10'000;
  if (gateway_euis.size() > kMaxGateways) {
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("at most {} gateways at once", kMaxGateways));
  }
  return store::Write(store_, [&](store::Tx& tx) -> Result<int64_t> {
    const int64_t now = clock_.NowMillis();
    CF_ASSIGN_OR_RETURN(bool known, store::WarehouseHasGateways(tx, warehouse));
    if (!known) return MakeError(ErrorCode::kNotFound, fmt::format("no records of warehouse {}", warehouse));
    CF_ASSIGN_OR_RETURN(int64_t marked, store::ResendRecords(tx, warehouse, gateway_euis, failed_only, now));
    const boost::json::object details{
        {"gateways", boost::json::value_from(gateway_euis)}, {"failed_only", failed_only}, {"marked", marked}};
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "distribution.resend", "warehouse:" + warehouse,
                                          boost::json::serialize(details)));
    return marked;
  });
}

Result<int64_t> DistributionService::RequestRun(std::string_view actor) {
  return store::Write(store_, [&](store::Tx& tx) -> Result<int64_t> {
    const int64_t now = clock_.NowMillis();
    store::NewJob job;
    job.kind = std::string(kRunJob);
    // Retried while another run holds the lock (see RegisterJobs); failed records carry their
    // own retries.
    job.max_attempts = kRunJobAttempts;
    CF_ASSIGN_OR_RETURN(auto id, store::EnqueueJob(tx, job, now));
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "distribution.run", fmt::format("job:{}", *id), "{}"));
    return *id;
  });
}

Result<ScanResult> DistributionService::Scan() {
  const auto start = std::chrono::steady_clock::now();
  ScanResult result;
  CF_RETURN_IF_ERROR(inbound_.List(options_.prefix, [&](std::vector<blob::ObjectInfo>& page) -> Result<void> {
    result.objects += static_cast<int64_t>(page.size());
    CF_ASSIGN_OR_RETURN(int64_t marked, Record(page, /*listed=*/true));
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

Result<int64_t> DistributionService::Record(const std::vector<blob::ObjectInfo>& objects, bool listed) {
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
    CF_ASSIGN_OR_RETURN(int64_t marked, store::RecordObjects(tx, known, listed, now));
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

SendResult& SendResult::operator+=(const SendResult& o) {
  warehouses += o.warehouses;
  gateways_sent += o.gateways_sent;
  gateways_failed += o.gateways_failed;
  mails_sent += o.mails_sent;
  mails_failed += o.mails_failed;
  bytes_sent += o.bytes_sent;
  download_millis += o.download_millis;
  zip_millis += o.zip_millis;
  send_millis += o.send_millis;
  return *this;
}

std::map<std::string, SendResult> DistributionService::WarehouseCounters() const {
  std::lock_guard lock(totals_mu_);
  return totals_;
}

Result<SendResult> DistributionService::SendPending(const std::function<void(int64_t, int64_t)>& progress) {
  // One run at a time over all nodes: two would mail the same files twice.
  CF_ASSIGN_OR_RETURN(auto lease, store_.TryLead("distribution-send"));
  if (!lease) return MakeError(ErrorCode::kFailedPrecondition, "another distribution run is in progress");
  SendResult result;
  CF_ASSIGN_OR_RETURN(auto warehouses, store::Read(store_, [&](store::Tx& tx) {
                        return store::WarehousesToSend(tx, options_.max_attempts);
                      }));
  const int64_t now = clock_.NowMillis();
  const std::string run_dir = fmt::format("{}/run-{}-{}", options_.work_dir, Stamp(now), HexEncode(RandomBytes(4)));
  int64_t done = 0;
  std::optional<std::string> lost_before;
  for (const auto& warehouse : warehouses) {
    // A lease lost midway (its database connection broke) lets another node's run start: this
    // one stops before its next warehouse, so that no files go twice.
    if (!lease->Held()) {
      lost_before = warehouse;
      break;
    }
    SendResult w;  // what this warehouse gets in this run
    w.warehouses = 1;
    WarehouseRun run({store_, inbound_, mailer_, clock_, options_, counters_, [&lease] { return lease->Held(); }},
                     warehouse, fmt::format("{}/{}", run_dir, warehouse), w, [&](int64_t n) {
                       done += n;
                       if (progress) progress(done, 0);
                     });
    const int64_t started = clock_.NowMillis();
    Result<void> r = run.Run();
    if (!r.ok()) log::Error("distribution failed", {{"warehouse", warehouse}, {"error", r.error().message}});
    if (!r.ok() && !lease->Held()) lost_before = warehouse;
    // The seed's per-group processor line.
    log::Info("warehouse distributed", {{"warehouse", warehouse},
                                        {"gateways_mailed", w.gateways_sent},
                                        {"gateways_failed", w.gateways_failed},
                                        {"mails", w.mails_sent},
                                        {"mails_failed", w.mails_failed},
                                        {"bytes", w.bytes_sent},
                                        {"millis", clock_.NowMillis() - started}});
    result += w;
    {
      std::lock_guard lock(totals_mu_);
      totals_[warehouse] += w;
    }
    if (lost_before) break;
  }
  std::error_code ec;
  fs::remove_all(run_dir, ec);
  if (lost_before) {
    log::Error("the distribution run lost its lease and stopped", {{"next_warehouse", *lost_before}});
    return MakeError(ErrorCode::kUnavailable, "the distribution run lost its lease at " + *lost_before);
  }
  log::Info("distribution run finished", {{"warehouses", result.warehouses},
                                          {"gateways_sent", result.gateways_sent},
                                          {"gateways_failed", result.gateways_failed},
                                          {"mails_sent", result.mails_sent},
                                          {"mails_failed", result.mails_failed}});
  return result;
}

}  // namespace certfleet::distribution
