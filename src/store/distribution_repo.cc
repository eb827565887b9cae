#include "store/distribution_repo.h"

#include <fmt/format.h>

#include <map>

namespace certfleet::store {
namespace {

constexpr std::string_view kRecordColumns =
    "warehouse, gateway_eui, status, last_modified, last_emailed, attempts, last_error, version, updated_at";
constexpr std::string_view kDeliveryColumns =
    "id, at, warehouse, message_id, recipients, subject, zip_name, zip_bytes, message_bytes, part, parts, gateways";
// Lists (recipients, gateways) are stored one item per line; none of their items holds one.
constexpr char kListSeparator = '\n';

std::string JoinLines(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : std::string(1, kListSeparator)) + i;
  return out;
}

std::vector<std::string> SplitLines(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find(kListSeparator, start);
    if (end == std::string::npos) end = text.size();
    out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

Result<DistributionRecord> RecordFromRow(const Row& r) {
  DistributionRecord d;
  d.warehouse = r.Text(0);
  d.gateway_eui = r.Text(1);
  CF_ASSIGN_OR_RETURN(d.status, r.Enum<DistributionStatus>(2, "distribution_records.status", kDistributionStatusNames));
  d.last_modified = r.Int(3);
  d.last_emailed = r.OptInt(4);
  d.attempts = static_cast<int>(r.Int(5));
  d.last_error = r.OptText(6);
  d.version = r.Int(7);
  d.updated_at = r.Int(8);
  return d;
}

// Pending, or failed with attempts left; `t` is the table's alias with its dot, or empty.
std::string ToSend(std::string_view t) {
  return fmt::format("({0}status = 'PENDING_EMAIL' OR ({0}status = 'FAILED_EMAIL' AND {0}attempts < ?))", t);
}

}  // namespace

Result<int64_t> RecordObjects(Tx& tx, const std::vector<DistributionObject>& objects, bool listed, int64_t now) {
  if (objects.empty()) return int64_t{0};
  // What is recorded of these keys, in one query.
  std::string sql = "SELECT object_key, etag, last_modified, size FROM distribution_objects WHERE object_key IN (";
  Params params;
  for (size_t i = 0; i < objects.size(); ++i) {
    sql += i ? ",?" : "?";
    params.emplace_back(objects[i].key);
  }
  sql += ")";
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query(sql, params));
  struct Seen {
    std::string etag;
    int64_t last_modified;
    int64_t size;
  };
  std::map<std::string, Seen, std::less<>> known;
  for (const auto& r : rows) known.emplace(r.Text(0), Seen{r.Text(1), r.Int(2), r.Int(3)});

  // Records to mark, with the newest change among their objects.
  std::map<std::pair<std::string, std::string>, int64_t> changed;
  for (const auto& o : objects) {
    auto it = known.find(o.key);
    // The same ETag is the same content, whatever time the sighting carries (an event's
    // eventTime, the listing's LastModified): its time and size are brought up to date, and
    // nothing is sent again. Without an ETag, the time decides.
    if (it != known.end() && it->second.etag == o.etag && !o.etag.empty()) {
      if (it->second.last_modified != o.last_modified || it->second.size != o.size) {
        CF_RETURN_IF_ERROR(tx.Exec("UPDATE distribution_objects SET last_modified = ?, size = ? WHERE object_key = ?",
                                   {o.last_modified, o.size, o.key}));
      }
      continue;
    }
    if (it != known.end() && it->second.etag == o.etag && it->second.last_modified == o.last_modified) continue;
    // An event of another version, seen before the one recorded (delivered late, out of order
    // or replayed): the object has changed since, and what it was then is neither recorded nor
    // sent. A listing's LastModified has whole seconds: within one second both are taken.
    if (!listed && it != known.end() && o.last_modified + 1000 < it->second.last_modified) continue;
    CF_RETURN_IF_ERROR(
        tx.Exec("INSERT INTO distribution_objects (object_key, warehouse, gateway_eui, etag, last_modified, size) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (object_key) DO UPDATE SET etag = excluded.etag, "
                "last_modified = excluded.last_modified, size = excluded.size",
                {o.key, o.warehouse, o.gateway_eui, o.etag, o.last_modified, o.size}));
    int64_t& newest = changed[{o.warehouse, o.gateway_eui}];
    newest = std::max(newest, o.last_modified);
  }
  for (const auto& [id, last_modified] : changed) {
    CF_RETURN_IF_ERROR(tx.Exec(
        "INSERT INTO distribution_records (warehouse, gateway_eui, status, last_modified, updated_at) "
        "VALUES (?, ?, 'PENDING_EMAIL', ?, ?) ON CONFLICT (warehouse, gateway_eui) DO UPDATE SET "
        "status = 'PENDING_EMAIL', attempts = 0, last_error = NULL, version = distribution_records.version + 1, "
        "updated_at = excluded.updated_at, last_modified = CASE WHEN excluded.last_modified > "
        "distribution_records.last_modified THEN excluded.last_modified ELSE distribution_records.last_modified END",
        {id.first, id.second, last_modified, now}));
  }
  return static_cast<int64_t>(changed.size());
}

