#pragma once

#include <span>

#include "core/config.h"

namespace certfleet::store {

// The configuration keys of the store (db, db_pool_size): written once, here.
std::span<const ConfigKey> ConfigKeys();

}  // namespace certfleet::store
