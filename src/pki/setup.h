#pragma once

#include <span>

#include "core/config.h"

namespace certfleet::pki {

// The configuration keys of CA keys (master_key, master_key_file, key_dir): written once, here.
std::span<const ConfigKey> ConfigKeys();

}  // namespace certfleet::pki
