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
    {"s3.credentials_file", ConfigType::kPath, "",
     "AWS CLI credentials file the S3 keys come from instead (re-read when it changes: temporary credentials "
     "renewed by a helper); empty: the keys above."},
    {"s3.profile", ConfigType::kString, "default", "The profile of s3.credentials_file."},
};

}  // namespace

std::span<const ConfigKey> ConfigKeys() { return kKeys; }

S3Credentials S3CredentialsFrom(const Config& config) {
  S3Credentials c;
  c.access_key_id = config.Get("s3.access_key_id");
  c.secret_access_key = config.Get("s3.secret_access_key");
  c.session_token = config.Get("s3.session_token");
  c.credentials_file = config.Get("s3.credentials_file");
  c.profile = config.Get("s3.profile");
  return c;
}

}  // namespace certfleet::blob
