#include "distribution/distribution_service.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "core/crypto.h"
#include "core/log.h"
#include "distribution/bundle.h"
#include "distribution/layout.h"
#include "store/audit_repo.h"
#include "store/distribution_repo.h"

namespace certfleet::distribution {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;

// Records read per query while planning, so memory does not grow with the warehouse.
constexpr int kPlanPage = 1000;
// A gateway file's path in the ZIP: <16-digit EUI>/<5 digits>.pem or .key.
constexpr size_t kGatewayEntryName = 16 + 1 + 9;
// The longest ZIP name: <warehouse, 64>_YYYYMMDD_HHMMSS_part<n>.zip.
constexpr size_t kZipNameBound = 64 + 16 + 16 + 4;
// The mail body without its EUI lines (warehouse, counts, part, shared file names, ZIP).
constexpr size_t kBodyBase = 1024;
constexpr size_t kBodyPerGateway = 16 + 1;
constexpr std::string_view kGatewaySubject = "{}: Gateway Certificates and Server/Endpoints Files";
constexpr std::string_view kSharedSubject = "{}: Server and Endpoints Files";
constexpr std::string_view kActor = "distribution";

std::string Stamp(int64_t millis) {
  const std::time_t t = static_cast<std::time_t>(millis / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:%Y%m%d_%H%M%S}", tm);
}

int64_t Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
}

// Runs fn(i) for i in [0, n) on up to `workers` threads.
void Parallel(size_t n, int workers, const std::function<void(size_t)>& fn) {
  std::atomic<size_t> next{0};
  auto loop = [&] {
    for (size_t i; (i = next.fetch_add(1)) < n;) fn(i);
  };
  std::vector<std::thread> threads;
  const size_t count = std::min(n, static_cast<size_t>(std::max(workers, 1)));
  for (size_t t = 1; t < count; ++t) threads.emplace_back(loop);
  loop();
  for (auto& t : threads) t.join();
}

// Bytes a gateway's files add to a ZIP at most.
uint64_t GatewayBound(const store::DistributionRecord& g) {
  const auto bytes = static_cast<uint64_t>(g.file_bytes);
  const auto count = static_cast<uint64_t>(g.file_count);
  return count * ZipEntryBound(kGatewayEntryName, 0) + bytes + bytes / 1000 + count;
}

struct Downloaded {
  std::string name;  // in the ZIP
  std::string key;
  std::string data;
};

}  // namespace

