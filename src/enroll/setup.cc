#include "enroll/setup.h"

namespace certfleet::enroll {
namespace {

constexpr ConfigKey kKeys[] = {
    {"enroll.retry_after_seconds", ConfigType::kInt, "60",
     "EST/CMP: how long a client whose request waits for an operator's approval is told to wait before asking "
     "again (Retry-After).",
     1, 86400},
};

}  // namespace

std::span<const ConfigKey> ConfigKeys() { return kKeys; }

EnrollService::Options EnrollOptions(const Config& config, std::string_view master_key,
                                     std::chrono::hours supersede_grace) {
  EnrollService::Options o;
  o.master_key = std::string(master_key);
  o.supersede_grace = supersede_grace;
  o.retry_after = std::chrono::seconds(config.GetInt("enroll.retry_after_seconds"));
  return o;
}

}  // namespace certfleet::enroll
