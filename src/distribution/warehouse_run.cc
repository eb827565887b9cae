#include "distribution/warehouse_run.h"

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
#include "store/audit_repo.h"

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

std::string FileName(const std::string& key) { return key.substr(key.rfind('/') + 1); }

std::string JoinComma(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
  return out;
}

// `fn` tried up to options.send_tries times while it fails with an error `retried` takes,
// waiting options.send_backoff, doubled after each try.
template <typename Fn>
auto Retried(const WarehouseRun::Env& env, std::string_view what, bool (*retried)(const Error&), Fn fn) {
  auto delay = env.options.send_backoff;
  for (int attempt = 1;; ++attempt) {
    auto r = fn();
    if (r.ok() || !retried(r.error()) || attempt >= env.options.send_tries) return r;
    log::Warn(what, {{"attempt", attempt}, {"error", r.error().message}});
    std::this_thread::sleep_for(delay);
    delay *= 2;
  }
}

}  // namespace

std::string Stamp(int64_t millis) {
  const std::time_t t = static_cast<std::time_t>(millis / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:%Y%m%d_%H%M%S}", tm);
}

int64_t Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
}

// A downloaded object.
struct WarehouseRun::File {
  std::string name;  // in the ZIP
  std::string key;
  std::string data;
};

// One ZIP of the run: a range of gateway EUIs (after, last] while planning, then what it
// holds once built.
struct WarehouseRun::Part {
  std::string after;
  std::string last;
  int64_t planned = 0;
  std::vector<std::pair<std::string, int64_t>> gateways;  // (EUI, version) in the ZIP
  std::string zip_path;
  uint64_t zip_bytes = 0;
  int64_t files = 0;
};

WarehouseRun::WarehouseRun(Env env, std::string warehouse, std::string dir, SendResult& result,
                           std::function<void(int64_t)> gateways_done)
    : env_(std::move(env)),
      warehouse_(std::move(warehouse)),
      dir_(std::move(dir)),
      result_(result),
      gateways_done_(std::move(gateways_done)) {}

WarehouseRun::~WarehouseRun() = default;

Result<void> WarehouseRun::Run() {
  CF_RETURN_IF_ERROR(Load());
  if (password_unreadable_) return FailAll("the ZIP password does not open with this master key; set it again");
  if (recipients_.empty()) {
    return FailAll("no recipients: set them with PUT /v1/distribution/warehouses/" + warehouse_ +
                   " or distribution.default_recipient");
  }
  if (!Fits(0, shared_zip_)) return FailAll("the shared files alone do not fit in one mail");
  CF_ASSIGN_OR_RETURN(std::vector<Part> parts, Plan());
  shared_only_ = parts.empty();
  if (shared_only_) {
    if (!shared_to_send_) {
      Notify();
      return Ok();
    }
    if (!has_gateways_) {
      log::Info("shared files wait for the warehouse's first gateway", {{"warehouse", warehouse_}});
      return Ok();
    }
    parts.emplace_back();
  }
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return FailAll(fmt::format("creating the ZIP folder {}: {}", dir_, ec.message()));

  CF_RETURN_IF_ERROR(DownloadShared());
  // Build every ZIP before sending any, so that a failure sends nothing half-built.
  for (size_t i = 0; i < parts.size() && !stopped_; ++i) CF_RETURN_IF_ERROR(Build(parts[i], i));
  if (stopped_) return Ok();
  std::erase_if(parts, [](const Part& p) { return p.zip_path.empty(); });
  // The operators hear of records that ran out of attempts however the sending ended.
  Result<void> sent = parts.empty() ? Ok() : Send(parts);
  Notify();
  return sent;
}

