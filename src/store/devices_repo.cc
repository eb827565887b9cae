#include "store/devices_repo.h"

#include "core/crypto.h"

namespace certfleet::store {
namespace {

constexpr std::string_view kColumns = "device_id, public_key, key_sha256, batch, status, created_at, updated_at";

Result<DeviceRecord> FromRow(const Row& r) {
  std::optional<std::string> key = Base64Decode(r.Text(1));
  if (!key) return MakeError(ErrorCode::kInternal, "device " + r.Text(0) + ": its stored public key is not base64");
  return DeviceRecord{r.Text(0), std::move(*key), r.Text(2), r.Text(3), r.Text(4), r.Int(5), r.Int(6)};
}

}  // namespace

Result<DeviceUpsert> UpsertDevice(Tx& tx, const DeviceRecord& d, int64_t now) {
  CF_ASSIGN_OR_RETURN(auto existing,
                      tx.QueryOne("SELECT key_sha256, batch FROM devices WHERE device_id = ?", {d.device_id}));
  if (!existing) {
    CF_RETURN_IF_ERROR(tx.Exec(
        "INSERT INTO devices (device_id, public_key, key_sha256, batch, status, created_at, updated_at) VALUES (?, ?, "
        "?, ?, ?, ?, ?)",
        {d.device_id, Base64Encode(d.public_key), d.key_sha256, d.batch, std::string(kDeviceRegistered), now, now}));
    return DeviceUpsert::kInserted;
  }
  if (existing->Text(0) == d.key_sha256 && existing->Text(1) == d.batch) return DeviceUpsert::kUnchanged;
  CF_RETURN_IF_ERROR(
      tx.Exec("UPDATE devices SET public_key = ?, key_sha256 = ?, batch = ?, updated_at = ? WHERE device_id = ?",
              {Base64Encode(d.public_key), d.key_sha256, d.batch, now, d.device_id}));
  return DeviceUpsert::kReplaced;
}

Result<std::optional<DeviceRecord>> FindDevice(Tx& tx, std::string_view device_id) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT " + std::string(kColumns) + " FROM devices WHERE device_id = ?",
                                            {std::string(device_id)}));
  if (!row) return std::optional<DeviceRecord>();
  CF_ASSIGN_OR_RETURN(DeviceRecord d, FromRow(*row));
  return std::optional<DeviceRecord>(std::move(d));
}

namespace {

// The statement that reads `device_ids` for the authorizer; `lock`: see WriteChecks.
std::string AuthQuery(const Tx& tx, const std::vector<std::string>& device_ids, bool lock, Params& params) {
  return "SELECT key_sha256, batch, status, device_id FROM devices WHERE " +
         InValues(tx, "device_id", device_ids, params) +
         (lock && tx.postgres() ? " ORDER BY device_id FOR NO KEY UPDATE" : "");
}

// Its rows, by id (without the public key).
std::map<std::string, DeviceRecord> AuthRecords(const Rows& rows) {
  std::map<std::string, DeviceRecord> out;
  for (const auto& row : rows) {
    out.emplace(row.Text(3), DeviceRecord{row.Text(3), "", row.Text(0), row.Text(1), row.Text(2), 0, 0});
  }
  return out;
}

}  // namespace

Result<std::map<std::string, DeviceRecord>> FindDevicesForAuth(Tx& tx, const std::vector<std::string>& device_ids) {
  Params params;
  const std::string sql = AuthQuery(tx, device_ids, false, params);
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query(sql, params));
  return AuthRecords(rows);
}

Result<std::optional<DeviceRecord>> FindDeviceForAuth(Tx& tx, std::string_view device_id) {
  CF_ASSIGN_OR_RETURN(auto found, FindDevicesForAuth(tx, {std::string(device_id)}));
  if (found.empty()) return std::optional<DeviceRecord>();
  return std::optional<DeviceRecord>(std::move(found.begin()->second));
}

