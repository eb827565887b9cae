#include "core/files.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/crypto.h"

namespace certfleet {

Result<void> WriteFileAtomically(const std::filesystem::path& path, std::string_view data, mode_t mode) {
  std::error_code ec;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
  if (ec) {
    return MakeError(ErrorCode::kUnavailable,
                     fmt::format("creating {}: {}", path.parent_path().string(), ec.message()));
  }
  const std::string tmp = path.string() + ".new-" + RandomToken(6);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return MakeError(ErrorCode::kUnavailable, fmt::format("creating {}: {}", tmp, std::strerror(errno)));
  bool ok = ::fchmod(fd, mode) == 0;
  for (size_t done = 0; ok && done < data.size();) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    ok = n > 0;
    done += ok ? static_cast<size_t>(n) : 0;
  }
  ok = ok && ::fsync(fd) == 0;
  ok = (::close(fd) == 0) && ok;
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    return MakeError(ErrorCode::kUnavailable, fmt::format("writing {}: {}", path.string(), why));
  }
  return Ok();
}

Result<std::string> ReadFile(const std::filesystem::path& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec))
      return MakeError(ErrorCode::kNotFound, fmt::format("no file {}", path.string()));
    return MakeError(ErrorCode::kUnavailable, fmt::format("reading {}: {}", path.string(), std::strerror(errno)));
  }
  std::string out;
  char buf[8192];
  while (in.read(buf, sizeof(buf)) || in.gcount() > 0) {
    out.append(buf, static_cast<size_t>(in.gcount()));
    if (out.size() > max_bytes) {
      return MakeError(ErrorCode::kInvalidArgument,
                       fmt::format("{} is larger than {} bytes", path.string(), max_bytes));
    }
  }
  if (in.bad()) return MakeError(ErrorCode::kUnavailable, fmt::format("reading {}", path.string()));
  return out;
}

}  // namespace certfleet
