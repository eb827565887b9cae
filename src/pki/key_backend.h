#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "core/result.h"
#include "pki/key.h"
#include "pki/ossl.h"

namespace certfleet::pki {

// Keeps CA private keys. A key is made (Generate) or taken in (Put) once and found again by
// the reference returned, which the CA's inventory row stores; the reference starts with the
// backend's name ("file:…", "pkcs11:…"). Implementations: file/ (encrypted PKCS#8 files),
// pkcs11/ (a token; keys never leave it). Thread-safe.
class KeyBackend {
 public:
  virtual ~KeyBackend() = default;
  // Makes a key of `type` held by the backend named `backend` (empty: the default one).
  // kInvalidArgument for a backend that is not configured or a type it cannot hold.
  virtual Result<std::string> Generate(KeyType type, std::string_view backend) = 0;
  // Takes an existing key in (an imported CA's): afterwards only the backend holds it.
  virtual Result<std::string> Put(EVP_PKEY* key, std::string_view backend) = 0;
  // The key, ready to sign; implementations may cache it. kUnavailable when the backend
  // cannot reach it now (a missing file, a token that is away).
  virtual Result<std::shared_ptr<EVP_PKEY>> Get(std::string_view ref) = 0;
  // Forgets a key that was made or put but never committed (its CA could not be stored).
  virtual Result<void> Remove(std::string_view ref) = 0;
};

// The key backends configured, by name, as one KeyBackend: references are sent to the
// backend their prefix names, new keys to the one asked for or the default. Thread-safe.
class KeyBackends final : public KeyBackend {
 public:
  // `default_backend` must be one of those added before the first Generate.
  explicit KeyBackends(std::string default_backend) : default_(std::move(default_backend)) {}
  void Add(std::string name, std::unique_ptr<KeyBackend> backend);
  const std::string& default_backend() const { return default_; }

  Result<std::string> Generate(KeyType type, std::string_view backend) override;
  Result<std::string> Put(EVP_PKEY* key, std::string_view backend) override;
  Result<std::shared_ptr<EVP_PKEY>> Get(std::string_view ref) override;
  Result<void> Remove(std::string_view ref) override;

 private:
  Result<KeyBackend*> Named(std::string_view backend);
  Result<KeyBackend*> Holding(std::string_view ref);

  const std::string default_;
  std::map<std::string, std::unique_ptr<KeyBackend>, std::less<>> backends_;
};

// The name of the backend a key reference belongs to: "file" of "file:…", "" of "" (an
// external CA's, which has no key).
std::string_view KeyBackendOf(std::string_view ref);

// Tells signing code that the key backend could not sign just now (a token away); the next
// OpenSslError on this thread then reports kUnavailable with `why` instead of kInternal.
// Called from inside OpenSSL's signing callbacks, where no Result can be returned.
void NoteKeyUnavailable(std::string why);

}  // namespace certfleet::pki
