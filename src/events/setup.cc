#include "events/setup.h"

#include <fmt/format.h>

#include "core/log.h"

namespace certfleet::events {
namespace {

constexpr ConfigKey kKeys[] = {
    {"webhooks.urls", ConfigType::kUrl, "",
     "URLs (comma-separated, http:// or https://) each event of webhooks.events is POSTed to; empty: none."},
    {"webhooks.events", ConfigType::kString, "crl/published,renewal/failed,renewal/run-finished",
     "Event types sent to webhooks (comma-separated): crl/published, renewal/failed, renewal/run-finished, "
     "certificates/created, certificates/revoked."},
    {"webhooks.secret", ConfigType::kSecret, "",
     "Key of each webhook POST's X-Certfleet-Signature (sha256=HMAC-SHA256 of the body, hex); empty: unsigned."},
    {"webhooks.ca", ConfigType::kPath, "", "CA file trusted for https webhooks; empty: the system store."},
    {"webhooks.every_seconds", ConfigType::kInt, "5", "How often pending events are sent to webhooks.", 1, 3600},
};

}  // namespace

std::span<const ConfigKey> ConfigKeys() { return kKeys; }

Result<WebhookDispatcher::Options> WebhookOptions(const Config& config) {
  WebhookDispatcher::Options o{SplitList(config.Get("webhooks.urls")), SplitList(config.Get("webhooks.events")),
                               config.Get("webhooks.secret"), config.Get("webhooks.ca")};
  for (const auto& url : o.urls) {
    if (!url.starts_with("https://") && !url.starts_with("http://")) {
      return MakeError(ErrorCode::kInvalidArgument, fmt::format("webhooks.urls: {} is not an http(s) URL", url));
    }
  }
  return o;
}

Result<void> RegisterJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler, WebhookDispatcher& webhooks,
                          const Config& config) {
  if (config.Get("webhooks.urls").empty()) return Ok();
  CF_RETURN_IF_ERROR(webhooks.Subscribe());
  pool.Register(std::string(WebhookDispatcher::kJob), [&webhooks](jobs::JobContext&) -> Result<void> {
    CF_ASSIGN_OR_RETURN(int sent, webhooks.Deliver());
    if (sent > 0) log::Info("webhooks sent", {{"events", sent}});
    return Ok();
  });
  // The next firing is the retry: a URL that fails does not fail the job, so an endpoint
  // that is down leaves no dead job per firing (certfleet_webhook_failing shows it).
  return scheduler.Add("webhooks", fmt::format("@every {}s", config.GetInt("webhooks.every_seconds")),
                       WebhookDispatcher::kJob, 1);
}

}  // namespace certfleet::events
