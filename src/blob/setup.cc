#include "blob/setup.h"

namespace certfleet::blob {
namespace {

constexpr ConfigKey kKeys[] = {
    {"blobs", ConfigType::kUrl, "file://{data_dir}/blobs",
     "Object store certfleet publishes to (each re-signed CRL as crl/<ca fqdn>.crl): file://PATH or "
     "s3://BUCKET?endpoint=...&region=..."},
    {"s3.access_key_id", ConfigType::kString, "", "S3 access key; empty: AWS_ACCESS_KEY_ID."},
    {"s3.secret_access_key", ConfigType::kSecret, "", "S3 secret key; empty: AWS_SECRET_ACCESS_KEY."},
    {"s3.session_token", ConfigType::kSecret, "", "S3 session token; empty: AWS_SESSION_TOKEN."},
};

}  // namespace

std::span<const ConfigKey> ConfigKeys() { return kKeys; }

}  // namespace certfleet::blob
