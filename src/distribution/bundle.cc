#include "distribution/bundle.h"

#include <fmt/format.h>
#include <zip.h>

#include <filesystem>

namespace certfleet::distribution {
namespace {

// Local header 30 + central header 46 + data descriptor 16 + AES extra fields 2 x 11 +
// AES salt 16, verifier 2 and MAC 10, rounded up.
constexpr uint64_t kEntryFixedBytes = 160;
// Deflate's stored blocks add 5 bytes per 16 KiB at worst; 1/1000 of the data covers that.
constexpr uint64_t kDeflateGrowthDivisor = 1000;
constexpr uint64_t kDeflateSlack = 16;

}  // namespace

uint64_t ZipEntryBound(size_t name_bytes, uint64_t data_bytes) {
  return kEntryFixedBytes + 2 * name_bytes + data_bytes + data_bytes / kDeflateGrowthDivisor + kDeflateSlack;
}

Result<uint64_t> WriteZip(const std::string& path, const std::vector<ZipEntry>& entries,
                          const std::optional<std::string>& password) {
  int err = 0;
  zip_t* za = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  if (za == nullptr) {
    zip_error_t ze;
    zip_error_init_with_code(&ze, err);
    Error e = MakeError(ErrorCode::kUnavailable, fmt::format("creating {}: {}", path, zip_error_strerror(&ze)));
    zip_error_fini(&ze);
    return e;
  }
  auto fail = [&](std::string_view what) {
    Error e = MakeError(ErrorCode::kUnavailable, fmt::format("{} in {}: {}", what, path, zip_strerror(za)));
    zip_discard(za);
    std::error_code ec;
    std::filesystem::remove(path, ec);
    return e;
  };
  for (const auto& entry : entries) {
    zip_source_t* src = zip_source_buffer(za, entry.data.data(), entry.data.size(), 0);
    if (src == nullptr) return fail("adding " + entry.name);
    const zip_int64_t idx = zip_file_add(za, entry.name.c_str(), src, ZIP_FL_ENC_UTF_8);
    if (idx < 0) {
      zip_source_free(src);
      return fail("adding " + entry.name);
    }
    if (password &&
        zip_file_set_encryption(za, static_cast<zip_uint64_t>(idx), ZIP_EM_AES_256, password->c_str()) != 0) {
      return fail("encrypting " + entry.name);
    }
  }
  if (zip_close(za) != 0) return fail("writing");
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) return MakeError(ErrorCode::kUnavailable, fmt::format("{}: {}", path, ec.message()));
  return static_cast<uint64_t>(size);
}

}  // namespace certfleet::distribution
