#include "bulk/import_service.h"

#include <fmt/format.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <boost/json.hpp>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "core/crypto.h"
#include "core/files.h"
#include "core/log.h"
#include "core/text.h"
#include "core/thread_name.h"
#include "pki/certificate.h"
#include "registry/registry.h"
#include "store/audit_repo.h"
#include "store/jobs_repo.h"
#include "store/registry_repo.h"

namespace certfleet::bulk {
namespace {

// Whether fetching an inbound object failed for the object itself (too large), which no later
// scan changes, rather than for the store (unreachable, credentials expired or refused, the
// object gone while listed), which the next scan may find fixed.
bool FailedForTheObject(const Error& fetch_error) { return fetch_error.code == ErrorCode::kResourceExhausted; }

namespace fs = std::filesystem;
namespace json = boost::json;

// An import job is retried after a crash or a store outage; each run resumes.
constexpr int kJobAttempts = 10;
// A batch is written again when a certificate of it was written meanwhile by another.
constexpr int kBatchAttempts = 3;

// Moves a manifest into manifest_dir, readable by certfleet alone (it may name every device
// of a supplier's delivery). Errors name no server path: readers of the import see them.
Result<void> MoveFile(const std::string& from, const std::string& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) {
    fs::copy_file(from, to, ec);  // another file system
    if (!ec) fs::remove(from, ec);
  }
  if (!ec) fs::permissions(to, fs::perms::owner_read | fs::perms::owner_write, ec);
  if (ec) {
    log::Error("cannot keep a manifest", {{"path", to}, {"error", ec.message()}});
    return MakeError(ErrorCode::kUnavailable, "cannot keep the manifest: " + ec.message());
  }
  return Ok();
}

// A slice of the manifest written in one transaction.
struct Batch {
  store::ImportBatch range;
  std::vector<ManifestEntry> entries;
  std::vector<std::string> fingerprints;  // SHA-256 of the entries without a problem, in order
  double read = 0;                        // the share of the manifest read once it was taken
};

// What writing a batch did.
struct BatchOutcome {
  store::ImportCounts counts;
  bool cancelled = false;  // the import was cancelled: nothing written
};

// Batches on their way from the reader to the writers. Push waits while `capacity` batches
// wait, so that memory stays flat whatever the manifest size. Thread-safe.
class BatchQueue {
 public:
  explicit BatchQueue(size_t capacity) : capacity_(capacity) {}
  // False once stopped: the batch is dropped.
  bool Push(Batch b) {
    std::unique_lock lock(mu_);
    changed_.wait(lock, [&] { return stopped_ || queue_.size() < capacity_; });
    if (stopped_) return false;
    queue_.push_back(std::move(b));
    changed_.notify_all();
    return true;
  }
  // The next batch; nullopt once stopped, or finished and empty.
  std::optional<Batch> Pop() {
    std::unique_lock lock(mu_);
    changed_.wait(lock, [&] { return stopped_ || finished_ || !queue_.empty(); });
    if (stopped_ || queue_.empty()) return std::nullopt;
    Batch b = std::move(queue_.front());
    queue_.pop_front();
    changed_.notify_all();
    return b;
  }
  // No more batches will come.
  void Finish() {
    std::lock_guard lock(mu_);
    finished_ = true;
    changed_.notify_all();
  }
  // Drops what waits and refuses what comes.
  void Stop() {
    std::lock_guard lock(mu_);
    stopped_ = true;
    queue_.clear();
    changed_.notify_all();
  }

 private:
  const size_t capacity_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<Batch> queue_;
  bool finished_ = false;
  bool stopped_ = false;
};

// Writes the batches of one import, each in a transaction with its counts. Thread-safe.
struct BatchWriter {
  store::Store& store;
  const Clock& clock;
  const int64_t id;
  const std::string supplier;
  const registry::ProductProfile profile;

