#pragma once

#include <memory>
#include <string>

#include "bulk/manifest_reader.h"

namespace certfleet::bulk::readers {

// Thingpress's "generated" format: one certificate per line, the line being the base64 of
// its PEM text. Thing name = the subject CN, else Device-<first 8 hex of its SHA-256>.
Result<std::unique_ptr<ManifestReader>> OpenGeneratedManifest(const std::string& path);

}  // namespace certfleet::bulk::readers