// One ZIP of a warehouse's run: a range of gateway EUIs (after, last] while planning, then
// what it holds once built.
struct DistributionService::Part {
  std::string after;
  std::string last;
  int64_t planned = 0;
  std::vector<std::pair<std::string, int64_t>> gateways;  // (EUI, version) in the ZIP
  std::string zip_path;
  uint64_t zip_bytes = 0;
  int64_t files = 0;
};

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
          store::AppendAudit(tx, now, kActor, "distribution.mark_pending", "inbound",
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
    Result<void> r = SendWarehouse(warehouse, fmt::format("{}/{}", run_dir, warehouse), result, [&](int64_t n) {
      done += n;
      if (progress) progress(done, 0);
    });
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

Result<void> DistributionService::SendWarehouse(const std::string& warehouse, const std::string& dir,
                                                SendResult& result, const std::function<void(int64_t)>& gateways_done) {
  const int max_attempts = options_.max_attempts;
  struct Loaded {
    std::optional<store::WarehouseSettings> settings;
    std::vector<store::DistributionObject> shared;
    std::optional<store::DistributionRecord> shared_record;
    bool has_gateways = false;
  };
  CF_ASSIGN_OR_RETURN(Loaded loaded, store::Read(store_, [&](store::Tx& tx) -> Result<Loaded> {
                        Loaded l;
                        CF_ASSIGN_OR_RETURN(l.settings, store::FindWarehouse(tx, warehouse));
                        CF_ASSIGN_OR_RETURN(l.shared, store::ObjectsOf(tx, warehouse, store::kSharedFiles));
                        CF_ASSIGN_OR_RETURN(l.shared_record, store::FindRecord(tx, warehouse, store::kSharedFiles));
                        CF_ASSIGN_OR_RETURN(l.has_gateways, store::WarehouseHasGateways(tx, warehouse));
                        return l;
                      }));
  std::vector<std::string> recipients;
  if (loaded.settings) recipients = loaded.settings->recipients;
  if (recipients.empty() && !options_.default_recipient.empty()) recipients = {options_.default_recipient};
  std::optional<std::string> password;
  if (loaded.settings && loaded.settings->zip_password) {
    password = options_.master_key.empty() ? loaded.settings->zip_password
                                           : OpenSecret(options_.master_key, fmt::format("zip-password:{}", warehouse),
                                                        *loaded.settings->zip_password);
  }
  const auto& shared_record = loaded.shared_record;
  const bool shared_to_send =
      shared_record && (shared_record->status == store::kPendingEmail ||
                        (shared_record->status == store::kFailedEmail && shared_record->attempts < max_attempts));
  std::vector<std::pair<std::string, std::string>> exhausted;  // (EUI, error) out of attempts

  auto mark_failed = [&](store::Tx& tx, const std::string& eui, int64_t version,
                         const std::string& error) -> Result<void> {
    int attempts = 0;
    CF_ASSIGN_OR_RETURN(bool marked,
                        store::MarkFailed(tx, warehouse, eui, version, error, clock_.NowMillis(), &attempts));
    if (marked && attempts >= max_attempts) exhausted.emplace_back(eui, error);
    return Ok();
  };
  // Every record of the warehouse this run would have sent, FAILED_EMAIL: nothing goes out.
  auto fail_all = [&](const std::string& error) -> Result<void> {
    log::Error("distribution failed for the warehouse", {{"warehouse", warehouse}, {"error", error}});
    std::string after;
    for (;;) {
      CF_ASSIGN_OR_RETURN(auto page, store::Read(store_, [&](store::Tx& tx) {
                            return store::GatewaysToSend(tx, warehouse, after, max_attempts, kPlanPage);
                          }));
      CF_RETURN_IF_ERROR(store::Write(store_, [&](store::Tx& tx) -> Result<void> {
        for (const auto& g : page) CF_RETURN_IF_ERROR(mark_failed(tx, g.gateway_eui, g.version, error));
        return Ok();
      }));
      result.gateways_failed += static_cast<int64_t>(page.size());
      if (page.empty() || page.size() < static_cast<size_t>(kPlanPage)) break;
      after = page.back().gateway_eui;
    }
    if (shared_to_send) {
      CF_RETURN_IF_ERROR(store::Write(store_, [&](store::Tx& tx) -> Result<void> {
        return mark_failed(tx, std::string(store::kSharedFiles), shared_record->version, error);
      }));
    }
    Notify(warehouse, exhausted);
    return Ok();
  };

  if (loaded.settings && loaded.settings->zip_password && !password) {
    return fail_all("the ZIP password does not open with this master key; set it again");
  }
  if (recipients.empty()) {
    return fail_all("no recipients: set them with PUT /v1/distribution/warehouses/" + warehouse +
                    " or distribution.default_recipient");
  }

  // What a ZIP and its mail may hold: both limits, with the mail's headers, body and base64.
  mail::Message shape;
  shape.from = options_.sender;
  shape.to = recipients;
  shape.subject = fmt::format(fmt::runtime(kGatewaySubject), warehouse);
  shape.attachments.push_back({std::string(kZipNameBound, 'x'), "application/zip", ""});
  const size_t mail_overhead = mail::RenderedSizeWithoutAttachments(shape);
  uint64_t shared_zip = kZipEndBound;
  size_t shared_names = 0;
  auto file_name = [](const std::string& key) { return key.substr(key.rfind('/') + 1); };
  for (const auto& o : loaded.shared) {
    shared_zip += ZipEntryBound(file_name(o.key).size(), static_cast<uint64_t>(o.size));
    shared_names += file_name(o.key).size() + 2;
  }
  auto fits = [&](int64_t gateways, uint64_t zip) {
    return zip <= options_.zip_max_bytes &&
           mail_overhead + mail::Base64LinesSize(kBodyBase + shared_names + gateways * kBodyPerGateway) +
                   mail::Base64LinesSize(zip) <=
               options_.mail_max_bytes;
  };
  if (!fits(0, shared_zip)) return fail_all("the shared files alone do not fit in one mail");

  // Plan: consecutive ranges of EUIs whose ZIPs fit, read a page at a time.
  std::vector<Part> parts;
  Part current;
  uint64_t current_zip = shared_zip;
  std::string after;
  for (;;) {
    CF_ASSIGN_OR_RETURN(auto page, store::Read(store_, [&](store::Tx& tx) {
                          return store::GatewaysToSend(tx, warehouse, after, max_attempts, kPlanPage);
                        }));
    for (const auto& g : page) {
      after = g.gateway_eui;
      if (g.file_count == 0) {
        log::Warn("gateway has no files in the inbound store", {{"warehouse", warehouse}, {"gateway", g.gateway_eui}});
        continue;
      }
      const uint64_t bound = GatewayBound(g);
      if (!fits(1, shared_zip + bound)) {
        CF_RETURN_IF_ERROR(store::Write(store_, [&](store::Tx& tx) -> Result<void> {
          return mark_failed(tx, g.gateway_eui, g.version, "the gateway's files do not fit in one mail");
        }));
        ++result.gateways_failed;
        continue;
      }
      if (current.planned > 0 && !fits(current.planned + 1, current_zip + bound)) {
        const std::string last = current.last;
        parts.push_back(std::move(current));
        current = Part{};
        current.after = last;
        current_zip = shared_zip;
      }
      ++current.planned;
      current_zip += bound;
      current.last = g.gateway_eui;
    }
    if (page.size() < static_cast<size_t>(kPlanPage)) break;
  }
  if (current.planned > 0) parts.push_back(std::move(current));
  const bool shared_only = parts.empty();
  if (shared_only) {
    if (!shared_to_send) {
      Notify(warehouse, exhausted);
      return Ok();
    }
    if (!loaded.has_gateways) {
      log::Info("shared files wait for the warehouse's first gateway", {{"warehouse", warehouse}});
      return Ok();
    }
    parts.emplace_back();
  }

  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return fail_all(fmt::format("creating the ZIP folder {}: {}", dir, ec.message()));

  // Shared files, once for every part.
  const auto download_start = std::chrono::steady_clock::now();
  std::vector<Downloaded> shared_files(loaded.shared.size());
  std::vector<std::optional<Error>> shared_errors(loaded.shared.size());
  Parallel(loaded.shared.size(), options_.download_workers, [&](size_t i) {
    auto data = inbound_.Get(loaded.shared[i].key, options_.zip_max_bytes);
    if (data.ok()) {
      shared_files[i] = {file_name(loaded.shared[i].key), loaded.shared[i].key, std::move(*data)};
    } else {
      shared_errors[i] = data.error();
    }
  });
  for (size_t i = shared_files.size(); i-- > 0;) {
    if (!shared_errors[i]) continue;
    if (shared_errors[i]->code != ErrorCode::kNotFound) {
      return fail_all("downloading shared file " + loaded.shared[i].key + ": " + shared_errors[i]->message);
    }
    log::Warn("missing object in the inbound store", {{"key", loaded.shared[i].key}});
    (void)store::Write(store_, [&](store::Tx& tx) { return store::DeleteObject(tx, loaded.shared[i].key); });
    shared_files.erase(shared_files.begin() + static_cast<std::ptrdiff_t>(i));
  }
  std::string shared_list;
  for (const auto& f : shared_files) shared_list += (shared_list.empty() ? "" : ", ") + f.name;
  log::Info(fmt::format("Downloaded shared files for {}: {}", warehouse, shared_list), {{"warehouse", warehouse}});
  // The parts were planned with the sizes the scan saw; files that grew since would break
  // the limits. Their new versions are marked by the next scan and go in the next run.
  uint64_t shared_bytes = 0;
  uint64_t shared_planned = 0;
  for (const auto& f : shared_files) shared_bytes += f.data.size();
  for (const auto& o : loaded.shared) shared_planned += static_cast<uint64_t>(o.size);
  if (shared_bytes > shared_planned) {
    log::Warn("shared files changed since the scan; the warehouse waits for the next run", {{"warehouse", warehouse}});
    return Ok();
  }
  result.download_millis += Since(download_start);

  // Build every ZIP before sending any, so that a failure sends nothing half-built.
  for (size_t p = 0; p < parts.size(); ++p) {
    Part& part = parts[p];
    struct Gateway {
      store::DistributionRecord record;
      std::vector<Downloaded> files;
      std::optional<Error> error;
    };
    std::vector<Gateway> gateways;
    const auto step_start = std::chrono::steady_clock::now();
    if (!shared_only) {
      CF_ASSIGN_OR_RETURN(auto records, store::Read(store_, [&](store::Tx& tx) {
                            return store::GatewaysToSend(tx, warehouse, part.after, max_attempts,
                                                         static_cast<int>(part.planned) + kPlanPage);
                          }));
      // The plan may be stale: gateways marked since are taken while they fit, the rest wait.
      uint64_t zip = shared_zip;
      for (auto& r : records) {
        if (r.gateway_eui > part.last) break;
        if (r.file_count == 0 || !fits(static_cast<int64_t>(gateways.size()) + 1, zip + GatewayBound(r))) continue;
        zip += GatewayBound(r);
        gateways.push_back({std::move(r), {}, {}});
      }
      CF_RETURN_IF_ERROR(store::Read(store_, [&](store::Tx& tx) -> Result<void> {
        for (auto& g : gateways) {
          CF_ASSIGN_OR_RETURN(auto objects, store::ObjectsOf(tx, warehouse, g.record.gateway_eui));
          for (auto& o : objects) g.files.push_back({file_name(o.key), std::move(o.key), {}});
        }
        return Ok();
      }));
      std::vector<std::pair<size_t, size_t>> jobs;
      for (size_t gi = 0; gi < gateways.size(); ++gi) {
        for (size_t fi = 0; fi < gateways[gi].files.size(); ++fi) jobs.emplace_back(gi, fi);
      }
      std::mutex mu;
      Parallel(jobs.size(), options_.download_workers, [&](size_t j) {
        auto& g = gateways[jobs[j].first];
        auto& f = g.files[jobs[j].second];
        auto data = inbound_.Get(f.key, options_.zip_max_bytes);
        std::lock_guard lock(mu);
        if (data.ok()) {
          f.data = std::move(*data);
        } else if (!g.error || g.error->code == ErrorCode::kNotFound) {
          g.error = data.error();
        }
      });
      // A missing object leaves its gateway for a later run; any other failure fails it.
      CF_RETURN_IF_ERROR(store::Write(store_, [&](store::Tx& tx) -> Result<void> {
        for (auto& g : gateways) {
          if (!g.error) continue;
          if (g.error->code == ErrorCode::kNotFound) {
            log::Warn("missing object in the inbound store",
                      {{"warehouse", warehouse}, {"gateway", g.record.gateway_eui}, {"error", g.error->message}});
            for (const auto& f : g.files) {
              if (f.data.empty()) CF_RETURN_IF_ERROR(store::DeleteObject(tx, f.key));
            }
            continue;
          }
          if (g.error->code == ErrorCode::kResourceExhausted) continue;  // grew since the scan: see below
          log::Warn("gateway download failed",
                    {{"warehouse", warehouse}, {"gateway", g.record.gateway_eui}, {"error", g.error->message}});
          CF_RETURN_IF_ERROR(mark_failed(tx, g.record.gateway_eui, g.record.version, g.error->message));
          ++result.gateways_failed;
        }
        return Ok();
      }));
      std::erase_if(gateways, [&](const Gateway& g) {
        if (g.error && g.error->code != ErrorCode::kResourceExhausted) return true;
        uint64_t bytes = 0;
        for (const auto& f : g.files) bytes += f.data.size();
        if (!g.error && bytes <= static_cast<uint64_t>(g.record.file_bytes)) return false;
        log::Warn("gateway files changed since the scan; they go in the next run",
                  {{"warehouse", warehouse}, {"gateway", g.record.gateway_eui}});
        return true;
      });
      result.download_millis += Since(step_start);
      if (gateways.empty()) continue;
    }

    const auto zip_start = std::chrono::steady_clock::now();
    std::vector<ZipEntry> entries;
    entries.reserve(shared_files.size() + 2 * gateways.size());
    for (const auto& f : shared_files) entries.push_back({f.name, f.data});
    for (const auto& g : gateways) {
      std::string names;
      for (const auto& f : g.files) {
        entries.push_back({g.record.gateway_eui + "/" + f.name, f.data});
        names += (names.empty() ? "" : ", ") + f.name;
      }
      log::Info(fmt::format("Downloaded files for gateway {}: {}", g.record.gateway_eui, names),
                {{"warehouse", warehouse}});
      part.gateways.emplace_back(g.record.gateway_eui, g.record.version);
    }
    part.zip_path = fmt::format("{}/part-{}.zip", dir, p + 1);
    Result<uint64_t> written = WriteZip(part.zip_path, entries, password);
    result.zip_millis += Since(zip_start);
    if (!written.ok()) return fail_all("ZIP creation failed: " + written.error().message);
    if (*written > options_.zip_max_bytes) {
      return fail_all(fmt::format("internal: a ZIP of {} bytes passed its bound", *written));
    }
    part.zip_bytes = *written;
    part.files = static_cast<int64_t>(entries.size());
    log::Info(fmt::format("Created zip: {} with {} files", part.zip_path, part.files), {{"warehouse", warehouse}});
  }
  std::erase_if(parts, [](const Part& p) { return p.zip_path.empty(); });
  if (parts.empty()) {
    Notify(warehouse, exhausted);
    return Ok();
  }

  // Send: one mail per ZIP.
  const auto send_start = std::chrono::steady_clock::now();
  const std::string stamp = Stamp(clock_.NowMillis());
  int64_t total_gateways = 0;
  for (const auto& p : parts) total_gateways += static_cast<int64_t>(p.gateways.size());
  bool any_sent = false;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Part& part = parts[i];
    const std::string zip_name = parts.size() == 1 ? fmt::format("{}_{}.zip", warehouse, stamp)
                                                   : fmt::format("{}_{}_part{}.zip", warehouse, stamp, i + 1);
    mail::Message m;
    m.from = options_.sender;
    m.to = recipients;
    m.subject = fmt::format(fmt::runtime(shared_only ? kSharedSubject : kGatewaySubject), warehouse);
    m.text = fmt::format("Warehouse: {}\nGateways in this mail: {} (of {} in this run)\nPart {} of {}\n", warehouse,
                         part.gateways.size(), total_gateways, i + 1, parts.size());
    if (!part.gateways.empty()) {
      m.text += "Gateway EUIs:\n";
      for (const auto& [eui, version] : part.gateways) m.text += eui + "\n";
    }
    m.text += fmt::format("Shared files: {}\nAttachment: {} ({} files, {} bytes){}\n",
                          shared_list.empty() ? "none" : shared_list, zip_name, part.files, part.zip_bytes,
                          password ? ", AES-256 encrypted" : "");
    std::ifstream in(part.zip_path, std::ios::binary);
    std::string zip((std::istreambuf_iterator<char>(in)), {});
    if (zip.size() != part.zip_bytes)
      return fail_all("the ZIP " + part.zip_path + " changed or vanished before sending");
    m.attachments.push_back({zip_name, "application/zip", std::move(zip)});

    Result<mail::Sent> sent = SendWithRetries(m);
    const int64_t now = clock_.NowMillis();
    if (sent.ok()) {
      any_sent = true;
      store::Delivery d;
      d.at = now;
      d.warehouse = warehouse;
      d.message_id = sent->message_id;
      d.recipients = recipients;
      d.subject = m.subject;
      d.zip_name = zip_name;
      d.zip_bytes = static_cast<int64_t>(part.zip_bytes);
      d.message_bytes = static_cast<int64_t>(sent->bytes);
      d.part = static_cast<int>(i + 1);
      d.parts = static_cast<int>(parts.size());
      for (const auto& [eui, version] : part.gateways) d.gateways.push_back(eui);
      CF_RETURN_IF_ERROR(store::Write(store_, [&](store::Tx& tx) -> Result<void> {
        CF_ASSIGN_OR_RETURN(int64_t id, store::InsertDelivery(tx, d));
        for (const auto& [eui, version] : part.gateways) {
          CF_RETURN_IF_ERROR(store::MarkEmailed(tx, warehouse, eui, version, now));
        }
        if (shared_to_send) {
          CF_RETURN_IF_ERROR(store::MarkEmailed(tx, warehouse, store::kSharedFiles, shared_record->version, now));
        }
        json::object details{{"delivery", id},
                             {"zip", zip_name},
                             {"gateways", d.gateways.size()},
                             {"bytes", d.message_bytes},
                             {"recipients", json::value_from(recipients)}};
        CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, kActor, "distribution.mail", "warehouse:" + warehouse,
                                              json::serialize(details)));
        return Ok();
      }));
      counters_.mails_sent.fetch_add(1);
      counters_.bytes_sent.fetch_add(static_cast<int64_t>(sent->bytes));
      ++result.mails_sent;
      result.bytes_sent += static_cast<int64_t>(sent->bytes);
      result.gateways_sent += static_cast<int64_t>(part.gateways.size());
      std::string to;
      for (const auto& r : recipients) to += (to.empty() ? "" : ", ") + r;
      log::Info(fmt::format("Email sent to {} for file {}", to, zip_name),
                {{"warehouse", warehouse}, {"message_id", sent->message_id}, {"bytes", sent->bytes}});
    } else {
      counters_.mails_failed.fetch_add(1);
      ++result.mails_failed;
      result.gateways_failed += static_cast<int64_t>(part.gateways.size());
      log::Error("mail failed", {{"warehouse", warehouse}, {"zip", zip_name}, {"error", sent.error().message}});
      CF_RETURN_IF_ERROR(store::Write(store_, [&](store::Tx& tx) -> Result<void> {
        for (const auto& [eui, version] : part.gateways) {
          CF_RETURN_IF_ERROR(mark_failed(tx, eui, version, sent.error().message));
        }
        return Ok();
      }));
    }
    gateways_done(static_cast<int64_t>(part.gateways.size()));
  }
  if (!any_sent && shared_to_send) {
    CF_RETURN_IF_ERROR(store::Write(store_, [&](store::Tx& tx) -> Result<void> {
      return mark_failed(tx, std::string(store::kSharedFiles), shared_record->version, "no mail went out");
    }));
  }
  result.send_millis += Since(send_start);
  Notify(warehouse, exhausted);
  return Ok();
}