Result<void> DeleteObject(Tx& tx, std::string_view key) {
  CF_RETURN_IF_ERROR(tx.Exec("DELETE FROM distribution_objects WHERE object_key = ?", {std::string(key)}));
  return Ok();
}

Result<std::vector<DistributionObject>> ObjectsOf(Tx& tx, std::string_view warehouse, std::string_view gateway_eui) {
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT object_key, etag, last_modified, size FROM distribution_objects "
                                          "WHERE warehouse = ? AND gateway_eui = ? ORDER BY object_key",
                                          {std::string(warehouse), std::string(gateway_eui)}));
  std::vector<DistributionObject> out;
  for (const auto& r : rows) {
    out.push_back({r.Text(0), std::string(warehouse), std::string(gateway_eui), r.Text(1), r.Int(2), r.Int(3)});
  }
  return out;
}

Result<std::vector<std::string>> WarehousesToSend(Tx& tx, int max_attempts) {
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query(fmt::format("SELECT DISTINCT warehouse FROM distribution_records WHERE {} "
                                                      "ORDER BY warehouse",
                                                      ToSend("")),
                                          {int64_t{max_attempts}}));
  std::vector<std::string> out;
  for (const auto& r : rows) out.push_back(r.Text(0));
  return out;
}

Result<std::vector<DistributionRecord>> GatewaysToSend(Tx& tx, std::string_view warehouse, std::string_view after,
                                                       int max_attempts, int limit) {
  CF_ASSIGN_OR_RETURN(
      Rows rows,
      tx.Query(fmt::format("SELECT r.warehouse, r.gateway_eui, r.status, r.last_modified, r.last_emailed, r.attempts, "
                           "r.last_error, r.version, r.updated_at, COUNT(o.object_key), COALESCE(SUM(o.size), 0) "
                           "FROM distribution_records r LEFT JOIN distribution_objects o "
                           "ON o.warehouse = r.warehouse AND o.gateway_eui = r.gateway_eui "
                           "WHERE r.warehouse = ? AND r.gateway_eui > ? AND r.gateway_eui <> 'SHARED_FILES' AND {} "
                           "GROUP BY r.warehouse, r.gateway_eui, r.status, r.last_modified, r.last_emailed, "
                           "r.attempts, r.last_error, r.version, r.updated_at ORDER BY r.gateway_eui LIMIT ?",
                           ToSend("r.")),
               {std::string(warehouse), std::string(after), int64_t{max_attempts}, int64_t{limit}}));
  std::vector<DistributionRecord> out;
  for (const auto& r : rows) {
    CF_ASSIGN_OR_RETURN(DistributionRecord d, RecordFromRow(r));
    d.file_count = r.Int(9);
    d.file_bytes = r.Int(10);
    out.push_back(std::move(d));
  }
  return out;
}

