#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "distribution/distribution_service.h"
#include "store/distribution_repo.h"

namespace certfleet::distribution {

// UTC time as YYYYMMDD_HHMMSS, as ZIP names carry it.
std::string Stamp(int64_t millis);
// Milliseconds since `start`.
int64_t Since(std::chrono::steady_clock::time_point start);
// Who the audit log names for the distribution's own changes.
inline constexpr std::string_view kDistributionActor = "distribution";

// One warehouse's share of a DistributionService::SendPending run: plans the parts, downloads,
// builds every ZIP, then sends them and records the outcome. Lives for one call of Run.
// Not thread-safe (its downloads run on threads of their own).
class WarehouseRun {
 public:
  // Everything of the service a run uses.
  struct Env {
    store::Store& store;
    blob::BlobStore& inbound;
    mail::Mailer& mailer;
    const Clock& clock;
    const DistributionService::Options& options;
    DistributionService::Counters& counters;
    // Whether the run still holds its lease, asked before each mail: a run that lost it (its
    // database connection broke) stops, as another node's run may have started.
    std::function<bool()> leading = nullptr;
  };

  WarehouseRun(Env env, std::string warehouse, std::string dir, SendResult& result,
               std::function<void(int64_t)> gateways_done);
  ~WarehouseRun();
  Result<void> Run();

  // Sends with retries while the server is unavailable.
  static Result<mail::Sent> SendWithRetries(const Env& env, const mail::Message& message);

 private:
  struct Part;
  struct File;

  Result<void> Load();
  Result<std::vector<Part>> Plan();
  Result<void> DownloadShared();
  Result<void> Build(Part& part, size_t index);
  Result<void> Send(std::vector<Part>& parts);
  // Every record of the warehouse this run would have sent becomes FAILED_EMAIL and nothing
  // goes out; the run stops.
  Result<void> FailAll(const std::string& error);
  Result<void> MarkFailed(store::Tx& tx, const std::string& eui, int64_t version, const std::string& error);
  // Whether a ZIP of `zip` bytes with `gateways` gateways fits both limits.
  bool Fits(int64_t gateways, uint64_t zip) const;
  void Notify();

  Env env_;
  const std::string warehouse_;
  const std::string dir_;
  SendResult& result_;
  std::function<void(int64_t)> gateways_done_;

  std::vector<std::string> recipients_;
  std::optional<std::string> password_;
  bool password_unreadable_ = false;
  std::vector<store::DistributionObject> shared_;  // as the scan saw them
  std::optional<store::DistributionRecord> shared_record_;
  bool shared_to_send_ = false;
  bool has_gateways_ = false;
  bool shared_only_ = false;
  size_t mail_overhead_ = 0;
  uint64_t shared_zip_ = 0;
  size_t shared_names_ = 0;
  std::vector<File> shared_files_;
  std::string shared_list_;
  std::vector<std::pair<std::string, std::string>> exhausted_;  // (EUI, error) out of attempts
  bool stopped_ = false;
};

}  // namespace certfleet::distribution