namespace {

struct PendingCheck {
  std::string device_id;
  DeviceCheck check;
};

Result<void> WriteChecks(Tx& tx, std::vector<PendingCheck>& checks) {
  if (checks.empty()) return Ok();
  std::vector<std::string> ids;
  ids.reserve(checks.size());
  for (const auto& c : checks) ids.push_back(c.device_id);
  // SQLite has one writer: its transactions hold the whole database already. PostgreSQL: the
  // lock the transaction's own update of the rows (MarkDeviceProvisioned) takes, so that two
  // provisionings of one device at once wait for each other rather than both share-locking it
  // and deadlocking on the upgrade; taken in the order of the ids, so that two groups with
  // devices in common lock them in the same order.
  Params params;
  const std::string sql = AuthQuery(tx, ids, true, params);
  // Deferred (no round trip of its own): the checks are looked at once the rows are in.
  return tx.QueryDeferred(sql, params, [checks = std::move(checks)](const Rows& rows) -> Result<void> {
    const std::map<std::string, DeviceRecord> found = AuthRecords(rows);
    for (const auto& c : checks) {
      auto it = found.find(c.device_id);
      CF_RETURN_IF_ERROR(c.check(it == found.end() ? std::nullopt : std::optional<DeviceRecord>(it->second)));
    }
    return Ok();
  });
}

Result<void> WriteMarks(Tx& tx, std::vector<std::pair<std::string, int64_t>>& marks) {
  if (marks.empty()) return Ok();
  std::vector<std::string> ids;
  ids.reserve(marks.size());
  int64_t now = 0;
  for (const auto& [id, at] : marks) {
    ids.push_back(id);
    now = std::max(now, at);
  }
  Params params{std::string(kDeviceProvisioned), now};
  const std::string in = InValues(tx, "device_id", ids, params);
  params.emplace_back(std::string(kDeviceRegistered));
  return tx.ExecDeferred("UPDATE devices SET status = ?, updated_at = ? WHERE " + in + " AND status = ?", params);
}

}  // namespace

Result<void> CheckDeviceForAuth(Tx& tx, std::string_view device_id, DeviceCheck check) {
  tx.Gathered<PendingCheck>("device-checks", WriteChecks).push_back({std::string(device_id), std::move(check)});
  return Ok();
}

Result<void> MarkDeviceProvisioned(Tx& tx, std::string_view device_id, int64_t now) {
  // Gathered after the checks: the first use of the checks' gathering comes first.
  tx.Gathered<std::pair<std::string, int64_t>>("device-marks", WriteMarks).emplace_back(std::string(device_id), now);
  return Ok();
}

Result<std::optional<std::string>> DeleteDevice(Tx& tx, std::string_view device_id) {
  CF_ASSIGN_OR_RETURN(
      auto deleted, tx.QueryOne("DELETE FROM devices WHERE device_id = ? RETURNING status", {std::string(device_id)}));
  if (!deleted) return std::optional<std::string>();
  return std::optional<std::string>(deleted->Text(0));
}

Result<bool> SetDeviceStatus(Tx& tx, std::string_view device_id, std::string_view status, int64_t now) {
  CF_ASSIGN_OR_RETURN(int64_t changed, tx.Exec("UPDATE devices SET status = ?, updated_at = ? WHERE device_id = ?",
                                               {std::string(status), now, std::string(device_id)}));
  return changed > 0;
}

Result<std::vector<DeviceRecord>> ListDevices(Tx& tx, const DeviceFilter& filter) {
  std::string sql = "SELECT " + std::string(kColumns) + " FROM devices WHERE 1 = 1";
  Params params;
  if (filter.batch) {
    sql += " AND batch = ?";
    params.emplace_back(*filter.batch);
  }
  if (filter.status) {
    sql += " AND status = ?";
    params.emplace_back(*filter.status);
  }
  if (filter.after) {
    sql += " AND device_id > ?";
    params.emplace_back(*filter.after);
  }
  sql += " ORDER BY device_id LIMIT ?";
  params.emplace_back(int64_t{filter.limit});
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query(sql, params));
  std::vector<DeviceRecord> out;
  out.reserve(rows.size());
  for (const auto& r : rows) {
    CF_ASSIGN_OR_RETURN(DeviceRecord d, FromRow(r));
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace certfleet::store
