#include "provision/device_registry.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json/serialize.hpp>
#include <unordered_map>

#include "core/crypto.h"
#include "pki/csr.h"
#include "store/audit_repo.h"
#include "store/certificates_repo.h"
#include "store/registry_repo.h"

namespace certfleet::provision {
namespace {

// The reason a row cannot be registered, or "" with `device` filled in.
std::string Check(const UploadRow& row, store::DeviceRecord& device) {
  if (!row.problem.empty()) return row.problem;
  if (row.device_id.empty()) return "device_id is missing";
  if (!IsValidDeviceId(row.device_id)) {
    return fmt::format("device_id must be 1 to {} of A-Z a-z 0-9 . _ : - starting with a letter or digit",
                       kMaxDeviceIdBytes);
  }
  if (!row.batch.empty() && !IsValidName(row.batch, kMaxBatchBytes)) {
    return fmt::format("batch must be 1 to {} of A-Z a-z 0-9 . _ : - starting with a letter or digit", kMaxBatchBytes);
  }
  if (row.public_key_pem.empty()) return "public_key_pem is missing";
  Result<std::string> der = pki::PublicKeyPemToDer(row.public_key_pem);
  if (!der.ok()) return der.error().message;
  device.device_id = row.device_id;
  device.key_sha256 = Sha256Hex(*der);
  device.public_key = std::move(*der);
  device.batch = row.batch;
  return "";
}

}  // namespace

Result<RegisterReport> DeviceRegistry::RegisterKeys(std::string_view body, UploadFormat format,
                                                    std::string_view actor) {
  RegisterReport report;
  std::vector<store::DeviceRecord> pending;
  std::unordered_map<std::string, size_t> first_row;  // device id -> the row that listed it first

  auto write = [&]() -> Result<void> {
    if (pending.empty()) return Ok();
    const int64_t now = clock_.NowMillis();
    RegisterReport step;
    CF_RETURN_IF_ERROR(store_.Transact([&](store::Tx& tx) -> Result<void> {
      step = {};
      for (const auto& d : pending) {
        CF_ASSIGN_OR_RETURN(store::DeviceUpsert what, store::UpsertDevice(tx, d, now));
        ++(what == store::DeviceUpsert::kInserted    ? step.inserted
           : what == store::DeviceUpsert::kUnchanged ? step.unchanged
                                                     : step.replaced);
      }
      const std::string details = boost::json::serialize(
          boost::json::object{{"inserted", step.inserted}, {"unchanged", step.unchanged}, {"replaced", step.replaced}});
      CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "devices.register", "devices", details));
      return Ok();
    }));
    report.inserted += step.inserted;
    report.unchanged += step.unchanged;
    report.replaced += step.replaced;
    pending.clear();
    return Ok();
  };

  CF_RETURN_IF_ERROR(ForEachUploadRow(body, format, [&](const UploadRow& row) -> Result<void> {
    store::DeviceRecord device;
    std::string reason = Check(row, device);
    if (reason.empty()) {
      auto [it, fresh] = first_row.emplace(row.device_id, row.number);
      if (!fresh) {
        reason = fmt::format("device {} is listed twice in this upload (row {} first)", row.device_id, it->second);
      }
    }
    if (!reason.empty()) {
      ++report.rejected;
      report.rejections.push_back({row.number, row.device_id, std::move(reason)});
      return Ok();
    }
    pending.push_back(std::move(device));
    return pending.size() >= kRowsPerTransaction ? write() : Ok();
  }));
  CF_RETURN_IF_ERROR(write());
  return report;
}

Result<store::DeviceRecord> DeviceRegistry::Get(std::string_view device_id) {
  CF_ASSIGN_OR_RETURN(auto device,
                      store::Read(store_, [&](store::Tx& tx) { return store::FindDevice(tx, device_id); }));
  if (!device) return MakeError(ErrorCode::kNotFound, fmt::format("no device {}", device_id));
  return std::move(*device);
}

Result<std::vector<store::DeviceRecord>> DeviceRegistry::List(const store::DeviceFilter& filter) {
  return store::Read(store_, [&](store::Tx& tx) { return store::ListDevices(tx, filter); });
}

Result<store::DeviceRecord> DeviceRegistry::Disable(std::string_view device_id, std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  CF_ASSIGN_OR_RETURN(
      auto device, store::Write(store_, [&](store::Tx& tx) -> Result<std::optional<store::DeviceRecord>> {
        CF_ASSIGN_OR_RETURN(auto found, store::FindDevice(tx, device_id));
        if (!found || found->status == store::kDeviceDisabled) return found;
        CF_ASSIGN_OR_RETURN(bool changed, store::SetDeviceStatus(tx, device_id, store::kDeviceDisabled, now));
        if (!changed) return MakeError(ErrorCode::kInternal, "device vanished while disabling it");
        CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "device.disable", "device:" + found->device_id, "{}"));
        found->status = store::kDeviceDisabled;
        found->updated_at = now;
        return found;
      }));
  if (!device) return MakeError(ErrorCode::kNotFound, fmt::format("no device {}", device_id));
  return std::move(*device);
}

Result<store::DeviceRecord> DeviceRegistry::Enable(std::string_view device_id, std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  return store::Write(store_, [&](store::Tx& tx) -> Result<store::DeviceRecord> {
    CF_ASSIGN_OR_RETURN(auto found, store::FindDevice(tx, device_id));
    if (!found) return MakeError(ErrorCode::kNotFound, fmt::format("no device {}", device_id));
    if (found->status != store::kDeviceDisabled) return std::move(*found);
    CF_ASSIGN_OR_RETURN(auto certificates, store::FindCertificatesByFqdn(tx, found->device_id));
    const bool had_one = std::any_of(certificates.begin(), certificates.end(),
                                     [](const auto& c) { return c.subject_kind == store::SubjectKind::kDevice; });
    found->status = std::string(had_one ? store::kDeviceProvisioned : store::kDeviceRegistered);
    found->updated_at = now;
    CF_RETURN_IF_ERROR(store::SetDeviceStatus(tx, found->device_id, found->status, now));
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "device.enable", "device:" + found->device_id, "{}"));
    return std::move(*found);
  });
}

Result<void> DeviceRegistry::Delete(std::string_view device_id, std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  return store_.Transact([&](store::Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(auto status, store::DeleteDevice(tx, device_id));
    if (!status) return MakeError(ErrorCode::kNotFound, fmt::format("no device {}", device_id));
    // Brokers refuse a disabled device's certificates by its row: without it, by their links.
    int64_t retired = 0;
    if (*status == store::kDeviceDisabled) {
      CF_ASSIGN_OR_RETURN(retired, store::RetireThingCertificates(tx, device_id));
    }
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "device.delete", "device:" + std::string(device_id),
                                          boost::json::serialize(boost::json::object{{"retired", retired}})));
    return Ok();
  });
}

}  // namespace certfleet::provision