  Result<BatchOutcome> Write(const Batch& batch);
};

Result<BatchOutcome> BatchWriter::Write(const Batch& batch) {
  BatchOutcome out;
  auto write = [&](store::Tx& tx) -> Result<void> {
    out = BatchOutcome{};
    const int64_t now = clock.NowMillis();
    CF_ASSIGN_OR_RETURN(auto current, store::FindImport(tx, id));
    out.cancelled = current && current->state == "cancelled";
    if (out.cancelled) return Ok();
    // Fingerprint -> thing of what was imported before, then of this batch too (repeats).
    CF_ASSIGN_OR_RETURN(auto owners, store::ImportedCertificateThings(tx, batch.fingerprints));
    // What the batch writes, each table in one statement (see store::InsertRows).
    std::vector<store::ImportRow> rows;
    std::vector<store::ImportedCertificate> certificates;
    std::vector<store::RegistryObject> things;
    std::set<std::string_view> thing_names;  // each thing once: PutThings may update it
    std::vector<store::RegistryLink> attachments;
    std::vector<store::RegistryLink> memberships;
    std::vector<store::RegistryLink> grants;
    size_t next_fingerprint = 0;
    for (const auto& e : batch.entries) {
      ++out.counts.seen;
      auto reject = [&](std::string status, std::string fingerprint, std::string reason) {
        ++(status == "conflict" ? out.counts.conflicts : out.counts.rejected);
        rows.push_back({static_cast<int64_t>(e.index), std::move(status), e.thing_name, std::move(fingerprint),
                        std::move(reason)});
      };
      if (!e.problem.empty()) {
        reject("rejected", "", e.problem);
        continue;
      }
      const std::string& fp = batch.fingerprints[next_fingerprint++];
      if (auto owner = owners.find(fp); owner != owners.end()) {
        if (owner->second == e.thing_name) {
          ++out.counts.already_present;
        } else {
          reject("conflict", fp, fmt::format("the certificate was imported for thing {}; not moved", owner->second));
        }
        continue;
      }
      owners.emplace(fp, e.thing_name);
      // Zero-padded, so that refs sort in the order they are written.
      const std::string ref = store::ImportedRef(id, e.index);
      certificates.push_back({fp, ref, supplier, e.thing_name, e.certificate, id, now});
      if (thing_names.insert(e.thing_name).second) {
        things.push_back(registry::Registry::ThingRow(e.thing_name, profile.thing_type, now));
      }
      attachments.push_back({std::string(store::kThingCertificate), e.thing_name, ref,
                             std::string(store::kAttachmentActive), std::nullopt, now});
      for (const auto& g : profile.thing_groups) {
        memberships.push_back({std::string(store::kGroupThing), g, e.thing_name, "", std::nullopt, now});
      }
      for (const auto& p : profile.policies) {
        grants.push_back({std::string(store::kPolicyCertificate), p, ref, "", std::nullopt, now});
      }
      ++out.counts.imported;
    }
    CF_RETURN_IF_ERROR(store::InsertImportedCertificates(tx, certificates));
    CF_RETURN_IF_ERROR(store::PutThings(tx, things));
    CF_RETURN_IF_ERROR(store::PutLinks(tx, attachments));
    CF_RETURN_IF_ERROR(store::AddLinksIfMissing(tx, memberships));
    CF_RETURN_IF_ERROR(store::AddLinksIfMissing(tx, grants));
    CF_RETURN_IF_ERROR(store::InsertImportRows(tx, id, rows));
    // Audited per batch: what reads the registry (the broker snapshot) learns of each one.
    if (out.counts.imported > 0) {
      CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, fmt::format("import:{}", id), "import.batch",
                                            fmt::format("import:{}", id),
                                            json::serialize(json::object{{"first_entry", batch.range.first},
                                                                         {"entries", batch.range.entries},
                                                                         {"imported", out.counts.imported}})));
    }
    constexpr double kPermille = 1000;
    return store::RecordImportBatch(tx, id, batch.range, out.counts, static_cast<int64_t>(batch.read * kPermille), now);
  };
  for (int attempt = 1;; ++attempt) {
    Result<void> r = store.Transact(write);
    // A certificate of the batch was written meanwhile by another (the same certificate twice
    // in a manifest, in two batches written at once): written again, it counts as imported before.
    if (r.ok() || r.error().code != ErrorCode::kAlreadyExists || attempt == kBatchAttempts) {
      if (!r.ok()) return r.error();
      return out;
    }
  }
}

