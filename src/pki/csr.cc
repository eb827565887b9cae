#include "pki/csr.h"

#include <fmt/format.h>
#include <openssl/pem.h>

namespace certfleet::pki {
namespace {

constexpr int kMinRsaBits = 2048;
constexpr int kMaxRsaBits = 8192;  // larger keys only cost the CA time

}  // namespace

Result<Csr> ParseCsr(std::string_view data) {
  if (data.empty()) return MakeError(ErrorCode::kInvalidArgument, "the CSR is empty");
  if (data.size() > kMaxCsrBytes) {
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("the CSR is larger than {} bytes", kMaxCsrBytes));
  }
  Csr csr;
  if (data.find("-----BEGIN") != std::string_view::npos) {
    BioPtr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
    csr.req.reset(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  } else {
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    csr.req.reset(d2i_X509_REQ(nullptr, &p, static_cast<long>(data.size())));
  }
  if (!csr.req) return OpenSslError("the CSR is not a PKCS#10 request", ErrorCode::kInvalidArgument);
  csr.public_key.reset(X509_REQ_get_pubkey(csr.req.get()));
  if (!csr.public_key) return OpenSslError("the CSR has no readable public key", ErrorCode::kInvalidArgument);
  if (X509_REQ_verify(csr.req.get(), csr.public_key.get()) != 1) {
    return OpenSslError("the CSR's signature does not verify", ErrorCode::kInvalidArgument);
  }
  CF_RETURN_IF_ERROR(LintPublicKey(csr.public_key.get()));

  X509_NAME* subject = X509_REQ_get_subject_name(csr.req.get());
  if (int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1); idx >= 0) {
    unsigned char* utf8 = nullptr;
    int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx)));
    if (len < 0) return MakeError(ErrorCode::kInvalidArgument, "the CSR's common name is not valid text");
    csr.common_name.assign(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
    OPENSSL_free(utf8);
  }
  if (STACK_OF(X509_EXTENSION)* exts = X509_REQ_get_extensions(csr.req.get())) {
    GeneralNamesPtr names(static_cast<GENERAL_NAMES*>(X509V3_get_d2i(exts, NID_subject_alt_name, nullptr, nullptr)));
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names.get()); ++i) {
      const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
      if (gn->type == GEN_DNS) {
        const ASN1_STRING* s = gn->d.dNSName;
        csr.dns_names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                   static_cast<size_t>(ASN1_STRING_length(s)));
      }
    }
  }
  return csr;
}

Result<void> LintPublicKey(EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "RSA")) {
    const int bits = EVP_PKEY_get_bits(key);
    if (bits < kMinRsaBits || bits > kMaxRsaBits) {
      return MakeError(ErrorCode::kInvalidArgument, fmt::format("RSA keys must have {} to {} bits; this one has {}",
                                                                kMinRsaBits, kMaxRsaBits, bits));
    }
    return Ok();
  }
  if (EVP_PKEY_is_a(key, "EC")) {
    char curve[64] = {};
    size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(key, "group", curve, sizeof(curve), &len) != 1) {
      return MakeError(ErrorCode::kInvalidArgument, "the EC key names no curve");
    }
    const std::string_view c(curve, len);
    if (c != "prime256v1" && c != "secp384r1" && c != "secp521r1" && c != "P-256" && c != "P-384" && c != "P-521") {
      return MakeError(ErrorCode::kInvalidArgument,
                       fmt::format("EC curve {} is not accepted (P-256, P-384, P-521)", c));
    }
    return Ok();
  }
  if (EVP_PKEY_is_a(key, "ED25519")) return Ok();
  return MakeError(ErrorCode::kInvalidArgument, "the key must be RSA, EC or Ed25519");
}

Result<std::string> PublicKeyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key) != 1) return OpenSslError("writing public key");
  return BioToString(bio.get());
}

}  // namespace certfleet::pki
