#include "pki/key.h"

#include <openssl/pem.h>

namespace certfleet::pki {
namespace {

struct KeyTypeInfo {
  KeyType type;
  std::string_view name;
};
constexpr KeyTypeInfo kKeyTypes[] = {
    {KeyType::kEcP256, "ec-p256"},   {KeyType::kEcP384, "ec-p384"},   {KeyType::kRsa2048, "rsa-2048"},
    {KeyType::kRsa3072, "rsa-3072"}, {KeyType::kRsa4096, "rsa-4096"}, {KeyType::kEd25519, "ed25519"},
};

}  // namespace

Result<KeyType> ParseKeyType(std::string_view name) {
  for (const auto& k : kKeyTypes) {
    if (k.name == name) return k.type;
  }
  return MakeError(ErrorCode::kInvalidArgument, "unknown key type '" + std::string(name) +
                                                    "' (ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096, ed25519)");
}

std::string_view KeyTypeName(KeyType type) {
  for (const auto& k : kKeyTypes) {
    if (k.type == type) return k.name;
  }
  return "unknown";
}

Result<PkeyPtr> GenerateKey(KeyType type) {
  EVP_PKEY* raw = nullptr;
  switch (type) {
    case KeyType::kEcP256:
      raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
      break;
    case KeyType::kEcP384:
      raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384");
      break;
    case KeyType::kRsa2048:
      raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048});
      break;
    case KeyType::kRsa3072:
      raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{3072});
      break;
    case KeyType::kRsa4096:
      raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{4096});
      break;
    case KeyType::kEd25519:
      raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
      break;
  }
  if (!raw) return OpenSslError("key generation failed");
  return PkeyPtr(raw);
}

Result<KeyType> KeyTypeOf(EVP_PKEY* key) {
  switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_ED25519:
      return KeyType::kEd25519;
    case EVP_PKEY_RSA:
      switch (EVP_PKEY_get_bits(key)) {
        case 2048:
          return KeyType::kRsa2048;
        case 3072:
          return KeyType::kRsa3072;
        case 4096:
          return KeyType::kRsa4096;
        default:
          break;
      }
      break;
    case EVP_PKEY_EC: {
      char group[32] = {};
      size_t len = 0;
      if (EVP_PKEY_get_group_name(key, group, sizeof(group), &len) == 1) {
        const std::string_view name(group, len);
        if (name == "prime256v1" || name == "P-256") return KeyType::kEcP256;
        if (name == "secp384r1" || name == "P-384") return KeyType::kEcP384;
      }
      break;
    }
    default:
      break;
  }
  return MakeError(ErrorCode::kInvalidArgument, "the key is of a type certfleet does not make");
}

Result<std::string> PrivateKeyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return OpenSslError("writing private key");
  }
  return BioToString(bio.get());
}

Result<PkeyPtr> PrivateKeyFromPem(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PkeyPtr key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) return MakeError(ErrorCode::kInvalidArgument, "not an unencrypted PEM private key");
  return key;
}

}  // namespace certfleet::pki
