#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string_view>

#include "core/result.h"

namespace certfleet {

// Writes `data` to `path` with exactly `mode` (whatever the umask): through a new
// temporary file in the same folder, synced and renamed into place, so that a reader (or a
// crash) sees the old file whole or the new one whole, never half of either. Creates the
// folder if missing. kUnavailable naming the file otherwise.
Result<void> WriteFileAtomically(const std::filesystem::path& path, std::string_view data, mode_t mode);

}  // namespace certfleet
