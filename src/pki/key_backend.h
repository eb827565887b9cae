#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "core/result.h"
#include "pki/ossl.h"

namespace certfleet::pki {

// Keeps CA private keys. A key is put once and found again by the reference Put
// returned, which the CA's inventory row stores. Implementations: file/ (encrypted
// PKCS#8 files); a PKCS#11 one can take the same place. Thread-safe.
class KeyBackend {
 public:
  virtual ~KeyBackend() = default;
  virtual Result<std::string> Put(EVP_PKEY* key) = 0;
  // The key, ready to sign; implementations may cache it.
  virtual Result<std::shared_ptr<EVP_PKEY>> Get(std::string_view ref) = 0;
  // Forgets a key that was put but never committed (its CA could not be stored).
  virtual Result<void> Remove(std::string_view ref) = 0;
};

}  // namespace certfleet::pki
