#pragma once

#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

#include "core/result.h"

namespace certfleet {

// Writes `data` to `path` with exactly `mode` (whatever the umask): through a new
// temporary file in the same folder, synced and renamed into place, so that a reader (or a
// crash) sees the old file whole or the new one whole, never half of either. Creates the
// folder if missing. kUnavailable naming the file otherwise.
Result<void> WriteFileAtomically(const std::filesystem::path& path, std::string_view data, mode_t mode);
// The same with the bytes of the file `from`, read as they are copied (any size).
Result<void> CopyFileAtomically(const std::filesystem::path& from, const std::filesystem::path& to, mode_t mode);

// The whole file, if it is at most `max_bytes`: kNotFound when it does not exist,
// kInvalidArgument when it is larger, kUnavailable when it cannot be read.
Result<std::string> ReadFile(const std::filesystem::path& path, size_t max_bytes);

}  // namespace certfleet
