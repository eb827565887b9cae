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

Result<std::optional<EventGap>> FirstEventGap(Tx& tx, int64_t after_id, int64_t upto) {
  CF_ASSIGN_OR_RETURN(auto count,
                      tx.QueryOne("SELECT COUNT(*) FROM events WHERE id > ? AND id <= ?", {after_id, upto}));
  if (count->Int(0) == upto - after_id) return std::optional<EventGap>();
  // The first id missing: right after `after_id`, or right after an event whose successor is not there.
  CF_ASSIGN_OR_RETURN(auto missing,
                      tx.QueryOne("SELECT MIN(m) FROM (SELECT CAST(? AS BIGINT) + 1 AS m WHERE NOT EXISTS "
                                  "(SELECT 1 FROM events WHERE id = CAST(? AS BIGINT) + 1) UNION ALL "
                                  "SELECT e.id + 1 FROM events e WHERE e.id > ? AND e.id < ? AND NOT EXISTS "
                                  "(SELECT 1 FROM events f WHERE f.id = e.id + 1)) gaps",
                                  {after_id, after_id, after_id, upto}));
  EventGap gap;
  gap.missing_id = missing->Int(0);
  CF_ASSIGN_OR_RETURN(auto next,
                      tx.QueryOne("SELECT at FROM events WHERE id > ? ORDER BY id LIMIT 1", {gap.missing_id}));
  gap.next_at = next ? next->Int(0) : 0;
  return std::optional<EventGap>(gap);
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

Result<std::optional<WebhookCursorRecord>> WebhookCursor(Tx& tx, std::string_view url) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT last_event_id, last_error, updated_at FROM webhook_cursors "
                                            "WHERE url = ?",
                                            {std::string(url)}));
  if (!row) return std::optional<WebhookCursorRecord>();
  return std::optional<WebhookCursorRecord>(WebhookCursorRecord{row->Int(0), row->OptText(1), row->Int(2)});
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