// Things imported take their names from the manifest: they must follow the registry's name
// rule, like things made through the API, or they could not be read or deleted by name. A
// rejected entry keeps its name escaped, to be shown in the import's report.
void CheckThingName(ManifestEntry& e) {
  Result<void> valid = registry::CheckName("a thing name", e.thing_name);
  if (valid.ok()) return;
  if (e.problem.empty()) {
    e.problem = fmt::format("thing name '{}' refused: {}", Escaped(e.thing_name), valid.error().message);
  }
  e.thing_name = Escaped(e.thing_name);
}

}  // namespace

Result<store::ImportRecord> ImportService::Start(std::string_view supplier, std::string_view profile,
                                                 std::string_view bundle_type, const std::string& path,
                                                 std::string_view actor, bool queue_job,
                                                 std::optional<std::string> source) {
  const auto& suppliers = Suppliers();
  if (std::find(suppliers.begin(), suppliers.end(), supplier) == suppliers.end()) {
    return MakeError(ErrorCode::kInvalidArgument,
                     fmt::format("unknown supplier '{}' (microchip, infineon, espressif, generated, pem)", supplier));
  }
  if ((supplier == "infineon") != !bundle_type.empty()) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "bundle_type (E0E0, E0E1 or E0E2) is for infineon imports, and needed there");
  }
  if (supplier == "infineon" && bundle_type != "E0E0" && bundle_type != "E0E1" && bundle_type != "E0E2") {
    return MakeError(ErrorCode::kInvalidArgument, "bundle_type must be E0E0, E0E1 or E0E2");
  }
  if (supplier == "microchip") {
    CF_ASSIGN_OR_RETURN(auto verifiers, VerifiersPem());
    if (verifiers.empty()) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       "no Microchip verification certificates: add one (POST /v1/imports/verifiers, or a .crt next "
                       "to the manifest in the inbound store) or set bulk.verifier_dir");
    }
  }
  CF_RETURN_IF_ERROR(store::Read(store_, [&](store::Tx& tx) { return registry::Registry::ProfileFor(tx, profile); }));
  CF_ASSIGN_OR_RETURN(const std::string kept, Keep(path));
  const int64_t now = clock_.NowMillis();
  store::ImportRecord r;
  r.supplier = std::string(supplier);
  r.profile = std::string(profile);
  r.bundle_type = std::string(bundle_type);
  r.manifest = kept;
  r.state = "queued";
  r.created_by = std::string(actor);
  r.created_at = r.updated_at = now;
  r.source = std::move(source);
  auto started = store::Write(store_, [&](store::Tx& tx) -> Result<int64_t> {
    CF_ASSIGN_OR_RETURN(int64_t id, store::InsertImport(tx, r));
    if (queue_job) {
      store::NewJob job;
      job.kind = std::string(kJob);
      job.payload = json::serialize(json::object{{"import_id", id}});
      job.max_attempts = kJobAttempts;
      CF_RETURN_IF_ERROR(store::EnqueueJob(tx, job, now));
    }
    CF_RETURN_IF_ERROR(store::AppendAudit(
        tx, now, actor, "import.start", fmt::format("import:{}", id),
        json::serialize(json::object{{"supplier", supplier}, {"profile", profile}, {"bundle_type", bundle_type}})));
    return id;
  });
  if (!started.ok()) {
    RemoveManifest(r);
    return started.error();
  }
  r.id = *started;
  return r;
}

Result<std::string> ImportService::Keep(const std::string& path) {
  const std::string name = RandomToken(12) + ".manifest";
  if (waiting_ == nullptr) {
    std::error_code ec;
    fs::create_directories(options_.manifest_dir, ec);
    const std::string kept = (fs::path(options_.manifest_dir) / name).string();
    CF_RETURN_IF_ERROR(MoveFile(path, kept));
    return kept;
  }
  const std::string key = std::string(kWaitingPrefix) + name;
  if (Result<void> put = waiting_->PutFile(key, path); !put.ok()) {
    log::Error("cannot keep a manifest in the object store",
               {{"store", waiting_->Describe()}, {"error", put.error().message}});
    return MakeError(put.error().code, "cannot keep the manifest in the object store: " + put.error().message);
  }
  std::error_code ec;
  fs::remove(path, ec);
  return std::string(kBlobScheme) + key;
}

