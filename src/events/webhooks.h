#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "store/events_repo.h"
#include "store/store.h"

namespace certfleet::events {

// Sends the event bus (the events table) to webhooks: each subscribed event is POSTed as
// JSON to every URL, in id order, at least once. A URL that fails holds its place and is
// retried at the next Deliver(); the others go on. Among nodes sharing a database one
// delivers at a time (a leader lease). Thread-safe.
class WebhookDispatcher {
 public:
  struct Options {
    std::vector<std::string> urls;   // http:// or https://
    std::vector<std::string> types;  // event types sent, e.g. crl/published, renewal/failed
    // The key of X-Certfleet-Signature: sha256=<hex HMAC-SHA256 of the body>; empty: unsigned.
    std::string secret;
    std::string ca_file;  // trusts the receivers' TLS certificates; empty: the system store
  };

  WebhookDispatcher(store::Store& store, const Clock& clock, Options options);

  // A URL seen for the first time starts after the newest event: it gets what happens from
  // now on, not the history. Run at start.
  Result<void> Subscribe();
  // Sends what is pending; how many deliveries succeeded. A URL that fails is logged and keeps
  // the error in its cursor (States()); the next call is its retry. An error is the store's.
  Result<int> Deliver();
  // Each URL of webhooks.urls, in order, with where it stands, from the store: the same on
  // every node. The URL as shown: scheme, host and port, no credentials, path or query.
  struct UrlState {
    std::string url;
    store::WebhookCursorRecord cursor;
  };
  Result<std::vector<UrlState>> States();

  static constexpr std::string_view kJob = "webhooks.deliver";
  static constexpr int kBatch = 100;  // events read per URL and call, so a backlog drains in steps
  // A missing event id with events after it older than this is a rolled-back insert, not one
  // still to commit: far longer than any of certfleet's transactions.
  static constexpr int64_t kGapWaitMs = 60'000;
  static constexpr int kMaxGapsPassed = 100;  // rolled-back ids passed per call

  // Drops from `events` (read after `after_id`) those past an id not committed yet.
  static Result<void> StopAtUncommitted(store::Tx& tx, int64_t after_id, int64_t now,
                                        std::vector<store::EventRecord>& events);

 private:
  // POSTs one event; kUnavailable for a transport failure or an answer other than 2xx.
  Result<void> Post(const std::string& url, const std::string& type, int64_t id, const std::string& body);

  store::Store& store_;
  const Clock& clock_;
  const Options options_;
};

}  // namespace certfleet::events
