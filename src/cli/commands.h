#pragma once

#include <memory>
#include <string>

#include "core/clock.h"
#include "core/config.h"
#include "core/result.h"
#include "store/store.h"

namespace certfleet::cli {

// Opens the configured store and applies pending migrations.
Result<std::unique_ptr<store::Store>> OpenStore(const Config& config);

// Each command returns the process exit code; errors go to stderr.
int Init(const Config& config, const Clock& clock);
int Serve(const Config& config, const Clock& clock);

}  // namespace certfleet::cli