Result<void> WarehouseRun::Load() {
  std::optional<store::WarehouseSettings> settings;
  CF_RETURN_IF_ERROR(store::Read(env_.store, [&](store::Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(settings, store::FindWarehouse(tx, warehouse_));
    CF_ASSIGN_OR_RETURN(shared_, store::ObjectsOf(tx, warehouse_, store::kSharedFiles));
    CF_ASSIGN_OR_RETURN(shared_record_, store::FindRecord(tx, warehouse_, store::kSharedFiles));
    CF_ASSIGN_OR_RETURN(has_gateways_, store::WarehouseHasGateways(tx, warehouse_));
    return Ok();
  }));
  const auto& o = env_.options;
  if (settings) recipients_ = settings->recipients;
  if (recipients_.empty() && !o.default_recipient.empty()) recipients_ = {o.default_recipient};
  if (settings && settings->zip_password) {
    password_ = o.master_key.empty()
                    ? settings->zip_password
                    : OpenSecret(o.master_key, fmt::format("zip-password:{}", warehouse_), *settings->zip_password);
    password_unreadable_ = !password_;
  }
  shared_to_send_ = shared_record_ && (shared_record_->status == store::DistributionStatus::kPendingEmail ||
                                       (shared_record_->status == store::DistributionStatus::kFailedEmail &&
                                        shared_record_->attempts < o.max_attempts));

  // What a ZIP and its mail may hold: both limits, with the mail's headers, body and base64.
  mail::Message shape;
  shape.from = o.sender;
  shape.to = recipients_;
  shape.subject = fmt::format(fmt::runtime(kGatewaySubject), warehouse_);
  shape.attachments.push_back({std::string(kZipNameBound, 'x'), "application/zip", ""});
  mail_overhead_ = mail::RenderedSizeWithoutAttachments(shape);
  shared_zip_ = kZipEndBound;
  for (const auto& obj : shared_) {
    shared_zip_ += ZipEntryBound(FileName(obj.key).size(), static_cast<uint64_t>(obj.size));
    shared_names_ += FileName(obj.key).size() + 2;
  }
  return Ok();
}

bool WarehouseRun::Fits(int64_t gateways, uint64_t zip) const {
  const size_t body = kBodyBase + shared_names_ + static_cast<size_t>(gateways) * kBodyPerGateway;
  return zip <= env_.options.zip_max_bytes &&
         mail_overhead_ + mail::Base64LinesSize(body) + mail::Base64LinesSize(zip) <= env_.options.mail_max_bytes;
}

// Consecutive ranges of EUIs whose ZIPs fit, read a page of records at a time.
Result<std::vector<WarehouseRun::Part>> WarehouseRun::Plan() {
  std::vector<Part> parts;
  Part current;
  uint64_t current_zip = shared_zip_;
  std::string after;
  for (;;) {
    CF_ASSIGN_OR_RETURN(auto page, store::Read(env_.store, [&](store::Tx& tx) {
                          return store::GatewaysToSend(tx, warehouse_, after, env_.options.max_attempts, kPlanPage);
                        }));
    for (const auto& g : page) {
      after = g.gateway_eui;
      if (g.file_count == 0) {
        log::Warn("gateway has no files in the inbound store", {{"warehouse", warehouse_}, {"gateway", g.gateway_eui}});
        continue;
      }
      const uint64_t bound = GatewayBound(g);
      if (!Fits(1, shared_zip_ + bound)) {
        CF_RETURN_IF_ERROR(store::Write(env_.store, [&](store::Tx& tx) {
          return MarkFailed(tx, g.gateway_eui, g.version, "the gateway's files do not fit in one mail");
        }));
        ++result_.gateways_failed;
        continue;
      }
      if (current.planned > 0 && !Fits(current.planned + 1, current_zip + bound)) {
        const std::string last = current.last;
        parts.push_back(std::move(current));
        current = Part{};
        current.after = last;
        current_zip = shared_zip_;
      }
      ++current.planned;
      current_zip += bound;
      current.last = g.gateway_eui;
    }
    if (page.size() < static_cast<size_t>(kPlanPage)) break;
  }
  if (current.planned > 0) parts.push_back(std::move(current));
  return parts;
}

