#pragma once

#include <span>

#include "core/config.h"

namespace certfleet::blob {

// The configuration keys of object stores (blobs, s3.*): written once, here.
std::span<const ConfigKey> ConfigKeys();

}  // namespace certfleet::blob
