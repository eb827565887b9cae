#include "blob/local/local_blob_store.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace certfleet::blob::local {
namespace {

namespace fs = std::filesystem;

constexpr size_t kPageSize = 1000;  // as S3's ListObjectsV2

class LocalBlobStore final : public BlobStore {
 public:
  explicit LocalBlobStore(std::string root) : root_(std::move(root)) {}

  Result<void> List(std::string_view prefix, const PageFn& page) override {
    // Keys in order, as S3 lists them. Only the names are held, not the objects.
    std::vector<std::string> keys;
    std::error_code ec;
    if (!fs::exists(root_, ec)) return Ok();
    for (auto it = fs::recursive_directory_iterator(root_, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (!it->is_regular_file(ec)) continue;
      std::string key = fs::relative(it->path(), root_, ec).generic_string();
      if (key.starts_with(prefix) && key.find(".certfleet-tmp") == std::string::npos) keys.push_back(std::move(key));
    }
    if (ec) return MakeError(ErrorCode::kUnavailable, fmt::format("listing {}: {}", root_, ec.message()));
    std::sort(keys.begin(), keys.end());
    std::vector<ObjectInfo> batch;
    for (size_t i = 0; i < keys.size(); ++i) {
      struct stat st {};
      const std::string path = root_ + "/" + keys[i];
      if (stat(path.c_str(), &st) != 0) continue;  // removed since it was listed
      const int64_t mtime_ns = int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
      batch.push_back(ObjectInfo{keys[i], fmt::format("{:x}-{:x}", st.st_size, mtime_ns), mtime_ns / 1'000'000,
                                 static_cast<int64_t>(st.st_size)});
      if (batch.size() == kPageSize || i + 1 == keys.size()) {
        CF_RETURN_IF_ERROR(page(batch));
        batch.clear();
      }
    }
    return Ok();
  }

  Result<std::string> Get(std::string_view key, size_t max_bytes) override {
    CF_ASSIGN_OR_RETURN(const uintmax_t size, Size(key, max_bytes));
    const std::string path = fmt::format("{}/{}", root_, key);
    std::ifstream in(path, std::ios::binary);
    std::string data(size, '\0');
    if (!in.read(data.data(), static_cast<std::streamsize>(size))) {
      return MakeError(ErrorCode::kUnavailable, fmt::format("reading {} failed", key));
    }
    return data;
  }

  Result<void> GetToFile(std::string_view key, const std::string& path, size_t max_bytes) override {
    CF_RETURN_IF_ERROR(Size(key, max_bytes));
    std::error_code ec;
    fs::copy_file(fmt::format("{}/{}", root_, key), path, fs::copy_options::overwrite_existing, ec);
    if (!ec) return Ok();
    const std::string why = ec.message();
    fs::remove(path, ec);
    return MakeError(ErrorCode::kUnavailable, fmt::format("copying {} to {}: {}", key, path, why));
  }

  Result<void> Put(std::string_view key, std::string_view bytes) override {
    return Write(key, [&](const fs::path& tmp) {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      return static_cast<bool>(out.write(bytes.data(), static_cast<std::streamsize>(bytes.size())) && out.flush());
    });
  }

  Result<void> PutFile(std::string_view key, const std::string& from) override {
    return Write(key, [&](const fs::path& tmp) {
      std::error_code ec;
      return fs::copy_file(from, tmp, fs::copy_options::overwrite_existing, ec);
    });
  }

  Result<void> Delete(std::string_view key) override {
    CF_RETURN_IF_ERROR(CheckKey(key));
    std::error_code ec;
    if (!fs::remove(fs::path(root_) / std::string(key), ec) && ec) {
      return MakeError(ErrorCode::kUnavailable, fmt::format("removing {}: {}", key, ec.message()));
    }
    return Ok();
  }

  std::string Describe() const override { return "file://" + root_; }

 private:
  // The object's size; kNotFound, or kResourceExhausted when over `max_bytes`.
  Result<uintmax_t> Size(std::string_view key, size_t max_bytes) const {
    CF_RETURN_IF_ERROR(CheckKey(key));
    std::error_code ec;
    const uintmax_t size = fs::file_size(fmt::format("{}/{}", root_, key), ec);
    if (ec) {
      if (ec == std::errc::no_such_file_or_directory) {
        return MakeError(ErrorCode::kNotFound, fmt::format("no object {}", key));
      }
      return MakeError(ErrorCode::kUnavailable, fmt::format("reading {}: {}", key, ec.message()));
    }
    if (size > max_bytes) {
      return MakeError(ErrorCode::kResourceExhausted, fmt::format("{} is larger than {} bytes", key, max_bytes));
    }
    return size;
  }

  // Writes the object aside with `fill` and renames it into place, so that a reader never
  // sees half an object.
  template <typename Fill>
  Result<void> Write(std::string_view key, const Fill& fill) {
    CF_RETURN_IF_ERROR(CheckKey(key));
    const fs::path path = fs::path(root_) / std::string(key);
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    const fs::path tmp = path.string() + ".certfleet-tmp";
    if (!fill(tmp)) {
      fs::remove(tmp, ec);
      return MakeError(ErrorCode::kUnavailable, fmt::format("writing {} failed", key));
    }
    fs::rename(tmp, path, ec);
    if (ec) return MakeError(ErrorCode::kUnavailable, fmt::format("writing {}: {}", key, ec.message()));
    return Ok();
  }

  const std::string root_;
};

}  // namespace

std::unique_ptr<BlobStore> OpenLocalBlobStore(std::string root) {
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  return std::make_unique<LocalBlobStore>(std::move(root));
}

}  // namespace certfleet::blob::local
