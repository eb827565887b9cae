#include "pki/file/file_key_backend.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/pem.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/crypto.h"

namespace certfleet::pki::file {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kRefPrefix = "file:";
constexpr size_t kMasterKeyBytes = 32;     // 256 bits
constexpr size_t kMinMasterKeyChars = 32;  // refuse short passphrases given by hand

// Writes a file only its owner may read, all at once; fails if it exists.
Result<void> WritePrivateFile(const std::string& path, const std::string& data) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return MakeError(ErrorCode::kUnavailable, fmt::format("cannot create {}: {}", path, strerror(errno)));
  const bool ok = write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()) && fsync(fd) == 0;
  close(fd);
  if (!ok) {
    unlink(path.c_str());
    return MakeError(ErrorCode::kUnavailable, "cannot write " + path);
  }
  return Ok();
}

}  // namespace

FileKeyBackend::FileKeyBackend(std::string dir, std::string master_key)
    : dir_(std::move(dir)), master_key_(std::move(master_key)) {}

Result<std::string> FileKeyBackend::PathOf(std::string_view ref) const {
  if (!ref.starts_with(kRefPrefix)) return MakeError(ErrorCode::kInternal, "not a file key reference");
  std::string_view name = ref.substr(kRefPrefix.size());
  if (name.empty() || name.find('/') != std::string_view::npos || name.find("..") != std::string_view::npos) {
    return MakeError(ErrorCode::kInternal, "bad file key reference");
  }
  return dir_ + "/" + std::string(name) + ".p8.pem";
}

Result<std::string> FileKeyBackend::Generate(KeyType type, std::string_view backend) {
  CF_ASSIGN_OR_RETURN(PkeyPtr key, GenerateKey(type));
  return Put(key.get(), backend);
}

Result<std::string> FileKeyBackend::Put(EVP_PKEY* key, std::string_view backend) {
  if (!backend.empty() && backend != "file") {
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("key backend '{}' is not configured", backend));
  }
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return MakeError(ErrorCode::kUnavailable, fmt::format("creating {}: {}", dir_, ec.message()));
  fs::permissions(dir_, fs::perms::owner_all, ec);
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PKCS8PrivateKey(bio.get(), key, EVP_aes_256_cbc(), master_key_.data(),
                                            static_cast<int>(master_key_.size()), nullptr, nullptr) != 1) {
    return OpenSslError("encrypting the CA key");
  }
  const std::string ref = std::string(kRefPrefix) + HexEncode(RandomBytes(16));
  CF_ASSIGN_OR_RETURN(std::string path, PathOf(ref));
  CF_RETURN_IF_ERROR(WritePrivateFile(path, BioToString(bio.get())));
  return ref;
}

Result<std::shared_ptr<EVP_PKEY>> FileKeyBackend::Get(std::string_view ref) {
  {
    std::lock_guard lock(mu_);
    if (auto it = cache_.find(ref); it != cache_.end()) return it->second;
  }
  CF_ASSIGN_OR_RETURN(std::string path, PathOf(ref));
  std::ifstream in(path, std::ios::binary);
  if (!in) return MakeError(ErrorCode::kUnavailable, "the CA key file " + path + " is missing");
  std::string pem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  std::string pass = master_key_;
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, pass.data());
  if (!key) return OpenSslError("decrypting " + path + " (wrong master key?)", ErrorCode::kUnavailable);
  std::shared_ptr<EVP_PKEY> shared(key, EVP_PKEY_free);
  std::lock_guard lock(mu_);
  cache_.emplace(std::string(ref), shared);
  return shared;
}

Result<void> FileKeyBackend::Remove(std::string_view ref) {
  CF_ASSIGN_OR_RETURN(std::string path, PathOf(ref));
  {
    std::lock_guard lock(mu_);
    if (auto it = cache_.find(ref); it != cache_.end()) cache_.erase(it);
  }
  std::error_code ec;
  fs::remove(path, ec);
  return Ok();
}

Result<std::string> LoadMasterKey(const std::string& from_env, const std::string& path, bool create) {
  if (!from_env.empty()) {
    if (from_env.size() < kMinMasterKeyChars) {
      return MakeError(ErrorCode::kInvalidArgument,
                       fmt::format("CERTFLEET_MASTER_KEY must have at least {} characters", kMinMasterKeyChars));
    }
    return from_env;
  }
  if (fs::exists(path)) {
    // It opens every CA key: no user outside its owner and group may read it (a group lets a
    // root-owned file serve a service account: 0640).
    std::error_code ec;
    const fs::perms perms = fs::status(path, ec).permissions();
    if (!ec && (perms & fs::perms::others_all) != fs::perms::none) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       path + " (the master key) may be read by any user: chmod o-rwx it (0600 or 0640)");
    }
    std::ifstream in(path);
    std::string key;
    std::getline(in, key);
    if (!key.empty() && key.back() == '\r') key.pop_back();  // written on Windows
    if (key.size() < kMinMasterKeyChars)
      return MakeError(ErrorCode::kFailedPrecondition, path + " holds no master key");
    return key;
  }
  if (!create) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     "no master key: run certfleet init, or set CERTFLEET_MASTER_KEY or master_key_file");
  }
  std::error_code ec;
  if (fs::path(path).has_parent_path()) fs::create_directories(fs::path(path).parent_path(), ec);
  const std::string key = HexEncode(RandomBytes(kMasterKeyBytes));
  CF_RETURN_IF_ERROR(WritePrivateFile(path, key + "\n"));
  return key;
}

}  // namespace certfleet::pki::file
