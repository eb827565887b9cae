#include "bulk/readers/infineon/infineon_reader.h"

#include <archive.h>
#include <archive_entry.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

namespace certfleet::bulk::readers {
namespace {

constexpr size_t kReadBlockBytes = size_t{64} * 1024;
// A PEM file holds one device certificate.
constexpr uint64_t kMaxPemFileBytes = uint64_t{64} * 1024;

using ArchivePtr = std::unique_ptr<archive, decltype(&archive_read_free)>;

ArchivePtr NewReader() {
  ArchivePtr a(archive_read_new(), archive_read_free);
  if (a) {
    archive_read_support_format_7zip(a.get());
    archive_read_support_filter_all(a.get());
  }
  return a;
}

Error ArchiveError(archive* a, std::string_view what) {
  const char* msg = archive_error_string(a);
  return MakeError(ErrorCode::kInvalidArgument, fmt::format("{}: {}", what, msg ? msg : "unreadable"));
}

// An entry's name in UTF-8. libarchive converts names to the locale's character set, and
// certfleet runs in the C locale, where a name that is not ASCII (a datasheet's, say) cannot
// be converted: its header comes with ARCHIVE_WARN, which is no error, and the name is read
// in UTF-8 instead.
std::string NameOf(archive_entry* entry) {
  const char* utf8 = archive_entry_pathname_utf8(entry);
  const char* local = utf8 ? utf8 : archive_entry_pathname(entry);
  return local ? local : "";
}

class InfineonReader final : public ManifestReader {
 public:
  InfineonReader(ArchivePtr outer, std::string suffix, ArchiveLimits limits)
      : outer_(std::move(outer)), suffix_(std::move(suffix)), limits_(limits) {}

  Result<std::optional<ManifestEntry>> Next() override {
    if (done_) return std::optional<ManifestEntry>();
    for (;;) {
      if (inner_) {
        archive_entry* entry = nullptr;
        const int rc = archive_read_next_header(inner_.get(), &entry);
        if (rc == ARCHIVE_EOF) {
          inner_.reset();
          inner_data_.clear();
          continue;
        }
        if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) return ArchiveError(inner_.get(), "the bundle archive");
        CF_RETURN_IF_ERROR(Count(entry));
        const std::string name = NameOf(entry);
        if (!name.ends_with(".pem")) {  // folders, READMEs
          CF_RETURN_IF_ERROR(Drain(inner_.get(), name));
          continue;
        }
        CF_ASSIGN_OR_RETURN(std::string pem, ReadData(inner_.get(), kMaxPemFileBytes, name));
        ++index_;
        Result<std::string> der = CertificateDerFromPem(pem);
        if (!der.ok()) {
          ManifestEntry e;
          e.index = index_;
          e.problem = fmt::format("{}: {}", name, der.error().message);
          return std::optional<ManifestEntry>(std::move(e));
        }
        return std::optional<ManifestEntry>(EntryFromDer(index_, std::move(*der)));
      }
      archive_entry* entry = nullptr;
      const int rc = archive_read_next_header(outer_.get(), &entry);
      if (rc == ARCHIVE_EOF) {
        if (!found_) {
          return MakeError(ErrorCode::kInvalidArgument, fmt::format("the archive has no *{} bundle", suffix_));
        }
        done_ = true;  // libarchive may not be asked for another header after its end
        return std::optional<ManifestEntry>();
      }
      if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) return ArchiveError(outer_.get(), "the manifest archive");
      CF_RETURN_IF_ERROR(Count(entry));
      const std::string name = NameOf(entry);
      if (!name.ends_with(suffix_)) {  // other bundle types, the encrypted keys, README, a datasheet
        CF_RETURN_IF_ERROR(Drain(outer_.get(), name));
        continue;
      }
      if (limits_.max_depth < 2) {
        return MakeError(ErrorCode::kInvalidArgument, "the manifest nests archives deeper than allowed");
      }
      found_ = true;
      CF_ASSIGN_OR_RETURN(inner_data_, ReadData(outer_.get(), limits_.max_entry_bytes, name));
      inner_ = NewReader();
      if (!inner_ || archive_read_open_memory(inner_.get(), inner_data_.data(), inner_data_.size()) != ARCHIVE_OK) {
        return ArchiveError(inner_.get(), name);
      }
    }
  }

