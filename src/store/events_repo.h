#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "store/store.h"

namespace certfleet::store {

// An entry of the event bus (AppendEvent writes them).
struct EventRecord {
  int64_t id = 0;
  int64_t at = 0;
  std::string type;
  std::string payload;  // JSON
};

// Events after `after_id` of one of `types`, in id order.
Result<std::vector<EventRecord>> EventsAfter(Tx& tx, int64_t after_id, const std::vector<std::string>& types,
                                             int limit);
// The first id in (after_id, upto] that no event has, with the time of the first event after
// it; nullopt when every one is there. On PostgreSQL an id is taken at insert, not at commit: a
// missing id is an event not committed yet (or one rolled back, for good), and an event with a
// higher id may already be visible.
struct EventGap {
  int64_t missing_id = 0;
  int64_t next_at = 0;  // ms
};
Result<std::optional<EventGap>> FirstEventGap(Tx& tx, int64_t after_id, int64_t upto);
// The id of the newest event; 0 when there is none.
Result<int64_t> LastEventId(Tx& tx);
// The id of the newest event of `type` (through the (type, id) index); 0 if there is none.
Result<int64_t> LastEventIdOf(Tx& tx, std::string_view type);

// Where a webhook stands: the last event it took, and the error of its last try (nullopt
// after a success).
struct WebhookCursorRecord {
  int64_t last_event_id = 0;
  std::optional<std::string> last_error;
  int64_t updated_at = 0;
};
// Nullopt for a URL not seen before.
Result<std::optional<WebhookCursorRecord>> WebhookCursor(Tx& tx, std::string_view url);
// Records the last event taken and the last error (nullopt after a success).
Result<void> PutWebhookCursor(Tx& tx, std::string_view url, int64_t last_event_id,
                              const std::optional<std::string>& last_error, int64_t now);

}  // namespace certfleet::store