Result<std::optional<DistributionRecord>> FindRecord(Tx& tx, std::string_view warehouse, std::string_view gateway_eui) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne(fmt::format("SELECT {} FROM distribution_records WHERE warehouse = ? AND "
                                                        "gateway_eui = ?",
                                                        kRecordColumns),
                                            {std::string(warehouse), std::string(gateway_eui)}));
  if (!row) return std::optional<DistributionRecord>();
  CF_ASSIGN_OR_RETURN(DistributionRecord d, RecordFromRow(*row));
  return std::optional<DistributionRecord>(std::move(d));
}

Result<bool> WarehouseHasGateways(Tx& tx, std::string_view warehouse) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT 1 FROM distribution_records WHERE warehouse = ? AND "
                                            "gateway_eui <> 'SHARED_FILES' LIMIT 1",
                                            {std::string(warehouse)}));
  return row.has_value();
}

Result<int64_t> ResendRecords(Tx& tx, std::string_view warehouse, const std::vector<std::string>& gateway_euis,
                              bool failed_only, int64_t now) {
  Params params{now, std::string(warehouse)};
  std::string sql =
      "UPDATE distribution_records SET status = 'PENDING_EMAIL', attempts = 0, last_error = NULL, "
      "version = version + 1, updated_at = ? WHERE warehouse = ?";
  if (failed_only) sql += " AND status = 'FAILED_EMAIL'";
  if (!gateway_euis.empty()) sql += " AND " + InValues(tx, "gateway_eui", gateway_euis, params);
  return tx.Exec(sql, params);
}

Result<bool> MarkEmailed(Tx& tx, std::string_view warehouse, std::string_view gateway_eui, int64_t version,
                         int64_t now) {
  CF_ASSIGN_OR_RETURN(int64_t n, tx.Exec("UPDATE distribution_records SET status = 'EMAILED', last_emailed = ?, "
                                         "attempts = 0, last_error = NULL, updated_at = ? WHERE warehouse = ? AND "
                                         "gateway_eui = ? AND version = ?",
                                         {now, now, std::string(warehouse), std::string(gateway_eui), version}));
  return n == 1;
}

Result<bool> MarkFailed(Tx& tx, std::string_view warehouse, std::string_view gateway_eui, int64_t version,
                        std::string_view error, int64_t now, int* attempts) {
  CF_ASSIGN_OR_RETURN(int64_t n, tx.Exec("UPDATE distribution_records SET status = 'FAILED_EMAIL', attempts = "
                                         "attempts + 1, last_error = ?, updated_at = ? WHERE warehouse = ? AND "
                                         "gateway_eui = ? AND version = ?",
                                         {std::string(error.substr(0, 1000)), now, std::string(warehouse),
                                          std::string(gateway_eui), version}));
  if (n != 1) return false;
  CF_ASSIGN_OR_RETURN(auto rec, FindRecord(tx, warehouse, gateway_eui));
  if (attempts && rec) *attempts = rec->attempts;
  return true;
}

Result<std::vector<DistributionRecord>> ListRecords(Tx& tx, const RecordFilter& f) {
  std::string sql = fmt::format("SELECT {} FROM distribution_records WHERE TRUE", kRecordColumns);
  Params params;
  if (f.warehouse) {
    sql += " AND warehouse = ?";
    params.emplace_back(*f.warehouse);
  }
  if (f.status) {
    sql += " AND status = ?";
    params.emplace_back(std::string(DistributionStatusName(*f.status)));
  }
  if (f.after) {
    sql += " AND (warehouse, gateway_eui) > (?, ?)";
    params.emplace_back(f.after->first);
    params.emplace_back(f.after->second);
  }
  sql += " ORDER BY warehouse, gateway_eui LIMIT ?";
  params.emplace_back(int64_t{f.limit});
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query(sql, params));
  std::vector<DistributionRecord> out;
  for (const auto& r : rows) {
    CF_ASSIGN_OR_RETURN(DistributionRecord d, RecordFromRow(r));
    out.push_back(std::move(d));
  }
  return out;
}