Result<std::string> ImportService::Fetch(const store::ImportRecord& imp) {
  if (!imp.manifest.starts_with(kBlobScheme)) return imp.manifest;
  if (waiting_ == nullptr) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     "the manifest waits in the object store, and this node keeps manifests in a folder");
  }
  std::error_code ec;
  fs::create_directories(options_.manifest_dir, ec);
  const std::string copy = (fs::path(options_.manifest_dir) / fmt::format("import-{}.run", imp.id)).string();
  CF_RETURN_IF_ERROR(waiting_->GetToFile(imp.manifest.substr(kBlobScheme.size()), copy, kMaxInboundBytes));
  fs::permissions(copy, fs::perms::owner_read | fs::perms::owner_write, ec);
  return copy;
}

void ImportService::RemoveManifest(const store::ImportRecord& imp) {
  if (imp.manifest.empty()) return;
  if (imp.manifest.starts_with(kBlobScheme)) {
    if (waiting_ == nullptr) return;
    Result<void> deleted = waiting_->Delete(imp.manifest.substr(kBlobScheme.size()));
    if (!deleted.ok()) {
      log::Warn("cannot remove an import's manifest", {{"import", imp.id}, {"error", deleted.error().message}});
    }
    return;
  }
  std::error_code ec;
  if (!fs::remove(imp.manifest, ec) && ec) {
    log::Warn("cannot remove an import's manifest", {{"import", imp.id}, {"error", ec.message()}});
  }
}

Result<store::ImportRecord> ImportService::Run(int64_t id, const Progress& progress) {
  CF_ASSIGN_OR_RETURN(store::ImportRecord imp, Get(id));
  if (imp.state == "done" || imp.state == "cancelled" || imp.state == "failed") {
    RemoveManifest(imp);  // cancelled while queued, or a run that ended before removing it
    return imp;
  }
  auto profile = store::Read(store_, [&](store::Tx& tx) { return registry::Registry::ProfileFor(tx, imp.profile); });
  ReaderOptions reader_options{imp.bundle_type, {}, options_.limits};
  if (imp.supplier == "microchip") {
    auto verifiers = VerifiersPem();
    if (!verifiers.ok()) return verifiers.error();  // the store: the job is retried
    reader_options.verifiers_pem = std::move(*verifiers);
  }
  if (!profile.ok()) return Fail(id, profile.error());
  Result<std::string> file = Fetch(imp);
  if (!file.ok()) {
    // A manifest gone for good fails the import; otherwise (the object store out of reach, a
    // node configured without it) the job is retried, on this node or another.
    if (file.error().code == ErrorCode::kNotFound) return Fail(id, file.error());
    return file.error();
  }
  // A copy fetched from the object store is scratch, removed when this run ends.
  struct Scratch {
    std::string path;
    ~Scratch() {
      std::error_code ec;
      if (!path.empty()) fs::remove(path, ec);
    }
  } scratch{*file != imp.manifest ? *file : std::string()};
  Result<std::unique_ptr<ManifestReader>> reader = OpenManifest(imp.supplier, *file, reader_options);
  if (!reader.ok()) return Fail(id, reader.error());
  CF_ASSIGN_OR_RETURN(auto committed, store::Read(store_, [&](store::Tx& tx) { return store::ImportBatches(tx, id); }));

  // The writers: each takes the next batch and writes it in a transaction of its own.
  BatchWriter writer{store_, clock_, id, imp.supplier, *profile};
  BatchQueue queue(options_.writers);
  std::mutex mu;  // guards imp, read, batches_done and the outcome below, and calls `progress`
  double read = 0;
  int batches_done = 0;
  std::optional<Error> write_error;
  bool cancelled = false;
  auto write = [&] {
    NameThisThread("cf-import");
    while (std::optional<Batch> batch = queue.Pop()) {
      Result<BatchOutcome> r = writer.Write(*batch);
      std::lock_guard lock(mu);
      if (!r.ok() || r->cancelled) {
        if (!r.ok() && !write_error) write_error = r.error();
        cancelled = cancelled || (r.ok() && r->cancelled);
        queue.Stop();
        return;
      }
      imp.counts += r->counts;
      imp.position += batch->range.entries;
      read = std::max(read, batch->read);
      if (progress) progress(imp, read);
      if (++batches_done == fail_after_batches) {
        write_error = MakeError(ErrorCode::kUnavailable, "stopped for a test");
        queue.Stop();
      }
    }
  };
  std::vector<std::thread> writers;
  for (size_t i = 0; i < options_.writers; ++i) writers.emplace_back(write);

  // The reader: the manifest in batches, without the entries of batches committed before.
  std::optional<Error> read_error;
  Batch batch;
  auto dispatch = [&](double fraction) {
    if (batch.entries.empty()) return true;
    batch.range.entries = static_cast<int64_t>(batch.entries.size());
    batch.read = fraction;
    return queue.Push(std::exchange(batch, Batch{}));
  };
  size_t next_committed = 0;
  for (int64_t offset = 0;; ++offset) {
    auto next = (*reader)->Next();
    if (!next.ok()) {
      read_error = next.error();
      break;
    }
    if (!*next) {
      dispatch(1.0);
      break;
    }
    while (next_committed < committed.size() &&
           committed[next_committed].first + committed[next_committed].entries <= offset) {
      ++next_committed;
    }
    if (next_committed < committed.size() && committed[next_committed].first <= offset) {
      if (!dispatch((*reader)->Fraction())) break;
      continue;  // written before the interruption
    }
    if (batch.entries.empty()) batch.range.first = offset;
    CheckThingName(**next);
    if ((*next)->problem.empty()) batch.fingerprints.push_back(Sha256Hex((*next)->certificate));
    batch.entries.push_back(std::move(**next));
    if (batch.entries.size() == options_.batch_size && !dispatch((*reader)->Fraction())) break;
  }
  queue.Finish();
  for (auto& w : writers) w.join();

  if (read_error) return Fail(id, *read_error);
  if (write_error) return *write_error;                        // the job runs again and resumes
  CF_ASSIGN_OR_RETURN(imp, Finish(id, "done", std::nullopt));  // a cancelled import stays cancelled
  if (imp.state == "cancelled") return imp;
  log::Info("import done", {{"import", id},
                            {"seen", imp.counts.seen},
                            {"imported", imp.counts.imported},
                            {"already_present", imp.counts.already_present},
                            {"rejected", imp.counts.rejected},
                            {"conflicts", imp.counts.conflicts}});
  return imp;
}

