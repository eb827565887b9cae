#pragma once

#include <memory>
#include <string>

#include "blob/blob_store.h"

namespace certfleet::blob::s3 {

struct S3Location {
  std::string endpoint;  // scheme://host[:port], without a trailing slash
  std::string region;
  std::string bucket;
};

// A bucket of an S3-compatible store, addressed path-style (endpoint/bucket/key), requests
// signed with AWS Signature V4 by libcurl.
std::unique_ptr<BlobStore> OpenS3BlobStore(S3Location location, S3Credentials credentials);

// The page of a ListObjectsV2 answer, and the continuation token when it is truncated.
struct ListPage {
  std::vector<ObjectInfo> objects;
  std::string next_token;  // empty when this was the last page
};
Result<ListPage> ParseListObjectsV2(std::string_view xml);

}  // namespace certfleet::blob::s3
