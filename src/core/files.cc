#include "core/files.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>

#include "core/crypto.h"

namespace certfleet {

namespace {

bool WriteAll(int fd, std::string_view data) {
  for (size_t done = 0; done < data.size();) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Writes what `fill` writes to its descriptor into `path`, through a synced temporary file
// renamed into place (see WriteFileAtomically).
Result<void> ReplaceFile(const std::filesystem::path& path, mode_t mode, const std::function<bool(int)>& fill) {
  std::error_code ec;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
  if (ec) {
    return MakeError(ErrorCode::kUnavailable,
                     fmt::format("creating {}: {}", path.parent_path().string(), ec.message()));
  }
  const std::string tmp = path.string() + ".new-" + RandomToken(6);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return MakeError(ErrorCode::kUnavailable, fmt::format("creating {}: {}", tmp, std::strerror(errno)));
  bool ok = ::fchmod(fd, mode) == 0 && fill(fd) && ::fsync(fd) == 0;
  ok = (::close(fd) == 0) && ok;
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    return MakeError(ErrorCode::kUnavailable, fmt::format("writing {}: {}", path.string(), why));
  }
  return Ok();
}

}  // namespace

Result<void> WriteFileAtomically(const std::filesystem::path& path, std::string_view data, mode_t mode) {
  return ReplaceFile(path, mode, [data](int fd) { return WriteAll(fd, data); });
}

Result<void> CopyFileAtomically(const std::filesystem::path& from, const std::filesystem::path& to, mode_t mode) {
  const int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0)
    return MakeError(ErrorCode::kUnavailable, fmt::format("reading {}: {}", from.string(), std::strerror(errno)));
  Result<void> copied = ReplaceFile(to, mode, [in](int out) {
    char buf[1 << 16];
    for (;;) {
      const ssize_t n = ::read(in, buf, sizeof(buf));
      if (n == 0) return true;
      if (n < 0 || !WriteAll(out, std::string_view(buf, static_cast<size_t>(n)))) return false;
    }
  });
  ::close(in);
  return copied;
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
