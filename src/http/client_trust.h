#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "core/result.h"

namespace certfleet::http {

// The CAs whose certificates authenticate TLS clients (server.client_ca, and the CAs that
// issue agents' certificates), replaceable while serving: a connection verifies its client's
// chain against the CAs of the moment it completed its handshake. Thread-safe.
class ClientTrust {
 public:
  // The fixed part (server.client_ca's file), kept through every Set. kInvalidArgument if the
  // file cannot be read or holds a PEM block that is not a certificate.
  Result<void> LoadFile(const std::string& path);
  // Replaces the changing part with the certificates of `pem` (empty: none).
  Result<void> Set(std::string_view pem);
  // Whether the client certificate of `ssl` (with the chain it sent) verifies to one of the
  // CAs as a TLS client's.
  bool Verifies(SSL* ssl) const;

 private:
  Result<void> Rebuild(std::string fixed, std::string changing);

  mutable std::mutex mu_;
  std::string fixed_pem_;
  std::string changing_pem_;
  std::shared_ptr<X509_STORE> store_;  // of both; null: none
};

}  // namespace certfleet::http