// The shared files, once for every part.
Result<void> WarehouseRun::DownloadShared() {
  const auto start = std::chrono::steady_clock::now();
  shared_files_.resize(shared_.size());
  std::vector<std::optional<Error>> errors(shared_.size());
  Parallel(shared_.size(), env_.options.download_workers, [&](size_t i) {
    auto data = env_.inbound.Get(shared_[i].key, env_.options.zip_max_bytes);
    if (data.ok()) {
      shared_files_[i] = {FileName(shared_[i].key), shared_[i].key, std::move(*data)};
    } else {
      errors[i] = data.error();
    }
  });
  result_.download_millis += Since(start);
  for (size_t i = shared_files_.size(); i-- > 0;) {
    if (!errors[i]) continue;
    if (errors[i]->code != ErrorCode::kNotFound) {
      return FailAll("downloading shared file " + shared_[i].key + ": " + errors[i]->message);
    }
    log::Warn("missing object in the inbound store", {{"key", shared_[i].key}});
    (void)store::Write(env_.store, [&](store::Tx& tx) { return store::DeleteObject(tx, shared_[i].key); });
    shared_files_.erase(shared_files_.begin() + static_cast<std::ptrdiff_t>(i));
  }
  std::vector<std::string> names;
  uint64_t bytes = 0;
  uint64_t planned = 0;
  for (const auto& f : shared_files_) {
    names.push_back(f.name);
    bytes += f.data.size();
  }
  for (const auto& obj : shared_) planned += static_cast<uint64_t>(obj.size);
  shared_list_ = JoinComma(names);
  log::Info(fmt::format("Downloaded shared files for {}: {}", warehouse_, shared_list_), {{"warehouse", warehouse_}});
  // The parts were planned with the sizes the scan saw; files that grew since would break
  // the limits. Their new versions are marked by the next scan and go in the next run.
  if (bytes > planned) {
    log::Warn("shared files changed since the scan; the warehouse waits for the next run", {{"warehouse", warehouse_}});
    stopped_ = true;
  }
  return Ok();
}

