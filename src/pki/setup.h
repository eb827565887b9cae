#pragma once

#include <memory>
#include <span>
#include <string>

#include "core/config.h"
#include "core/result.h"
#include "pki/key_backend.h"

namespace certfleet::pki {

// The configuration keys of CA keys (master_key, master_key_file, key_dir, ca.key_backend,
// pkcs11.*): written once, here.
std::span<const ConfigKey> ConfigKeys();

// The key backends pki holds: always the file backend (under key_dir, with `master_key`), and
// the PKCS#11 token when pkcs11.module is set, logged in to at once; new keys go to
// `default_backend` (issuance::OpenKeyBackends adds the database's and chooses it).
// kFailedPrecondition saying what is wrong: a module, token or PIN that does not work, a PIN
// file others may read, pkcs11 chosen without a module.
Result<std::unique_ptr<KeyBackends>> OpenKeyBackends(const Config& config, const std::string& master_key,
                                                     const std::string& default_backend);

}  // namespace certfleet::pki