Result<void> ImportService::RunAttempt(int64_t id, int attempt, int max_attempts, const Progress& progress) {
  Result<store::ImportRecord> ran = Run(id, progress);
  if (ran.ok()) return Ok();
  if (ran.error().code != ErrorCode::kInvalidArgument && attempt < max_attempts) return ran.error();
  // The job ends here: an import it left unfinished ends too.
  auto imp = Get(id);
  if (imp.ok() && (imp->state == "queued" || imp->state == "running")) {
    (void)Fail(
        id, MakeError(ran.error().code, fmt::format("given up after {} attempts: {}", attempt, ran.error().message)));
  }
  return ran.error();
}

Result<int> ImportService::FailOrphaned() {
  CF_ASSIGN_OR_RETURN(auto orphaned,
                      store::Read(store_, [](store::Tx& tx) { return store::ImportsOfDeadJobs(tx, kJob); }));
  for (const auto& [id, last_error] : orphaned) {
    (void)Fail(id,
               MakeError(ErrorCode::kUnavailable, fmt::format("its job ended without finishing it: {}",
                                                              last_error.empty() ? "no error recorded" : last_error)));
  }
  return static_cast<int>(orphaned.size());
}

Result<store::ImportRecord> ImportService::Fail(int64_t id, const Error& e) {
  CF_RETURN_IF_ERROR(Finish(id, "failed", e.message));
  log::Error("import failed", {{"import", id}, {"error", e.message}});
  // Reading it again cannot help: the job ends here.
  return MakeError(ErrorCode::kInvalidArgument, e.message);
}

Result<store::ImportRecord> ImportService::Finish(int64_t id, std::string_view state,
                                                  std::optional<std::string> error) {
  const int64_t now = clock_.NowMillis();
  auto finished = store::Write(store_, [&](store::Tx& tx) -> Result<store::ImportRecord> {
    CF_ASSIGN_OR_RETURN(auto r, store::FindImport(tx, id));
    if (!r) return MakeError(ErrorCode::kNotFound, fmt::format("no import {}", id));
    if (r->state == "cancelled") return std::move(*r);
    r->state = std::string(state);
    r->error = error;
    r->started_at = r->started_at.value_or(now);
    r->updated_at = now;
    r->finished_at = now;
    constexpr int64_t kWhole = 1000;
    if (state == "done") r->read_permille = kWhole;
    CF_RETURN_IF_ERROR(store::UpdateImport(tx, *r));
    return std::move(*r);
  });
  if (finished.ok()) RemoveManifest(*finished);
  return finished;
}

