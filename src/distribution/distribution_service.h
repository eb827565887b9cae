#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "blob/blob_store.h"
#include "core/clock.h"
#include "core/result.h"
#include "mail/mailer.h"
#include "store/distribution_repo.h"
#include "store/store.h"

namespace certfleet::distribution {

struct ScanResult {
  int64_t objects = 0;  // listed under the prefix
  int64_t marked = 0;   // records set to PENDING_EMAIL
  int64_t millis = 0;
};

struct SendResult {
  int64_t warehouses = 0;
  int64_t gateways_sent = 0;
  int64_t gateways_failed = 0;
  int64_t mails_sent = 0;
  int64_t mails_failed = 0;
  int64_t bytes_sent = 0;  // rendered messages
  // Time spent per phase, summed over warehouses.
  int64_t download_millis = 0;
  int64_t zip_millis = 0;
  int64_t send_millis = 0;

  SendResult& operator+=(const SendResult& other);
};

// W5: watches the inbound store for gateway certificates and shared files per warehouse,
// tracks each gateway's delivery, and mails each warehouse only its own files in ZIPs that
// fit the mail size limit. Scan and SendPending may run on any node; running two
// SendPending at once is safe but sends twice, so the job queue runs one at a time.
// Thread-safe.
class DistributionService {
 public:
  struct Options {
    std::string prefix = "Inbound/";
    std::string work_dir;  // ZIPs are built here, in a folder per run
    std::string sender = "certfleet@localhost";
    std::string default_recipient;       // for warehouses without their own recipients
    std::vector<std::string> operators;  // told when a record fails for good; none: nobody
    int download_workers = 10;           // concurrent downloads: S3 answers each in tens of ms
    // Largest ZIP attached to one mail: 8 MB, the seed's split size. Base64 makes a ZIP 4/3
    // larger in the mail, so with SES the mail limit below is what splits first; this one
    // bounds the files a run builds on disk.
    uint64_t zip_max_bytes = 8'000'000;
    // Largest whole mail (headers, text and base64 attachment): SES's 10 MB.
    uint64_t mail_max_bytes = 10'000'000;
    int max_attempts = 5;  // runs a FAILED_EMAIL record is retried in: 75 minutes at the default schedule
    int send_tries = 3;    // tries per mail within one run, for a mail server briefly unavailable
    std::chrono::milliseconds send_backoff{1000};  // before the second try; doubles after
    // Seals the warehouses' ZIP passwords in the store (see SealSecret); empty: kept as
    // given (tests).
    std::string master_key;
  };

  // Mail and byte counts since start, for /metrics.
  struct Counters {
    std::atomic<int64_t> mails_sent{0};
    std::atomic<int64_t> mails_failed{0};
    std::atomic<int64_t> bytes_sent{0};
  };

  static constexpr std::string_view kScanJob = "distribution.scan";
  static constexpr std::string_view kSendJob = "distribution.send";
  static constexpr std::string_view kRunJob = "distribution.run";  // scan, then send
  // Attempts of a run asked for (RequestRun): with its backoff, five to ten minutes of waiting
  // for a run in progress.
  static constexpr int kRunJobAttempts = 12;

  DistributionService(store::Store& store, blob::BlobStore& inbound, mail::Mailer& mailer, const Clock& clock,
                      Options options);

  // Lists the inbound store and marks the records of new or changed objects PENDING_EMAIL.
  Result<ScanResult> Scan();
  // The same for objects named by an event (S3 event notifications); returns records marked.
  // Objects outside the layout are logged and ignored; so is an event of a version older than
  // the one recorded (store::RecordObjects).
  Result<int64_t> MarkChanged(const std::vector<blob::ObjectInfo>& objects) { return Record(objects, false); }
  // Mails every warehouse its pending files. `progress(done, total)` counts gateways.
  // kFailedPrecondition while another run (on any node) is in progress.
  Result<SendResult> SendPending(const std::function<void(int64_t, int64_t)>& progress = {});

  // What a PUT does to a warehouse's ZIP password: a body that names none keeps the stored
  // one (so that reading the settings and writing them back, which never shows the password,
  // does not turn encryption off); null removes it; a string replaces it.
  struct PasswordChange {
    enum class Kind { kKeep, kRemove, kSet } kind = Kind::kKeep;
    std::string password;  // with kSet
  };
  // Sets a warehouse's recipients and ZIP password (kept sealed with the master key);
  // kInvalidArgument for a bad name, address or password. Audited as `actor`.
  Result<store::WarehouseSettings> PutWarehouse(const std::string& name, std::vector<std::string> recipients,
                                                const PasswordChange& zip_password, std::string_view actor);
  Result<std::vector<store::WarehouseSettings>> Warehouses();
  Result<std::vector<store::DistributionRecord>> Records(const store::RecordFilter& filter);
  // Newest first, ids below `before` when given.
  Result<std::vector<store::Delivery>> Deliveries(const std::optional<std::string>& warehouse,
                                                  std::optional<int64_t> before, int limit);
  Result<std::vector<std::pair<std::string, int64_t>>> RecordCounts();
  // Sets the warehouse's records (of `gateway_euis`, or all; with `failed_only` only those
  // out of attempts or failing) back to PENDING_EMAIL with fresh attempts, for the next run
  // to mail; returns how many. kNotFound for a warehouse without records. Audited.
  Result<int64_t> Resend(const std::string& warehouse, const std::vector<std::string>& gateway_euis, bool failed_only,
                         std::string_view actor);
  // Queues a run (scan, then send) as a job and returns its id. Audited as `actor`.
  Result<int64_t> RequestRun(std::string_view actor);

  const Counters& counters() const { return counters_; }
  // What this node's runs did per warehouse since it started (for /metrics), the seed's
  // per-group processor figures.
  std::map<std::string, SendResult> WarehouseCounters() const;
  const Options& options() const { return options_; }

 private:
  // MarkChanged, and each page of Scan's listing (`listed`).
  Result<int64_t> Record(const std::vector<blob::ObjectInfo>& objects, bool listed);
  // Objects outside the layout, as "key\netag", so each is warned about once per change
  // rather than on every scan. Cleared when full.
  bool FirstWarning(const blob::ObjectInfo& object);
  static constexpr size_t kMaxRemembered = 100'000;
  std::mutex warned_mu_;
  std::unordered_set<std::string> warned_;

  store::Store& store_;
  blob::BlobStore& inbound_;
  mail::Mailer& mailer_;
  const Clock& clock_;
  const Options options_;
  Counters counters_;
  mutable std::mutex totals_mu_;
  std::map<std::string, SendResult> totals_;
};

}  // namespace certfleet::distribution
