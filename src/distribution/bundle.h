#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace certfleet::distribution {

struct ZipEntry {
  std::string name;  // path inside the ZIP
  std::string_view data;
};

// An upper bound of the bytes one entry adds to a ZIP: local and central headers with the
// name twice, a data descriptor, AES-256 salt, verifier and MAC with their extra fields,
// and deflate's worst-case growth of the data.
uint64_t ZipEntryBound(size_t name_bytes, uint64_t data_bytes);
// The end-of-central-directory record and a little slack.
inline constexpr uint64_t kZipEndBound = 128;

// Writes the entries into a new ZIP at `path` (deflated; AES-256 encrypted when `password`
// is set) and returns its size. kUnavailable when the file cannot be written (disk full,
// folder gone); the partial file is removed.
Result<uint64_t> WriteZip(const std::string& path, const std::vector<ZipEntry>& entries,
                          const std::optional<std::string>& password);

}  // namespace certfleet::distribution
