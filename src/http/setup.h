#pragma once

#include <span>

#include "core/config.h"

namespace certfleet::http {

// The configuration keys of the HTTPS server (server.*) and API tokens (auth.*): written once, here.
std::span<const ConfigKey> ConfigKeys();

}  // namespace certfleet::http
