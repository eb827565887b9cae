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

constexpr std::string_view kAuthColumns = "SELECT key_sha256, batch, status FROM devices WHERE device_id = ?";

DeviceRecord AuthRecord(std::string device_id, const Row& row) {
  return DeviceRecord{std::move(device_id), "", row.Text(0), row.Text(1), row.Text(2), 0, 0};
}

std::optional<DeviceRecord> AuthRecord(std::string_view device_id, const Rows& rows) {
  if (rows.empty()) return std::nullopt;
  return AuthRecord(std::string(device_id), rows.front());
}

}  // namespace

Result<std::optional<DeviceRecord>> FindDeviceForAuth(Tx& tx, std::string_view device_id) {
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query(kAuthColumns, {std::string(device_id)}));
  return AuthRecord(device_id, rows);
}

Result<std::map<std::string, DeviceRecord>> FindDevicesForAuth(Tx& tx, const std::vector<std::string>& device_ids) {
  Params params;
  const std::string in = InValues(tx, "device_id", device_ids, params);
  CF_ASSIGN_OR_RETURN(Rows rows,
                      tx.Query("SELECT key_sha256, batch, status, device_id FROM devices WHERE " + in, params));
  std::map<std::string, DeviceRecord> out;
  for (const auto& row : rows) {
    std::string id = row.Text(3);
    out.emplace(id, AuthRecord(id, row));
  }
  return out;
}

Result<void> CheckDeviceForAuth(Tx& tx, std::string_view device_id, DeviceCheck check) {
  // SQLite has one writer: its transactions hold the whole database already. PostgreSQL: the
  // lock the transaction's own update of the row (MarkDeviceProvisioned) takes, so that two
  // provisionings of one device at once wait for each other rather than both share-locking it
  // and deadlocking on the upgrade.
  const std::string sql = std::string(kAuthColumns) + (tx.postgres() ? " FOR NO KEY UPDATE" : "");
  return tx.QueryDeferred(sql, {std::string(device_id)},
                          [id = std::string(device_id), check = std::move(check)](const Rows& rows) {
                            return check(AuthRecord(id, rows));
                          });
}

Result<void> MarkDeviceProvisioned(Tx& tx, std::string_view device_id, int64_t now) {
  return tx.ExecDeferred(
      "UPDATE devices SET status = ?, updated_at = ? WHERE device_id = ? AND status = ?",
      {std::string(kDeviceProvisioned), now, std::string(device_id), std::string(kDeviceRegistered)});
}

Result<bool> DeleteDevice(Tx& tx, std::string_view device_id) {
  CF_ASSIGN_OR_RETURN(int64_t deleted, tx.Exec("DELETE FROM devices WHERE device_id = ?", {std::string(device_id)}));
  return deleted > 0;
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
