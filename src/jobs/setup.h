#pragma once

#include <span>

#include "core/config.h"

namespace certfleet::jobs {

// The configuration keys of the job queue (jobs.*): written once, here.
std::span<const ConfigKey> ConfigKeys();

}  // namespace certfleet::jobs