Result<void> WarehouseRun::Build(Part& part, size_t index) {
  struct Gateway {
    store::DistributionRecord record;
    std::vector<File> files;
    std::optional<Error> error;
  };
  std::vector<Gateway> gateways;
  if (!shared_only_) {
    const auto start = std::chrono::steady_clock::now();
    CF_ASSIGN_OR_RETURN(auto records, store::Read(env_.store, [&](store::Tx& tx) {
                          return store::GatewaysToSend(tx, warehouse_, part.after, env_.options.max_attempts,
                                                       static_cast<int>(part.planned) + kPlanPage);
                        }));
    // The plan may be stale: gateways marked since are taken while they fit, the rest wait.
    uint64_t zip = shared_zip_;
    for (auto& r : records) {
      if (r.gateway_eui > part.last) break;
      if (r.file_count == 0 || !Fits(static_cast<int64_t>(gateways.size()) + 1, zip + GatewayBound(r))) continue;
      zip += GatewayBound(r);
      gateways.push_back({std::move(r), {}, {}});
    }
    CF_RETURN_IF_ERROR(store::Read(env_.store, [&](store::Tx& tx) -> Result<void> {
      for (auto& g : gateways) {
        CF_ASSIGN_OR_RETURN(auto objects, store::ObjectsOf(tx, warehouse_, g.record.gateway_eui));
        for (auto& o : objects) g.files.push_back({FileName(o.key), std::move(o.key), {}});
      }
      return Ok();
    }));
    std::vector<std::pair<size_t, size_t>> jobs;
    for (size_t gi = 0; gi < gateways.size(); ++gi) {
      for (size_t fi = 0; fi < gateways[gi].files.size(); ++fi) jobs.emplace_back(gi, fi);
    }
    std::mutex mu;
    Parallel(jobs.size(), env_.options.download_workers, [&](size_t j) {
      auto& g = gateways[jobs[j].first];
      auto& f = g.files[jobs[j].second];
      auto data = env_.inbound.Get(f.key, env_.options.zip_max_bytes);
      std::lock_guard lock(mu);
      if (data.ok()) {
        f.data = std::move(*data);
      } else if (!g.error || g.error->code == ErrorCode::kNotFound) {
        g.error = data.error();
      }
    });
    // A missing object leaves its gateway for a later run (and so does one that grew since
    // the scan: it would break the limits); any other failure fails the gateway alone.
    CF_RETURN_IF_ERROR(store::Write(env_.store, [&](store::Tx& tx) -> Result<void> {
      for (auto& g : gateways) {
        if (!g.error || g.error->code == ErrorCode::kResourceExhausted) continue;
        if (g.error->code == ErrorCode::kNotFound) {
          log::Warn("missing object in the inbound store",
                    {{"warehouse", warehouse_}, {"gateway", g.record.gateway_eui}, {"error", g.error->message}});
          for (const auto& f : g.files) {
            if (f.data.empty()) CF_RETURN_IF_ERROR(store::DeleteObject(tx, f.key));
          }
          continue;
        }
        log::Warn("gateway download failed",
                  {{"warehouse", warehouse_}, {"gateway", g.record.gateway_eui}, {"error", g.error->message}});
        CF_RETURN_IF_ERROR(MarkFailed(tx, g.record.gateway_eui, g.record.version, g.error->message));
        ++result_.gateways_failed;
      }
      return Ok();
    }));
    std::erase_if(gateways, [&](const Gateway& g) {
      if (g.error && g.error->code != ErrorCode::kResourceExhausted) return true;
      uint64_t bytes = 0;
      for (const auto& f : g.files) bytes += f.data.size();
      if (!g.error && bytes <= static_cast<uint64_t>(g.record.file_bytes)) return false;
      log::Warn("gateway files changed since the scan; they go in the next run",
                {{"warehouse", warehouse_}, {"gateway", g.record.gateway_eui}});
      return true;
    });
    result_.download_millis += Since(start);
    if (gateways.empty()) return Ok();
  }

  const auto start = std::chrono::steady_clock::now();
  std::vector<ZipEntry> entries;
  entries.reserve(shared_files_.size() + 2 * gateways.size());
  for (const auto& f : shared_files_) entries.push_back({f.name, f.data});
  for (const auto& g : gateways) {
    std::vector<std::string> names;
    for (const auto& f : g.files) {
      entries.push_back({g.record.gateway_eui + "/" + f.name, f.data});
      names.push_back(f.name);
    }
    log::Info(fmt::format("Downloaded files for gateway {}: {}", g.record.gateway_eui, JoinComma(names)),
              {{"warehouse", warehouse_}});
    part.gateways.emplace_back(g.record.gateway_eui, g.record.version);
  }
  const std::string path = fmt::format("{}/part-{}.zip", dir_, index + 1);
  Result<uint64_t> written = WriteZip(path, entries, password_);
  result_.zip_millis += Since(start);
  if (!written.ok()) return FailAll("ZIP creation failed: " + written.error().message);
  if (*written > env_.options.zip_max_bytes) {
    return FailAll(fmt::format("internal: a ZIP of {} bytes passed its bound", *written));
  }
  part.zip_path = path;
  part.zip_bytes = *written;
  part.files = static_cast<int64_t>(entries.size());
  log::Info(fmt::format("Created zip: {} with {} files", part.zip_path, part.files), {{"warehouse", warehouse_}});
  return Ok();
}

