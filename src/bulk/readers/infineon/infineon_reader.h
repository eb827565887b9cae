#pragma once

#include <memory>
#include <string>

#include "bulk/manifest_reader.h"

namespace certfleet::bulk::readers {

// Infineon's OPTIGA Trust M reel bundle: a 7z archive holding one 7z per bundle type
// (<reel>_<GUID>_E0E0_Certs.7z, …_E0E1_…, …_E0E2_…), each with one PEM certificate per file.
// `bundle_type` (E0E0, E0E1 or E0E2) chooses the inner archive read; thing name = subject CN.
// The outer archive is read as a stream and an inner one whole (at most
// limits.max_entry_bytes); `limits` stop archive bombs.
Result<std::unique_ptr<ManifestReader>> OpenInfineonManifest(const std::string& path, const std::string& bundle_type,
                                                             const ArchiveLimits& limits);

}  // namespace certfleet::bulk::readers