Result<std::vector<std::pair<std::string, int64_t>>> CountRecordsByStatus(Tx& tx) {
  CF_ASSIGN_OR_RETURN(Rows rows,
                      tx.Query("SELECT status, COUNT(*) FROM distribution_records GROUP BY status ORDER BY status"));
  std::vector<std::pair<std::string, int64_t>> out;
  for (const auto& r : rows) out.emplace_back(r.Text(0), r.Int(1));
  return out;
}

Result<void> PutWarehouse(Tx& tx, const WarehouseSettings& w) {
  Value password = OptionalValue(w.zip_password);
  CF_RETURN_IF_ERROR(
      tx.Exec("INSERT INTO distribution_warehouses (name, recipients, zip_password, updated_at, "
              "updated_by) VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET recipients = "
              "excluded.recipients, zip_password = excluded.zip_password, updated_at = "
              "excluded.updated_at, updated_by = excluded.updated_by",
              {w.name, JoinLines(w.recipients), password, w.updated_at, w.updated_by}));
  return Ok();
}

namespace {
WarehouseSettings WarehouseFromRow(const Row& r) {
  return WarehouseSettings{r.Text(0), SplitLines(r.Text(1)), r.OptText(2), r.Int(3), r.Text(4)};
}
}  // namespace

Result<std::optional<WarehouseSettings>> FindWarehouse(Tx& tx, std::string_view name) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT name, recipients, zip_password, updated_at, updated_by FROM "
                                            "distribution_warehouses WHERE name = ?",
                                            {std::string(name)}));
  if (!row) return std::optional<WarehouseSettings>();
  return std::optional<WarehouseSettings>(WarehouseFromRow(*row));
}

Result<std::vector<WarehouseSettings>> ListWarehouses(Tx& tx) {
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT name, recipients, zip_password, updated_at, updated_by FROM "
                                          "distribution_warehouses ORDER BY name"));
  std::vector<WarehouseSettings> out;
  for (const auto& r : rows) out.push_back(WarehouseFromRow(r));
  return out;
}

Result<int64_t> InsertDelivery(Tx& tx, const Delivery& d) {
  CF_ASSIGN_OR_RETURN(
      auto row, tx.QueryOne("INSERT INTO distribution_deliveries (at, warehouse, message_id, recipients, "
                            "subject, zip_name, zip_bytes, message_bytes, part, parts, gateways) VALUES "
                            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                            {d.at, d.warehouse, d.message_id, JoinLines(d.recipients), d.subject, d.zip_name,
                             d.zip_bytes, d.message_bytes, int64_t{d.part}, int64_t{d.parts}, JoinLines(d.gateways)}));
  return row->Int(0);
}

Result<std::vector<Delivery>> ListDeliveries(Tx& tx, const std::optional<std::string>& warehouse,
                                             std::optional<int64_t> before, int limit) {
  std::string sql = fmt::format("SELECT {} FROM distribution_deliveries WHERE TRUE", kDeliveryColumns);
  Params params;
  if (warehouse) {
    sql += " AND warehouse = ?";
    params.emplace_back(*warehouse);
  }
  if (before) {
    sql += " AND id < ?";
    params.emplace_back(*before);
  }
  sql += " ORDER BY id DESC LIMIT ?";
  params.emplace_back(int64_t{limit});
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query(sql, params));
  std::vector<Delivery> out;
  for (const auto& r : rows) {
    out.push_back(Delivery{r.Int(0), r.Int(1), r.Text(2), r.Text(3), SplitLines(r.Text(4)), r.Text(5), r.Text(6),
                           r.Int(7), r.Int(8), static_cast<int>(r.Int(9)), static_cast<int>(r.Int(10)),
                           SplitLines(r.Text(11))});
  }
  return out;
}

}  // namespace certfleet::store