// One mail per ZIP.
Result<void> WarehouseRun::Send(std::vector<Part>& parts) {
  const auto start = std::chrono::steady_clock::now();
  const std::string stamp = Stamp(env_.clock.NowMillis());
  int64_t total_gateways = 0;
  for (const auto& p : parts) total_gateways += static_cast<int64_t>(p.gateways.size());
  bool any_sent = false;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Part& part = parts[i];
    const std::string zip_name = parts.size() == 1 ? fmt::format("{}_{}.zip", warehouse_, stamp)
                                                   : fmt::format("{}_{}_part{}.zip", warehouse_, stamp, i + 1);
    mail::Message m;
    m.from = env_.options.sender;
    m.to = recipients_;
    m.subject = fmt::format(fmt::runtime(shared_only_ ? kSharedSubject : kGatewaySubject), warehouse_);
    m.text = fmt::format("Warehouse: {}\nGateways in this mail: {} (of {} in this run)\nPart {} of {}\n", warehouse_,
                         part.gateways.size(), total_gateways, i + 1, parts.size());
    if (!part.gateways.empty()) {
      m.text += "Gateway EUIs:\n";
      for (const auto& [eui, version] : part.gateways) m.text += eui + "\n";
    }
    m.text += fmt::format("Shared files: {}\nAttachment: {} ({} files, {} bytes){}\n",
                          shared_list_.empty() ? "none" : shared_list_, zip_name, part.files, part.zip_bytes,
                          password_ ? ", AES-256 encrypted" : "");
    std::ifstream in(part.zip_path, std::ios::binary);
    std::string zip((std::istreambuf_iterator<char>(in)), {});
    if (zip.size() != part.zip_bytes)
      return FailAll("the ZIP " + part.zip_path + " changed or vanished before sending");
    m.attachments.push_back({zip_name, "application/zip", std::move(zip)});

    if (env_.leading && !env_.leading()) {
      return MakeError(ErrorCode::kUnavailable,
                       fmt::format("the distribution run lost its lease before part {} of {} of {}; it goes in the "
                                   "next run",
                                   i + 1, parts.size(), warehouse_));
    }
    Result<mail::Sent> sent = SendWithRetries(env_, m);
    const int64_t now = env_.clock.NowMillis();
    if (sent.ok()) {
      any_sent = true;
      store::Delivery d;
      d.at = now;
      d.warehouse = warehouse_;
      d.message_id = sent->message_id;
      d.recipients = recipients_;
      d.subject = m.subject;
      d.zip_name = zip_name;
      d.zip_bytes = static_cast<int64_t>(part.zip_bytes);
      d.message_bytes = static_cast<int64_t>(sent->bytes);
      d.part = static_cast<int>(i + 1);
      d.parts = static_cast<int>(parts.size());
      for (const auto& [eui, version] : part.gateways) d.gateways.push_back(eui);
      // The mail is out: recording it is retried as a send is, or the next run would mail its
      // gateways again.
      auto record = [&] {
        return store::Write(env_.store, [&](store::Tx& tx) -> Result<void> {
          CF_ASSIGN_OR_RETURN(int64_t id, store::InsertDelivery(tx, d));
          for (const auto& [eui, version] : part.gateways) {
            CF_RETURN_IF_ERROR(store::MarkEmailed(tx, warehouse_, eui, version, now));
          }
          if (shared_to_send_) {
            CF_RETURN_IF_ERROR(store::MarkEmailed(tx, warehouse_, store::kSharedFiles, shared_record_->version, now));
          }
          json::object details{{"delivery", id},
                               {"zip", zip_name},
                               {"gateways", d.gateways.size()},
                               {"bytes", d.message_bytes},
                               {"recipients", json::value_from(recipients_)}};
          CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, kDistributionActor, "distribution.mail",
                                                "warehouse:" + warehouse_, json::serialize(details)));
          return Ok();
        });
      };
      Result<void> recorded = Retried(
          env_, "a mail sent could not be recorded, retrying", [](const Error&) { return true; }, record);
      if (!recorded.ok()) {
        log::Error("a mail sent could not be recorded: the next run mails its gateways again",
                   {{"warehouse", warehouse_},
                    {"zip", zip_name},
                    {"message_id", sent->message_id},
                    {"error", recorded.error().message}});
        return recorded.error();
      }
      env_.counters.mails_sent.fetch_add(1);
      env_.counters.bytes_sent.fetch_add(static_cast<int64_t>(sent->bytes));
      ++result_.mails_sent;
      result_.bytes_sent += static_cast<int64_t>(sent->bytes);
      result_.gateways_sent += static_cast<int64_t>(part.gateways.size());
      log::Info(fmt::format("Email sent to {} for file {}", JoinComma(recipients_), zip_name),
                {{"warehouse", warehouse_}, {"message_id", sent->message_id}, {"bytes", sent->bytes}});
    } else {
      env_.counters.mails_failed.fetch_add(1);
      ++result_.mails_failed;
      result_.gateways_failed += static_cast<int64_t>(part.gateways.size());
      log::Error("mail failed", {{"warehouse", warehouse_}, {"zip", zip_name}, {"error", sent.error().message}});
      CF_RETURN_IF_ERROR(store::Write(env_.store, [&](store::Tx& tx) -> Result<void> {
        for (const auto& [eui, version] : part.gateways) {
          CF_RETURN_IF_ERROR(MarkFailed(tx, eui, version, sent.error().message));
        }
        return Ok();
      }));
    }
    gateways_done_(static_cast<int64_t>(part.gateways.size()));
  }
  if (!any_sent && shared_to_send_) {
    CF_RETURN_IF_ERROR(store::Write(env_.store, [&](store::Tx& tx) {
      return MarkFailed(tx, std::string(store::kSharedFiles), shared_record_->version, "no mail went out");
    }));
  }
  result_.send_millis += Since(start);
  return Ok();
}

