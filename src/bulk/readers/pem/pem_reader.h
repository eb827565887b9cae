#pragma once

#include <memory>
#include <string>

#include "bulk/manifest_reader.h"

namespace certfleet::bulk::readers {

// A file of concatenated PEM certificates (anything between them is ignored); thing name =
// the subject CN.
Result<std::unique_ptr<ManifestReader>> OpenPemManifest(const std::string& path);

}  // namespace certfleet::bulk::readers
