#pragma once

#include <span>

#include "core/config.h"
#include "core/result.h"
#include "events/webhooks.h"
#include "jobs/scheduler.h"
#include "jobs/worker_pool.h"

namespace certfleet::events {

// The configuration keys of webhooks (webhooks.*): written once, here.
std::span<const ConfigKey> ConfigKeys();

// The webhooks' options from the webhooks.* keys; kInvalidArgument for a URL that is not http(s).
Result<WebhookDispatcher::Options> WebhookOptions(const Config& config);
// Sends the event bus to the webhooks every webhooks.every_seconds, when any are configured.
Result<void> RegisterJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler, WebhookDispatcher& webhooks,
                          const Config& config);

}  // namespace certfleet::events