Result<std::vector<std::string>> ImportService::VerifiersPem() {
  CF_ASSIGN_OR_RETURN(auto added, store::Read(store_, store::ActiveImportVerifiers));
  std::vector<std::string> out = options_.verifiers_pem;
  for (auto& v : added) out.push_back(std::move(v.certificate_pem));
  return out;
}

Result<store::ImportVerifier> ImportService::AddVerifier(std::string_view pem, std::optional<std::string> source,
                                                         std::string_view actor) {
  auto invalid = [](const std::string& why) {
    return MakeError(ErrorCode::kInvalidArgument, "a Microchip manifest signer must be one PEM certificate: " + why);
  };
  if (pem.size() > kMaxVerifierBytes) return invalid(fmt::format("at most {} bytes", kMaxVerifierBytes));
  auto certs = pki::CertificatesFromPem(pem);
  if (!certs.ok()) return invalid(certs.error().message);
  if (certs->size() != 1) return invalid(fmt::format("this holds {}", certs->size()));
  if (X509_get0_subject_key_id(certs->front().get()) == nullptr) {
    return invalid("it has no SubjectKeyIdentifier, by which manifests name their signer (kid)");
  }
  CF_ASSIGN_OR_RETURN(pki::CertificateFacts facts, pki::Inspect(certs->front().get()));
  store::ImportVerifier v;
  v.fingerprint = facts.sha256_fingerprint;
  v.subject = facts.common_name;
  v.not_after = facts.not_after_millis;
  v.certificate_pem = facts.pem;
  v.source = std::move(source);
  v.created_by = std::string(actor);
  v.created_at = clock_.NowMillis();
  CF_RETURN_IF_ERROR(store::Write(store_, [&](store::Tx& tx) -> Result<void> {
    Result<int64_t> id = store::InsertImportVerifier(tx, v);
    if (!id.ok() && id.error().code == ErrorCode::kAlreadyExists) {
      return MakeError(ErrorCode::kAlreadyExists,
                       fmt::format("the signer {} (SHA-256 {}) is added already", v.subject, v.fingerprint));
    }
    if (!id.ok()) return id.error();
    v.id = *id;
    CF_RETURN_IF_ERROR(store::AppendAudit(
        tx, v.created_at, actor, "import.verifier.add", fmt::format("import_verifier:{}", v.id),
        json::serialize(json::object{
            {"subject", v.subject}, {"fingerprint", v.fingerprint}, {"source", v.source ? *v.source : ""}})));
    return Ok();
  }));
  return v;
}

Result<std::vector<store::ImportVerifier>> ImportService::ListVerifiers() {
  return store::Read(store_, store::ActiveImportVerifiers);
}

Result<void> ImportService::RemoveVerifier(int64_t id, std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  return store::Write(store_, [&](store::Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(bool removed, store::RemoveImportVerifier(tx, id, now));
    if (!removed) return MakeError(ErrorCode::kNotFound, fmt::format("no Microchip signer {}", id));
    CF_RETURN_IF_ERROR(
        store::AppendAudit(tx, now, actor, "import.verifier.remove", fmt::format("import_verifier:{}", id), "{}"));
    return Ok();
  });
}

Result<void> ImportService::RecordFailedInbound(const blob::ObjectInfo& object, const InboundKey& where,
                                                const Error& error) {
  const int64_t now = clock_.NowMillis();
  store::ImportRecord failed;
  failed.supplier = where.supplier;
  failed.profile = where.profile;
  failed.bundle_type = where.bundle_type;
  failed.state = "failed";
  failed.created_by = "inbound:" + object.key;
  failed.created_at = failed.updated_at = now;
  failed.source = object.key + " " + object.etag;
  failed.error = error.message;
  failed.finished_at = now;
  // Recorded once as failed, so that the next scans do not try it again.
  Result<void> kept = store_.Transact([&](store::Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(failed.id, store::InsertImport(tx, failed));
    return store::UpdateImport(tx, failed);
  });
  if (!kept.ok() && kept.error().code != ErrorCode::kAlreadyExists) return kept.error();
  return Ok();
}

