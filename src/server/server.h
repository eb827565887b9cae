#pragma once

#include <memory>
#include <vector>

#include "core/clock.h"
#include "core/config.h"
#include "core/result.h"
#include "store/store.h"

namespace certfleet::server {

// The composition root: the one place that knows every module. Each module gives its
// options from the configuration and registers its own jobs and schedules (its setup.h);
// this builds the services, wires their routes, jobs and schedules, and runs them.

// Every configuration key of the process: core's and each module's.
std::vector<ConfigKey> ConfigKeys();

// Opens the configured store and applies pending migrations.
Result<std::unique_ptr<store::Store>> OpenStore(const Config& config);

// Serves HTTPS, the jobs and the schedules until SIGTERM or SIGINT; an error if certfleet
// cannot start (the store, a key, a port, a setting), naming what.
Result<void> Run(const Config& config, const Clock& clock);

}  // namespace certfleet::server