  double Fraction() override {
    if (done_) return 1.0;
    const la_int64_t read = archive_filter_bytes(outer_.get(), -1);
    return size_ > 0 && read > 0 ? std::min(1.0, static_cast<double>(read) / static_cast<double>(size_)) : 0.0;
  }

  uint64_t size_ = 0;  // of the file, for Fraction

 private:
  Result<void> Count(archive_entry* entry) {
    if (++entries_ > limits_.max_entries) {
      return MakeError(ErrorCode::kInvalidArgument,
                       fmt::format("the archive holds more than {} files", limits_.max_entries));
    }
    if (archive_entry_size_is_set(entry) && archive_entry_size(entry) > 0) {
      const auto size = static_cast<uint64_t>(archive_entry_size(entry));
      if (size > limits_.max_entry_bytes) {
        return MakeError(ErrorCode::kInvalidArgument,
                         fmt::format("a file in the archive expands to more than {} bytes", limits_.max_entry_bytes));
      }
    }
    return Ok();
  }

  // The current entry's data, at most `max` bytes; counted against max_expanded_bytes as it is
  // read (entry sizes in headers can lie). Without `keep`, read and dropped.
  Result<std::string> ReadData(archive* a, uint64_t max, const std::string& name, bool keep = true) {
    std::string out;
    uint64_t size = 0;
    char block[kReadBlockBytes];
    for (;;) {
      const la_ssize_t n = archive_read_data(a, block, sizeof(block));
      if (n < 0) return ArchiveError(a, name);
      if (n == 0) return out;
      size += static_cast<uint64_t>(n);
      expanded_ += static_cast<uint64_t>(n);
      if (size > max || expanded_ > limits_.max_expanded_bytes) {
        return MakeError(ErrorCode::kInvalidArgument,
                         fmt::format("{} expands past the archive limits ({} bytes a file, {} in all)", name, max,
                                     limits_.max_expanded_bytes));
      }
      if (keep) out.append(block, static_cast<size_t>(n));
    }
  }

  // Reads past an entry that is not needed instead of letting libarchive skip it: libarchive
  // 3.6.2 (Debian 12) loses its place when it skips, inside a solid 7z block, a file whose
  // size is a multiple of 64 KiB, and then fails on the next file with "Truncated 7-Zip file
  // body" (libarchive issues 2106 and 2245). Skipping inside a solid block decompresses the
  // entry anyway, so reading it costs no more.
  Result<void> Drain(archive* a, const std::string& name) {
    CF_RETURN_IF_ERROR(ReadData(a, limits_.max_entry_bytes, name, false));
    return Ok();
  }

  ArchivePtr outer_;
  ArchivePtr inner_{nullptr, archive_read_free};
  std::string inner_data_;  // the inner archive, which inner_ reads from memory
  const std::string suffix_;
  const ArchiveLimits limits_;
  bool found_ = false;
  bool done_ = false;
  size_t entries_ = 0;
  uint64_t expanded_ = 0;
  size_t index_ = 0;
};

}  // namespace

Result<std::unique_ptr<ManifestReader>> OpenInfineonManifest(const std::string& path, const std::string& bundle_type,
                                                             const ArchiveLimits& limits) {
  if (bundle_type != "E0E0" && bundle_type != "E0E1" && bundle_type != "E0E2") {
    return MakeError(ErrorCode::kInvalidArgument, "an Infineon import needs bundle_type E0E0, E0E1 or E0E2");
  }
  ArchivePtr outer = NewReader();
  if (!outer) return MakeError(ErrorCode::kInternal, "libarchive: out of memory");
  if (archive_read_open_filename(outer.get(), path.c_str(), kReadBlockBytes) != ARCHIVE_OK) {
    // libarchive's message names the path; the import's readers are told what failed, not where.
    return MakeError(ErrorCode::kNotFound,
                     fmt::format("cannot open the manifest archive: {}", std::strerror(archive_errno(outer.get()))));
  }
  auto reader = std::make_unique<InfineonReader>(std::move(outer), "_" + bundle_type + "_Certs.7z", limits);
  std::error_code ec;
  reader->size_ = std::filesystem::file_size(path, ec);
  return std::unique_ptr<ManifestReader>(std::move(reader));
}

}  // namespace certfleet::bulk::readers
