#include "jobs/setup.h"

namespace certfleet::jobs {
namespace {

constexpr ConfigKey kKeys[] = {
    {"jobs.workers", ConfigType::kInt, "4", "Jobs run at once by this node, over all kinds.", 1, 1024},
    {"jobs.lease_seconds", ConfigType::kInt, "60",
     "A running job's lease; renewed while it runs, re-run by another worker once expired.", 5, 86400},
    {"jobs.poll_ms", ConfigType::kInt, "500", "How often idle workers look for due jobs, in milliseconds.", 10, 60000},
    {"jobs.retention_days", ConfigType::kInt, "7",
     "Finished (done) jobs older than this are deleted daily; dead jobs are kept.", 1, 3650},
};

}  // namespace

std::span<const ConfigKey> ConfigKeys() { return kKeys; }

WorkerPool::Options PoolOptions(const Config& config, std::string node_id) {
  WorkerPool::Options o;
  o.node_id = std::move(node_id);
  o.workers = static_cast<int>(config.GetInt("jobs.workers"));
  o.lease = std::chrono::seconds(config.GetInt("jobs.lease_seconds"));
  o.poll = std::chrono::milliseconds(config.GetInt("jobs.poll_ms"));
  return o;
}

}  // namespace certfleet::jobs
