#pragma once

#include <span>

#include "blob/blob_store.h"
#include "core/config.h"

namespace certfleet::blob {

// The configuration keys of object stores (blobs, s3.*): written once, here.
std::span<const ConfigKey> ConfigKeys();
// The S3 keys, or their credentials file, from the s3.* keys.
S3Credentials S3CredentialsFrom(const Config& config);

}  // namespace certfleet::blob
