#pragma once

#include <memory>
#include <string>

#include "bulk/manifest_reader.h"

namespace certfleet::bulk::readers {

// Espressif's CSV: a header row MAC,cn,cert, then one row per chip with its certificate as a
// quoted multi-line PEM. Thing name = MAC.
Result<std::unique_ptr<ManifestReader>> OpenEspressifManifest(const std::string& path);

}  // namespace certfleet::bulk::readers
