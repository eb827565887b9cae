#include "pki/setup.h"

namespace certfleet::pki {
namespace {

constexpr ConfigKey kKeys[] = {
    {"master_key", ConfigType::kSecret, "",
     "Master key encrypting CA keys (at least 32 characters); empty: master_key_file."},
    {"master_key_file", ConfigType::kPath, "{data_dir}/master.key",
     "File holding the master key; `certfleet init` creates it (0600)."},
    {"key_dir", ConfigType::kPath, "{data_dir}/keys", "Folder of the encrypted CA keys (PKCS#8, AES-256)."},
};

}  // namespace

std::span<const ConfigKey> ConfigKeys() { return kKeys; }

}  // namespace certfleet::pki
