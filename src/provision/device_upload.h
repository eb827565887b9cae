#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.h"
#include "core/text.h"
#include "registry/objects.h"

namespace certfleet::provision {

using registry::IsValidDeviceId;
using registry::kMaxDeviceIdBytes;
// Longest batch name.
inline constexpr size_t kMaxBatchBytes = 128;

// One row of a device key upload, as given.
struct UploadRow {
  size_t number = 0;  // 1-based, the header row of a CSV not counted
  std::string device_id;
  std::string public_key_pem;
  std::string batch;    // "" when the row names none
  std::string problem;  // why the row cannot be read (wrong shape or type); "" when it can
};

enum class UploadFormat { kJson, kCsv };

// Calls `row` for every row of the upload, in order, and stops at the first error it
// returns. JSON: an array of {device_id, public_key_pem, batch?}. CSV (RFC 4180):
// device_id,public_key_pem[,batch] with the PEM quoted across lines; a first row naming the
// columns is skipped, and so are empty lines. A row of the wrong shape still reaches `row`,
// with `problem` saying what is wrong; only an upload that cannot be read as a whole (not
// JSON, not an array, a quote never closed) is an error, kInvalidArgument.
Result<void> ForEachUploadRow(std::string_view body, UploadFormat format,
                              const std::function<Result<void>(const UploadRow&)>& row);

}  // namespace certfleet::provision
