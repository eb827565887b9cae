#include "store/setup.h"

namespace certfleet::store {
namespace {

constexpr ConfigKey kKeys[] = {
    {"db", ConfigType::kUrl, "sqlite://{data_dir}/certfleet.db",
     "Store: sqlite://PATH (embedded) or postgresql://user:pass@host:port/db."},
    {"db_pool_size", ConfigType::kInt, "8", "Database connections kept open per node.", 1, 256},
};

}  // namespace

std::span<const ConfigKey> ConfigKeys() { return kKeys; }

}  // namespace certfleet::store
