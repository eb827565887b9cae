#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/enum_names.h"
#include "core/result.h"
#include "store/store.h"

namespace certfleet::store {

// The gateway_eui of a warehouse's shared files (servertrust, endpoints), as in the seed.
inline constexpr std::string_view kSharedFiles = "SHARED_FILES";
// A gateway's record: its bundle is to be mailed, was mailed, or failed to be (retried
// while attempts are left).
enum class DistributionStatus { kPendingEmail, kEmailed, kFailedEmail };
inline constexpr std::string_view kDistributionStatusNames[] = {"PENDING_EMAIL", "EMAILED", "FAILED_EMAIL"};
constexpr std::string_view DistributionStatusName(DistributionStatus status) {
  return EnumName(status, kDistributionStatusNames);
}

struct DistributionObject {
  std::string key;
  std::string warehouse;
  std::string gateway_eui;  // or kSharedFiles
  std::string etag;
  int64_t last_modified = 0;
  int64_t size = 0;
};

struct DistributionRecord {
  std::string warehouse;
  std::string gateway_eui;
  DistributionStatus status = DistributionStatus::kPendingEmail;
  int64_t last_modified = 0;
  std::optional<int64_t> last_emailed;
  int attempts = 0;
  std::optional<std::string> last_error;
  int64_t version = 0;
  int64_t updated_at = 0;
  // Filled by PendingGateways: the gateway's files as last seen.
  int64_t file_count = 0;
  int64_t file_bytes = 0;
};

// Records the objects of one listing page, or of an event, that are new or changed (ETag or
// LastModified differ) and marks their records PENDING_EMAIL; returns the records marked. A
// listing shows objects as they are (`listed`); an event may come late, out of order or be
// replayed: one of another version more than a second older than the one recorded is ignored.
Result<int64_t> RecordObjects(Tx& tx, const std::vector<DistributionObject>& objects, bool listed, int64_t now);
Result<void> DeleteObject(Tx& tx, std::string_view key);
Result<std::vector<DistributionObject>> ObjectsOf(Tx& tx, std::string_view warehouse, std::string_view gateway_eui);

// Warehouses with records to send: pending, or failed with attempts left.
Result<std::vector<std::string>> WarehousesToSend(Tx& tx, int max_attempts);
// Such records of one warehouse's gateways (not SHARED_FILES) in EUI order after `after`,
// with their file counts and sizes.
Result<std::vector<DistributionRecord>> GatewaysToSend(Tx& tx, std::string_view warehouse, std::string_view after,
                                                       int max_attempts, int limit);
Result<std::optional<DistributionRecord>> FindRecord(Tx& tx, std::string_view warehouse, std::string_view gateway_eui);
// True if the warehouse has any gateway record (a shared-files-only mail needs one).
Result<bool> WarehouseHasGateways(Tx& tx, std::string_view warehouse);

// Sets the warehouse's records (those of `gateway_euis`, or all; with `failed_only` only
// FAILED_EMAIL ones) back to PENDING_EMAIL with fresh attempts; returns how many.
Result<int64_t> ResendRecords(Tx& tx, std::string_view warehouse, const std::vector<std::string>& gateway_euis,
                              bool failed_only, int64_t now);

// EMAILED (or FAILED_EMAIL with `error`) for the record as it was at `version`; a record
// whose files changed since stays PENDING_EMAIL. Returns false in that case. A failure
// returns the attempts now spent through `attempts`.
Result<bool> MarkEmailed(Tx& tx, std::string_view warehouse, std::string_view gateway_eui, int64_t version,
                         int64_t now);
Result<bool> MarkFailed(Tx& tx, std::string_view warehouse, std::string_view gateway_eui, int64_t version,
                        std::string_view error, int64_t now, int* attempts);

struct RecordFilter {
  std::optional<std::string> warehouse;
  std::optional<DistributionStatus> status;
  std::optional<std::pair<std::string, std::string>> after;  // (warehouse, gateway_eui)
  int limit = 100;
};
Result<std::vector<DistributionRecord>> ListRecords(Tx& tx, const RecordFilter& filter);
// (status, count) for every status with records.
Result<std::vector<std::pair<std::string, int64_t>>> CountRecordsByStatus(Tx& tx);

struct WarehouseSettings {
  std::string name;
  std::vector<std::string> recipients;
  std::optional<std::string> zip_password;
  int64_t updated_at = 0;
  std::string updated_by;
};
Result<void> PutWarehouse(Tx& tx, const WarehouseSettings& settings);
Result<std::optional<WarehouseSettings>> FindWarehouse(Tx& tx, std::string_view name);
Result<std::vector<WarehouseSettings>> ListWarehouses(Tx& tx);

struct Delivery {
  int64_t id = 0;
  int64_t at = 0;
  std::string warehouse;
  std::string message_id;
  std::vector<std::string> recipients;
  std::string subject;
  std::string zip_name;
  int64_t zip_bytes = 0;
  int64_t message_bytes = 0;
  int part = 1;
  int parts = 1;
  std::vector<std::string> gateways;
};
Result<int64_t> InsertDelivery(Tx& tx, const Delivery& delivery);
// Newest first, ids below `before` when given.
Result<std::vector<Delivery>> ListDeliveries(Tx& tx, const std::optional<std::string>& warehouse,
                                             std::optional<int64_t> before, int limit);

}  // namespace certfleet::store
