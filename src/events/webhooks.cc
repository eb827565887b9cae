#include "events/webhooks.h"

#include <curl/curl.h>
#include <fmt/format.h>

#include <boost/json.hpp>
#include <memory>

#include "core/config.h"
#include "core/crypto.h"
#include "core/log.h"
#include "store/events_repo.h"

namespace certfleet::events {
namespace {

namespace json = boost::json;

constexpr long kConnectTimeoutSeconds = 10;
// A receiver acknowledges an event; it should queue work, not do it before answering.
constexpr long kRequestTimeoutSeconds = 30;
// Only the status matters: a receiver's body (a page, say) is read and dropped, within the
// request's time limit.
size_t Drop(char*, size_t size, size_t n, void*) { return size * n; }

// A URL as /metrics shows it: its scheme, host and port, without credentials, path or query
// (where receivers such as chat services keep their secret).
std::string Shown(const std::string& url) {
  std::string masked = MaskUrlCredentials(url);
  const size_t authority = masked.find("://");
  const size_t path = masked.find_first_of("/?#", authority == std::string::npos ? 0 : authority + 3);
  if (path != std::string::npos) masked = masked.substr(0, path) + "/...";
  return masked;
}

}  // namespace

WebhookDispatcher::WebhookDispatcher(store::Store& store, const Clock& clock, Options options)
    : store_(store), clock_(clock), options_(std::move(options)) {}

Result<void> WebhookDispatcher::Subscribe() {
  const int64_t now = clock_.NowMillis();
  return store::Write(store_, [&](store::Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(int64_t last, store::LastEventId(tx));
    for (const auto& url : options_.urls) {
      CF_ASSIGN_OR_RETURN(auto cursor, store::WebhookCursor(tx, url));
      if (!cursor) CF_RETURN_IF_ERROR(store::PutWebhookCursor(tx, url, last, std::nullopt, now));
    }
    return Ok();
  });
}

Result<void> WebhookDispatcher::StopAtUncommitted(store::Tx& tx, int64_t after_id, int64_t now,
                                                  std::vector<store::EventRecord>& events) {
  // The cursor moves past an event once delivered: one not committed yet with a lower id than
  // a delivered one would never be sent. So delivery stops before the first missing id, unless
  // events after it are older than any transaction runs (the missing one was rolled back).
  int64_t from = after_id;
  for (int gaps = 0; !events.empty() && gaps < kMaxGapsPassed; ++gaps) {
    CF_ASSIGN_OR_RETURN(auto gap, store::FirstEventGap(tx, from, events.back().id));
    if (!gap) return Ok();
    if (now - gap->next_at < kGapWaitMs) {
      std::erase_if(events, [&](const store::EventRecord& e) { return e.id > gap->missing_id; });
      return Ok();
    }
    from = gap->missing_id;
  }
  return Ok();
}

Result<int> WebhookDispatcher::Deliver() {
  if (options_.urls.empty()) return 0;
  CF_ASSIGN_OR_RETURN(auto lease, store_.TryLead("webhooks"));
  if (!lease) return 0;  // another node delivers
  int delivered = 0;
  for (const auto& url : options_.urls) {
    int64_t last = 0;  // the last event this URL took
    CF_ASSIGN_OR_RETURN(auto pending,
                        store::Read(store_, [&](store::Tx& tx) -> Result<std::vector<store::EventRecord>> {
                          CF_ASSIGN_OR_RETURN(auto cursor, store::WebhookCursor(tx, url));
                          last = cursor ? cursor->last_event_id : 0;
                          CF_ASSIGN_OR_RETURN(auto events, store::EventsAfter(tx, last, options_.types, kBatch));
                          CF_RETURN_IF_ERROR(StopAtUncommitted(tx, last, clock_.NowMillis(), events));
                          return events;
                        }));
    for (const auto& e : pending) {
      boost::system::error_code ec;
      json::value data = json::parse(e.payload, ec);
      if (ec) data = e.payload;
      const std::string body = json::serialize(
          json::object{{"id", e.id}, {"type", e.type}, {"at", FormatRfc3339(e.at)}, {"data", std::move(data)}});
      Result<void> sent = Post(url, e.type, e.id, body);
      if (sent.ok()) last = e.id;
      const std::optional<std::string> error =
          sent.ok() ? std::nullopt : std::optional<std::string>(sent.error().message);
      CF_RETURN_IF_ERROR(store::Write(store_, [&](store::Tx& tx) -> Result<void> {
        return store::PutWebhookCursor(tx, url, last, error, clock_.NowMillis());
      }));
      if (!sent.ok()) {
        log::Warn("webhook delivery failed; retried later",
                  {{"url", Shown(url)}, {"event", e.id}, {"error", sent.error().message}});
        break;
      }
      ++delivered;
    }
  }
  return delivered;
}

Result<std::vector<WebhookDispatcher::UrlState>> WebhookDispatcher::States() {
  return store::Read(store_, [&](store::Tx& tx) -> Result<std::vector<UrlState>> {
    std::vector<UrlState> out;
    for (const auto& url : options_.urls) {
      CF_ASSIGN_OR_RETURN(auto cursor, store::WebhookCursor(tx, url));
      out.push_back(UrlState{Shown(url), cursor.value_or(store::WebhookCursorRecord{})});
    }
    return out;
  });
}

Result<void> WebhookDispatcher::Post(const std::string& url, const std::string& type, int64_t id,
                                     const std::string& body) {
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), &curl_easy_cleanup);
  if (!curl) return MakeError(ErrorCode::kInternal, "curl_easy_init failed");
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> headers(nullptr, &curl_slist_free_all);
  std::vector<std::string> lines{"Content-Type: application/json", "X-Certfleet-Event: " + type,
                                 fmt::format("X-Certfleet-Delivery: {}", id)};
  if (!options_.secret.empty()) {
    lines.push_back("X-Certfleet-Signature: sha256=" + HexEncode(HmacSha256(options_.secret, body)));
  }
  for (const auto& l : lines) headers.reset(curl_slist_append(headers.release(), l.c_str()));
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Drop);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, kConnectTimeoutSeconds);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, kRequestTimeoutSeconds);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  if (!options_.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, options_.ca_file.c_str());
  const CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) return MakeError(ErrorCode::kUnavailable, curl_easy_strerror(rc));
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  if (status < 200 || status >= 300) return MakeError(ErrorCode::kUnavailable, fmt::format("HTTP {}", status));
  return Ok();
}

}  // namespace certfleet::events
