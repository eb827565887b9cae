#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "pki/key_backend.h"

namespace certfleet::pki::file {

// CA keys as PKCS#8 files encrypted with AES-256-CBC under a key derived (PBKDF2) from
// the master key, one file per key (mode 0600) in `dir`. References read "file:<name>".
// Decrypted keys are cached in memory for signing. Thread-safe.
class FileKeyBackend final : public KeyBackend {
 public:
  FileKeyBackend(std::string dir, std::string master_key);
  // Makes the key in memory and writes it encrypted; `backend` is empty or "file".
  Result<std::string> Generate(KeyType type, std::string_view backend) override;
  Result<std::string> Put(EVP_PKEY* key, std::string_view backend) override;
  Result<std::shared_ptr<EVP_PKEY>> Get(std::string_view ref) override;
  Result<void> Remove(std::string_view ref) override;

 private:
  Result<std::string> PathOf(std::string_view ref) const;

  const std::string dir_;
  const std::string master_key_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<EVP_PKEY>, std::less<>> cache_;
};

// The master key: `from_env` if set (CERTFLEET_MASTER_KEY), else the file at `path`,
// made with 256 random bits (mode 0600) when `create` and it does not exist yet.
Result<std::string> LoadMasterKey(const std::string& from_env, const std::string& path, bool create);

}  // namespace certfleet::pki::file
