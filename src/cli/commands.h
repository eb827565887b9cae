#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bulk/import_service.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/result.h"
#include "renewal/host_service.h"
#include "renewal/renewal_service.h"
#include "store/store.h"

namespace certfleet::cli {

// How the audit log names changes made from the command line: cli:<user>.
std::string CliActor();

// Opens the configured store and applies pending migrations.
Result<std::unique_ptr<store::Store>> OpenStore(const Config& config);

// The import service's options from the bulk.* keys; Microchip signers from `verifier_dir`,
// or from bulk.verifier_dir when it is "".
Result<bulk::ImportService::Options> ImportOptions(const Config& config, const std::string& verifier_dir);

// The items of a comma-separated list, trimmed; empty ones dropped.
std::vector<std::string> SplitList(const std::string& s);

// The host service's options from the renewal.* keys, checked.
Result<renewal::HostService::Options> HostOptions(const Config& config);
// The renewal workflow's options from the renewal.* keys (the config checked their ranges).
renewal::RenewalService::Options RenewalOptions(const Config& config);

// Each command returns the process exit code; errors go to stderr.
int Init(const Config& config, const Clock& clock);
int Serve(const Config& config, const Clock& clock);

// What `certfleet import` was given.
struct ImportArgs {
  std::string file;
  std::string supplier;
  std::string profile;
  std::string bundle_type;
  std::string verifier_dir;  // "" : bulk.verifier_dir
  int64_t resume_id = 0;     // an import to go on with instead of a new one
};
int Import(const Config& config, const Clock& clock, const ImportArgs& args);
// Prints a new single-use enrollment token for the host's agent.
int HostToken(const Config& config, const Clock& clock, const std::string& host_id);

}  // namespace certfleet::cli