Result<void> ImportService::AddInboundVerifier(blob::BlobStore& inbound, const blob::ObjectInfo& object,
                                               const std::string& source) {
  CF_ASSIGN_OR_RETURN(bool seen, store::Read(store_, [&](store::Tx& tx) -> Result<bool> {
                        CF_ASSIGN_OR_RETURN(bool as_import, store::ImportSourceSeen(tx, source));
                        if (as_import) return true;
                        return store::VerifierSourceSeen(tx, source);
                      }));
  if (seen) return Ok();
  const std::string actor = "inbound:" + object.key;
  std::error_code ec;
  fs::create_directories(options_.manifest_dir, ec);
  const std::string path = (fs::path(options_.manifest_dir) / (RandomToken(12) + ".signer")).string();
  Result<void> fetched = inbound.GetToFile(object.key, path, kMaxVerifierBytes);
  if (!fetched.ok() && !FailedForTheObject(fetched.error())) {
    fs::remove(path, ec);
    return MakeError(ErrorCode::kUnavailable, fetched.error().message);  // the next scan tries again
  }
  Result<std::string> pem = fetched.ok() ? ReadFile(path, kMaxVerifierBytes) : Result<std::string>(fetched.error());
  fs::remove(path, ec);
  if (!pem.ok() && pem.error().code == ErrorCode::kUnavailable) return pem.error();  // the next scan tries again
  Result<store::ImportVerifier> added =
      pem.ok() ? AddVerifier(*pem, source, actor) : Result<store::ImportVerifier>(pem.error());
  if (added.ok()) {
    log::Info("Microchip signer added from the inbound store", {{"key", object.key}, {"subject", added->subject}});
    return Ok();
  }
  if (added.error().code == ErrorCode::kAlreadyExists) {
    // Active already (added through the API): remember only that this object was seen.
    store::ImportVerifier seen_only;
    seen_only.fingerprint = "-";
    seen_only.source = source;
    seen_only.created_by = actor;
    seen_only.created_at = seen_only.removed_at.emplace(clock_.NowMillis());
    return store::Write(store_, [&](store::Tx& tx) -> Result<void> {
      CF_RETURN_IF_ERROR(store::InsertImportVerifier(tx, seen_only));
      return Ok();
    });
  }
  return added.error();
}

std::optional<ImportService::InboundKey> ImportService::ParseInboundKey(std::string_view key) {
  // imports/<supplier>[.<bundle type>]/<profile>/<file>
  if (!key.starts_with(kInboundPrefix)) return std::nullopt;
  const std::string_view rest = key.substr(kInboundPrefix.size());
  const size_t a = rest.find('/');
  const size_t b = a == std::string_view::npos ? a : rest.find('/', a + 1);
  if (b == std::string_view::npos || rest.find('/', b + 1) != std::string_view::npos || b + 1 == rest.size()) {
    return std::nullopt;
  }
  InboundKey out;
  out.supplier = rest.substr(0, a);
  if (const size_t dot = out.supplier.find('.'); dot != std::string::npos) {
    out.bundle_type = out.supplier.substr(dot + 1);
    out.supplier.resize(dot);
  }
  out.profile = rest.substr(a + 1, b - a - 1);
  out.signer = out.supplier == "microchip" && (key.ends_with(".crt") || key.ends_with(".pem"));
  return out;
}

