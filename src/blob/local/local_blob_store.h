#pragma once

#include <memory>
#include <string>

#include "blob/blob_store.h"

namespace certfleet::blob::local {

// Objects as files under a root folder. The ETag is made of the file's size and
// modification time, which change whenever a writer replaces it.
std::unique_ptr<BlobStore> OpenLocalBlobStore(std::string root);

}  // namespace certfleet::blob::local
