#include "broker/setup.h"

namespace certfleet::broker {
namespace {

constexpr ConfigKey kKeys[] = {
    {"broker.snapshot_min_rebuild_ms", ConfigType::kInt, "1000",
     "Brokers: the least milliseconds between two rebuilds of the broker snapshot, however often the registry "
     "changes (a change reaches a broker within this plus the broker's poll interval).",
     100, 600000},
    {"broker.snapshot_max_age_seconds", ConfigType::kInt, "300",
     "Brokers: seconds after which the broker snapshot is rebuilt even when the audit log shows no change.", 1, 86400},
};

}  // namespace

std::span<const ConfigKey> ConfigKeys() { return kKeys; }

BrokerService::Options BrokerOptions(const Config& config) {
  BrokerService::Options o;
  o.min_rebuild = std::chrono::milliseconds(config.GetInt("broker.snapshot_min_rebuild_ms"));
  o.max_age = std::chrono::seconds(config.GetInt("broker.snapshot_max_age_seconds"));
  return o;
}

}  // namespace certfleet::broker