Result<int> ImportService::ScanInbound(blob::BlobStore& inbound) {
  // One listing; signers (imports/microchip/<profile>/*.crt|.pem) are taken first, so that a
  // manifest dropped with its signer verifies. Objects outside the layout are not imports.
  std::vector<std::pair<blob::ObjectInfo, InboundKey>> objects;
  CF_RETURN_IF_ERROR(inbound.List(kInboundPrefix, [&](std::vector<blob::ObjectInfo>& page) -> Result<void> {
    for (auto& o : page) {
      if (auto where = ParseInboundKey(o.key)) objects.emplace_back(std::move(o), std::move(*where));
    }
    return Ok();
  }));
  std::stable_partition(objects.begin(), objects.end(), [](const auto& o) { return o.second.signer; });
  int started = 0;
  for (const auto& [o, where] : objects) {
    const std::string source = o.key + " " + o.etag;
    if (where.signer) {
      Result<void> added = AddInboundVerifier(inbound, o, source);
      if (added.ok()) continue;
      if (added.error().code == ErrorCode::kUnavailable) return added.error();
      log::Error("cannot add the Microchip signer from the inbound store",
                 {{"key", o.key}, {"error", added.error().message}});
      CF_RETURN_IF_ERROR(RecordFailedInbound(o, where, added.error()));
      continue;
    }
    CF_ASSIGN_OR_RETURN(bool seen,
                        store::Read(store_, [&](store::Tx& tx) { return store::ImportSourceSeen(tx, source); }));
    if (seen) continue;
    Result<store::ImportRecord> imp = MakeError(ErrorCode::kInternal, "not started");
    std::error_code ec;
    fs::create_directories(options_.manifest_dir, ec);
    const std::string path = (fs::path(options_.manifest_dir) / (RandomToken(12) + ".inbound")).string();
    Result<void> fetched = inbound.GetToFile(o.key, path, kMaxInboundBytes);
    if (!fetched.ok() && !FailedForTheObject(fetched.error())) {
      fs::remove(path, ec);
      log::Warn("cannot fetch from the inbound store; the next scan tries again",
                {{"key", o.key}, {"error", fetched.error().message}});
      continue;
    }
    if (fetched.ok()) {
      imp = Start(where.supplier, where.profile, where.bundle_type, path, "inbound:" + o.key, true, source);
      fs::remove(path, ec);  // left only if Start refused before keeping it
    } else {
      imp = fetched.error();
    }
    if (imp.ok()) {
      ++started;
      log::Info("import started from the inbound store", {{"import", imp->id}, {"key", o.key}});
      continue;
    }
    if (imp.error().code == ErrorCode::kAlreadyExists || imp.error().code == ErrorCode::kUnavailable) continue;
    log::Error("cannot import from the inbound store", {{"key", o.key}, {"error", imp.error().message}});
    CF_RETURN_IF_ERROR(RecordFailedInbound(o, where, imp.error()));
  }
  return started;
}

Result<store::ImportRecord> ImportService::Get(int64_t id) {
  CF_ASSIGN_OR_RETURN(auto r, store::Read(store_, [&](store::Tx& tx) { return store::FindImport(tx, id); }));
  if (!r) return MakeError(ErrorCode::kNotFound, fmt::format("no import {}", id));
  return std::move(*r);
}

Result<std::vector<store::ImportRecord>> ImportService::List(std::optional<int64_t> before, int limit) {
  return store::Read(store_, [&](store::Tx& tx) { return store::ListImports(tx, before, limit); });
}

Result<std::vector<store::ImportRow>> ImportService::Rows(int64_t id, std::optional<std::string> status, int64_t after,
                                                          int limit) {
  CF_RETURN_IF_ERROR(Get(id));
  return store::Read(store_, [&](store::Tx& tx) { return store::ListImportRows(tx, id, status, after, limit); });
}

Result<store::ImportRecord> ImportService::Cancel(int64_t id, std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  bool was_queued = false;
  auto cancelled = store::Write(store_, [&](store::Tx& tx) -> Result<store::ImportRecord> {
    CF_ASSIGN_OR_RETURN(auto r, store::FindImport(tx, id));
    if (!r) return MakeError(ErrorCode::kNotFound, fmt::format("no import {}", id));
    was_queued = r->state == "queued";
    if (r->state != "queued" && r->state != "running") {
      return MakeError(ErrorCode::kFailedPrecondition, fmt::format("import {} is {} already", id, r->state));
    }
    r->state = "cancelled";
    r->updated_at = now;
    r->finished_at = now;
    CF_RETURN_IF_ERROR(store::UpdateImport(tx, *r));
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "import.cancel", fmt::format("import:{}", id), "{}"));
    return std::move(*r);
  });
  // A running import's reader still has the file open: its run removes it when it stops.
  if (cancelled.ok() && was_queued) RemoveManifest(*cancelled);
  return cancelled;
}

}  // namespace certfleet::bulk
