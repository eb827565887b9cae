#include "store/events_repo.h"

#include <fmt/format.h>

namespace certfleet::store {

Result<std::vector<EventRecord>> EventsAfter(Tx& tx, int64_t after_id, const std::vector<std::string>& types,
                                             int limit) {
  std::vector<EventRecord> out;
  if (types.empty()) return out;
  Params params{after_id};
  const std::string in = InValues(tx, "type", types, params);
  params.emplace_back(int64_t{limit});
  CF_ASSIGN_OR_RETURN(Rows rows,
                      tx.Query(fmt::format("SELECT id, at, type, payload FROM events WHERE id > ? AND {} ORDER BY id "
                                           "LIMIT ?",
                                           in),
                               params));
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back({r.Int(0), r.Int(1), r.Text(2), r.Text(3)});
  return out;
}

Result<int64_t> LastEventId(Tx& tx) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT COALESCE(MAX(id), 0) FROM events"));
  return row->Int(0);
}

Result<int64_t> LastEventIdOf(Tx& tx, std::string_view type) {
  CF_ASSIGN_OR_RETURN(auto row,
                      tx.QueryOne("SELECT COALESCE(MAX(id), 0) FROM events WHERE type = ?", {std::string(type)}));
  return row->Int(0);
}

Result<std::optional<int64_t>> WebhookCursor(Tx& tx, std::string_view url) {
  CF_ASSIGN_OR_RETURN(auto row,
                      tx.QueryOne("SELECT last_event_id FROM webhook_cursors WHERE url = ?", {std::string(url)}));
  if (!row) return std::optional<int64_t>();
  return std::optional<int64_t>(row->Int(0));
}

Result<void> PutWebhookCursor(Tx& tx, std::string_view url, int64_t last_event_id,
                              const std::optional<std::string>& last_error, int64_t now) {
  CF_RETURN_IF_ERROR(
      tx.Exec("INSERT INTO webhook_cursors (url, last_event_id, last_error, updated_at) VALUES (?, ?, "
              "?, ?) ON CONFLICT (url) DO UPDATE SET last_event_id = excluded.last_event_id, last_error "
              "= excluded.last_error, updated_at = excluded.updated_at",
              {std::string(url), last_event_id, OptionalValue(last_error), now}));
  return Ok();
}

}  // namespace certfleet::store
