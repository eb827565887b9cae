#pragma once

#include <span>
#include <string>

#include "core/config.h"
#include "jobs/worker_pool.h"

namespace certfleet::jobs {

// The configuration keys of the job queue (jobs.*): written once, here.
std::span<const ConfigKey> ConfigKeys();
// The worker pool's options from the jobs.* keys, for the node `node_id`.
WorkerPool::Options PoolOptions(const Config& config, std::string node_id);

}  // namespace certfleet::jobs