Result<void> WarehouseRun::MarkFailed(store::Tx& tx, const std::string& eui, int64_t version,
                                      const std::string& error) {
  int attempts = 0;
  CF_ASSIGN_OR_RETURN(bool marked,
                      store::MarkFailed(tx, warehouse_, eui, version, error, env_.clock.NowMillis(), &attempts));
  if (marked && attempts >= env_.options.max_attempts) exhausted_.emplace_back(eui, error);
  return Ok();
}

Result<void> WarehouseRun::FailAll(const std::string& error) {
  stopped_ = true;
  log::Error("distribution failed for the warehouse", {{"warehouse", warehouse_}, {"error", error}});
  std::string after;
  for (;;) {
    CF_ASSIGN_OR_RETURN(auto page, store::Read(env_.store, [&](store::Tx& tx) {
                          return store::GatewaysToSend(tx, warehouse_, after, env_.options.max_attempts, kPlanPage);
                        }));
    CF_RETURN_IF_ERROR(store::Write(env_.store, [&](store::Tx& tx) -> Result<void> {
      for (const auto& g : page) CF_RETURN_IF_ERROR(MarkFailed(tx, g.gateway_eui, g.version, error));
      return Ok();
    }));
    result_.gateways_failed += static_cast<int64_t>(page.size());
    if (page.size() < static_cast<size_t>(kPlanPage)) break;
    after = page.back().gateway_eui;
  }
  if (shared_to_send_) {
    CF_RETURN_IF_ERROR(store::Write(env_.store, [&](store::Tx& tx) {
      return MarkFailed(tx, std::string(store::kSharedFiles), shared_record_->version, error);
    }));
  }
  Notify();
  return Ok();
}

Result<mail::Sent> WarehouseRun::SendWithRetries(const Env& env, const mail::Message& message) {
  // Only transient failures are worth another try within this run.
  return Retried(
      env, "mail not accepted, retrying", [](const Error& e) { return e.code == ErrorCode::kUnavailable; },
      [&] { return env.mailer.Send(message); });
}

// Tells the operators, once, about records that ran out of attempts in this run.
void WarehouseRun::Notify() {
  const auto& o = env_.options;
  if (exhausted_.empty() || o.operators.empty()) return;
  mail::Message m;
  m.from = o.sender;
  m.to = o.operators;
  m.subject = fmt::format("certfleet: {} distribution records failed for good in {}", exhausted_.size(), warehouse_);
  m.text = fmt::format("These records of {} failed {} times and are no longer retried:\n", warehouse_, o.max_attempts);
  for (const auto& [eui, error] : exhausted_) m.text += fmt::format("{}: {}\n", eui, error);
  m.text += fmt::format(
      "Fix the cause, then send them again: POST /v1/distribution/warehouses/{}/resend with "
      "{{\"failed_only\": true}} sets them back to PENDING_EMAIL with fresh attempts, for the next run "
      "(or POST /v1/distribution/run at once).\n",
      warehouse_);
  exhausted_.clear();
  auto sent = SendWithRetries(env_, m);
  if (!sent.ok()) log::Error("cannot notify the operators", {{"error", sent.error().message}});
}

}  // namespace certfleet::distribution
