#pragma once

#include <string>
#include <string_view>

#include "core/result.h"
#include "pki/ossl.h"

namespace certfleet::pki {

enum class KeyType { kEcP256, kEcP384, kRsa2048, kRsa3072, kRsa4096, kEd25519 };

Result<KeyType> ParseKeyType(std::string_view name);  // "ec-p256", "rsa-2048", "ed25519", ...
std::string_view KeyTypeName(KeyType type);

Result<PkeyPtr> GenerateKey(KeyType type);
// The type of an existing key: kInvalidArgument for one certfleet does not make.
Result<KeyType> KeyTypeOf(EVP_PKEY* key);
// Unencrypted PKCS#8 PEM. Callers write it only where the user asked for the key.
Result<std::string> PrivateKeyToPem(EVP_PKEY* key);
// An unencrypted PEM private key; kInvalidArgument if it does not read.
Result<PkeyPtr> PrivateKeyFromPem(std::string_view pem);

}  // namespace certfleet::pki
