#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "provision/device_upload.h"
#include "store/devices_repo.h"
#include "store/store.h"

namespace certfleet::provision {

// A row of an upload that was not registered, and why.
struct Rejection {
  size_t row = 0;  // as UploadRow::number
  std::string device_id;
  std::string reason;
};

// What an upload did: every row is counted once.
struct RegisterReport {
  int64_t inserted = 0;
  int64_t unchanged = 0;
  int64_t replaced = 0;
  int64_t rejected = 0;
  std::vector<Rejection> rejections;  // in row order
};

// The devices registered ahead of their first start (W2): which key each one's CSR must
// carry, its batch and whether it may provision. Thread-safe.
class DeviceRegistry {
 public:
  DeviceRegistry(store::Store& store, const Clock& clock) : store_(store), clock_(clock) {}

  // Registers the upload's devices in transactions of kRowsPerTransaction rows, each with an
  // audit entry by `actor`; a device already registered with the same key and batch is
  // unchanged, with another one replaced. Rows are refused one by one (bad id, unreadable or
  // weak key, a device listed twice); an upload that cannot be read at all is
  // kInvalidArgument, and the transactions committed before a store failure stay.
  Result<RegisterReport> RegisterKeys(std::string_view body, UploadFormat format, std::string_view actor);
  Result<store::DeviceRecord> Get(std::string_view device_id);  // kNotFound if unknown
  Result<std::vector<store::DeviceRecord>> List(const store::DeviceFilter& filter);
  // Idempotent; the device's CSRs are refused from then on. kNotFound if unknown.
  Result<store::DeviceRecord> Disable(std::string_view device_id, std::string_view actor);
  // Idempotent: a disabled device may provision again, provisioned if it has had a
  // certificate, registered otherwise. kNotFound if unknown.
  Result<store::DeviceRecord> Enable(std::string_view device_id, std::string_view actor);
  // Removes the device: its CSRs are refused from then on as an unknown device's. Its
  // certificates, thing and audit entries stay; a disabled device's certificates are retired
  // from its thing, so that brokers go on refusing them. kNotFound if unknown.
  Result<void> Delete(std::string_view device_id, std::string_view actor);

  // Rows written per transaction: large uploads go in steps, each short for the writer lock.
  static constexpr size_t kRowsPerTransaction = 1000;

 private:
  store::Store& store_;
  const Clock& clock_;
};

}  // namespace certfleet::provision