Result<mail::Sent> DistributionService::SendWithRetries(const mail::Message& message) {
  auto delay = options_.send_backoff;
  for (int attempt = 1;; ++attempt) {
    Result<mail::Sent> sent = mailer_.Send(message);
    // Only transient failures are worth another try within this run.
    if (sent.ok() || sent.error().code != ErrorCode::kUnavailable || attempt >= options_.send_tries) return sent;
    log::Warn("mail not accepted, retrying", {{"attempt", attempt}, {"error", sent.error().message}});
    std::this_thread::sleep_for(delay);
    delay *= 2;
  }
}

void DistributionService::Notify(const std::string& warehouse,
                                 const std::vector<std::pair<std::string, std::string>>& exhausted) {
  if (exhausted.empty() || options_.operators.empty()) return;
  mail::Message m;
  m.from = options_.sender;
  m.to = {options_.operators};
  m.subject = fmt::format("certfleet: {} distribution records failed for good in {}", exhausted.size(), warehouse);
  m.text =
      fmt::format("These records of {} failed {} times and are no longer retried:\n", warehouse, options_.max_attempts);
  for (const auto& [eui, error] : exhausted) m.text += fmt::format("{}: {}\n", eui, error);
  m.text += "Fix the cause, then upload the files again (or retry with POST /v1/distribution/run).\n";
  auto sent = SendWithRetries(m);
  if (!sent.ok()) log::Error("cannot notify the operators", {{"error", sent.error().message}});
}

}  // namespace certfleet::distribution
