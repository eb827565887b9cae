#include "events/setup.h"

#include <fmt/format.h>

#include "core/log.h"

namespace certfleet::events {

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
  // The next firing is the retry.
  return scheduler.Add("webhooks", fmt::format("@every {}s", config.GetInt("webhooks.every_seconds")),
                       WebhookDispatcher::kJob, 1);
}

}  // namespace certfleet::events
