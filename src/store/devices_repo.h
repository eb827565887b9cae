#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "store/store.h"

namespace certfleet::store {

inline constexpr std::string_view kDeviceRegistered = "registered";    // no certificate yet
inline constexpr std::string_view kDeviceProvisioned = "provisioned";  // has had a certificate
inline constexpr std::string_view kDeviceDisabled = "disabled";        // refused until enabled

// A device registered ahead of its first start, with the key its CSR must carry.
struct DeviceRecord {
  std::string device_id;
  std::string public_key;  // SubjectPublicKeyInfo, DER
  std::string key_sha256;  // hex SHA-256 of public_key
  std::string batch;       // "" when registered without one
  std::string status;
  int64_t created_at = 0;
  int64_t updated_at = 0;
};

// What registering a device did to the registry.
enum class DeviceUpsert { kInserted, kUnchanged, kReplaced };

// Registers the device, or gives a registered one the new key and batch (its status stays).
Result<DeviceUpsert> UpsertDevice(Tx& tx, const DeviceRecord& d, int64_t now);
Result<std::optional<DeviceRecord>> FindDevice(Tx& tx, std::string_view device_id);
// The same without the public key (empty), for the provisioning authorizer, which compares
// key_sha256 only.
Result<std::optional<DeviceRecord>> FindDeviceForAuth(Tx& tx, std::string_view device_id);
// The same for many devices in one statement (a BatchedLookup's fetch): those found, by id.
Result<std::map<std::string, DeviceRecord>> FindDevicesForAuth(Tx& tx, const std::vector<std::string>& device_ids);
// The authorizer's check again inside the write transaction that issues: `check` gets the
// device as FindDeviceForAuth finds it, and on PostgreSQL the row stays locked until the
// transaction ends, so that a concurrent disable or new key commits before or after it,
// never between the check and the certificate it allows. Made at the transaction's end (see
// Tx::Gathered), for all the devices of a group commit in one statement, which locks their
// rows in the order of their ids: an error `check` returns fails the transaction.
using DeviceCheck = std::function<Result<void>(const std::optional<DeviceRecord>&)>;
Result<void> CheckDeviceForAuth(Tx& tx, std::string_view device_id, DeviceCheck check);
// A registered device's first certificate: registered -> provisioned; other states stay.
// At the transaction's end, after the checks: one statement for a group commit's devices.
Result<void> MarkDeviceProvisioned(Tx& tx, std::string_view device_id, int64_t now);
// The deleted device's status as it was deleted (a change committed meanwhile included);
// nullopt if there was no such device.
Result<std::optional<std::string>> DeleteDevice(Tx& tx, std::string_view device_id);
// False if there is no such device.
Result<bool> SetDeviceStatus(Tx& tx, std::string_view device_id, std::string_view status, int64_t now);

struct DeviceFilter {
  std::optional<std::string> batch;
  std::optional<std::string> status;
  std::optional<std::string> after;  // the last device id of the previous page
  int limit = 100;
};
// In device id order, through the index of the filter given (batch first).
Result<std::vector<DeviceRecord>> ListDevices(Tx& tx, const DeviceFilter& filter);

}  // namespace certfleet::store
