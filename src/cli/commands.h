#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/config.h"
#include "core/result.h"
#include "renewal/host_service.h"
#include "store/store.h"

namespace certfleet::cli {

// How the audit log names changes made from the command line: cli:<user>.
std::string CliActor();

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
// Prints a new single-use enrollment token for the host's agent; with `reactivate`, of a
// revoked or failed host made to enroll again.
int HostToken(const Config& config, const Clock& clock, const std::string& host_id, bool reactivate);
// Prints a new fleet enrollment credential's secret (`ttl` as "72h").
int HostCredential(const Config& config, const Clock& clock, renewal::CredentialSpec spec, const std::string& ttl);

// What `certfleet ca import` was given: --cert and --key, or --pkcs12.
struct CaImportArgs {
  std::string cert;
  std::string key;
  std::string pkcs12;
  std::string password_file;  // of an encrypted key or PKCS#12 file
  std::string chain;          // its issuers, when certfleet does not hold them already
  std::string fqdn;           // its name in the inventory; empty: its CN
  std::string key_backend;    // empty: ca.key_backend
};
int CaImport(const Config& config, const Clock& clock, const CaImportArgs& args);

// `certfleet migrate-keys`: the CA keys of key_dir moved into the database (ca.key_backend db).
int MigrateKeys(const Config& config, const Clock& clock);

// `certfleet acme eab create --profile P`: prints the kid and MAC key of a new binding once.
int AcmeEabCreate(const Config& config, const Clock& clock, const std::string& profile);
// Writes a consistent copy of the store (SQLite) or the pg_dump command to run (PostgreSQL),
// the CA key folder and a manifest into the new folder `dir`; the master key only if asked.
int Backup(const Config& config, const std::string& dir, bool include_master_key);
// Puts a backup in place in an empty data folder, after checking its checksums, and checks
// the restored store's row counts against the manifest.
int Restore(const Config& config, const std::string& dir);

}  // namespace certfleet::cli
