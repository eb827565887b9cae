#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/clock.h"
#include "pki/key_backend.h"
#include "store/store.h"

namespace certfleet::issuance {

// CA keys in the database (ca_keys), as PKCS#8 PEM sealed with AES-256-GCM under a key
// derived from the master key and each key's reference ("db:<random hex>"): nodes that share
// the database share the keys, with no shared folder, and the database alone reveals none.
// Keys opened for signing are cached in memory. Thread-safe.
class DbKeyBackend final : public pki::KeyBackend {
 public:
  DbKeyBackend(store::Store& store, const Clock& clock, std::string master_key);

  // `backend` is empty or "db".
  Result<std::string> Generate(pki::KeyType type, std::string_view backend) override;
  Result<std::string> Put(EVP_PKEY* key, std::string_view backend) override;
  Result<std::shared_ptr<EVP_PKEY>> Get(std::string_view ref) override;
  Result<void> Remove(std::string_view ref) override;

 private:
  store::Store& store_;
  const Clock& clock_;
  const std::string master_key_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<EVP_PKEY>, std::less<>> cache_;
};

// Moves the keys of the CAs whose key is in the file backend (key_dir) into the backend `to`
// ("db"): each is read, put there, and the CA pointed at it in one audited transaction
// (ca.key.move); the files stay, for the nodes still running an older release. Returns the
// CAs moved, by fqdn; kFailedPrecondition when a key cannot be read (nothing after it moves).
Result<std::vector<std::string>> MoveFileKeys(store::Store& store, pki::KeyBackend& keys, const Clock& clock,
                                              std::string_view to, std::string_view actor);

}  // namespace certfleet::issuance
