// `certfleet serve`: the composition root (src/server) builds and runs everything.
#include "cli/commands.h"
#include "core/log.h"
#include "server/server.h"

namespace certfleet::cli {

int Serve(const Config& config, const Clock& clock) {
  if (auto served = server::Run(config, clock); !served.ok()) {
    log::Error("cannot serve", {{"error", served.error().message}});
    return 1;
  }
  return 0;
}

}  // namespace certfleet::cli
