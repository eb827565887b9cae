#pragma once

#include <span>

#include "core/config.h"

namespace certfleet::mail {

// The configuration keys of mail: written once, here.
std::span<const ConfigKey> ConfigKeys();

}  // namespace certfleet::mail
