#include "pki/setup.h"

#include <fmt/format.h>
#include <openssl/crypto.h>

#include <algorithm>
#include <filesystem>

#include "core/files.h"
#include "pki/file/file_key_backend.h"
#include "pki/pkcs11/pkcs11_key_backend.h"

namespace certfleet::pki {
namespace {

constexpr ConfigKey kKeys[] = {
    {"master_key", ConfigType::kSecret, "",
     "Master key encrypting CA keys (at least 32 characters); empty: master_key_file."},
    {"master_key_file", ConfigType::kPath, "{data_dir}/master.key",
     "File holding the master key; `certfleet init` creates it (0600). Refused if users outside its owner and group "
     "may read it."},
    {"key_dir", ConfigType::kPath, "{data_dir}/keys", "Folder of the encrypted CA keys (PKCS#8, AES-256)."},
    {"ca.key_backend", ConfigType::kString, "",
     "Where a new CA's key is made unless its request names one: `db` (the database, sealed with the master "
     "key), `file` (key_dir) or `pkcs11` (the token); empty: db when `db` is PostgreSQL, file on SQLite."},
    {"pkcs11.module", ConfigType::kPath, "",
     "PKCS#11 module of the HSM for CA keys (e.g. /usr/lib/softhsm/libsofthsm2.so); empty: no HSM."},
    {"pkcs11.token_label", ConfigType::kString, "certfleet", "Label of the PKCS#11 token that holds CA keys."},
    {"pkcs11.pin_file", ConfigType::kPath, "",
     "File holding the token's user PIN (mode 0600 or 0400); the PIN is never taken from the config itself."},
    {"pkcs11.max_sessions", ConfigType::kInt, "32",
     "Sessions opened on the token at most (fewer if the token reports a lower limit); signers beyond them wait "
     "up to 10 s for a free one.",
     1, 1024},
};

// A PIN longer than this is not a PIN but the wrong file.
constexpr size_t kMaxPinBytes = 256;

Result<std::string> ReadPin(const std::string& path) {
  namespace fs = std::filesystem;
  if (path.empty()) return MakeError(ErrorCode::kFailedPrecondition, "pkcs11.module is set but pkcs11.pin_file is not");
  std::error_code ec;
  const fs::perms perms = fs::status(path, ec).permissions();
  if (ec) return MakeError(ErrorCode::kFailedPrecondition, fmt::format("cannot read pkcs11.pin_file {}", path));
  if ((perms & (fs::perms::group_all | fs::perms::others_all)) != fs::perms::none) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     fmt::format("pkcs11.pin_file {} may be read by others: chmod 600 it", path));
  }
  CF_ASSIGN_OR_RETURN(std::string pin, ReadFile(path, kMaxPinBytes));
  pin.resize(std::min(pin.find_first_of("\r\n"), pin.size()));  // the first line
  if (pin.empty())
    return MakeError(ErrorCode::kFailedPrecondition, fmt::format("pkcs11.pin_file {} holds no PIN", path));
  return pin;
}

}  // namespace

std::span<const ConfigKey> ConfigKeys() { return kKeys; }

Result<std::unique_ptr<KeyBackends>> OpenKeyBackends(const Config& config, const std::string& master_key,
                                                     const std::string& default_backend) {
  auto backends = std::make_unique<KeyBackends>(default_backend);
  backends->Add("file", std::make_unique<file::FileKeyBackend>(config.Get("key_dir"), master_key));
  if (!config.Get("pkcs11.module").empty()) {
    pkcs11::Options options{config.Get("pkcs11.module"),
                            config.Get("pkcs11.token_label"),
                            {},
                            static_cast<size_t>(config.GetInt("pkcs11.max_sessions"))};
    CF_ASSIGN_OR_RETURN(options.pin, ReadPin(config.Get("pkcs11.pin_file")));
    auto token = pkcs11::Pkcs11KeyBackend::Open(options);
    OPENSSL_cleanse(options.pin.data(), options.pin.size());
    if (!token.ok()) return token.error();
    backends->Add("pkcs11", std::move(*token));
  }
  if (default_backend == "pkcs11" && config.Get("pkcs11.module").empty()) {
    return MakeError(ErrorCode::kFailedPrecondition, "ca.key_backend is pkcs11 but pkcs11.module is not set");
  }
  return backends;
}

}  // namespace certfleet::pki
