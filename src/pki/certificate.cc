#include "pki/certificate.h"

#include <fmt/format.h>
#include <openssl/pem.h>

#include <ctime>

#include "core/crypto.h"
#include "pki/der.h"

namespace certfleet::pki {
namespace {

constexpr size_t kSerialBytes = 16;  // 128 bits, as CA/B Forum and RFC 5280 allow (<= 20 octets)

Result<void> AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer ? issuer : cert, cert, nullptr, nullptr, 0);
  X509ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) return OpenSslError("adding extension " + value);
  return Ok();
}

const EVP_MD* DigestFor(EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "ED25519") || EVP_PKEY_is_a(key, "ED448")) return nullptr;
  if (EVP_PKEY_get_bits(key) == 384 && EVP_PKEY_is_a(key, "EC")) return EVP_sha384();
  return EVP_sha256();
}

// Sets the certificate's SubjectPublicKeyInfo to `spki_der` without decoding the key.
Result<void> CopyPublicKey(X509* cert, std::string_view spki_der) {
  CF_ASSIGN_OR_RETURN(PublicKeyInfo info, SplitPublicKeyInfo(spki_der));
  const std::string_view bits = info.key;
  const ASN1_OBJECT* alg_oid = nullptr;
  int param_type = V_ASN1_UNDEF;
  const void* param = nullptr;
  X509_ALGOR_get0(&alg_oid, &param_type, &param, info.algorithm.get());
  void* param_copy = nullptr;
  if (param_type == V_ASN1_OBJECT) {
    param_copy = OBJ_dup(static_cast<const ASN1_OBJECT*>(param));
  } else if (param_type == V_ASN1_SEQUENCE) {
    param_copy = ASN1_STRING_dup(static_cast<const ASN1_STRING*>(param));
  } else if (param_type != V_ASN1_NULL && param_type != V_ASN1_UNDEF) {
    return MakeError(ErrorCode::kInvalidArgument, "unsupported public key parameters");
  }
  auto* bits_copy = static_cast<unsigned char*>(OPENSSL_memdup(bits.data(), bits.size()));
  if (X509_PUBKEY_set0_param(X509_get_X509_PUBKEY(cert), OBJ_dup(alg_oid), param_type, param_copy, bits_copy,
                             static_cast<int>(bits.size())) != 1) {
    return OpenSslError("copying the public key");
  }
  return Ok();
}

}  // namespace

Result<X509Ptr> SignCertificate(const CertificateSpec& spec, EVP_PKEY* subject_key, X509* issuer, EVP_PKEY* issuer_key,
                                std::string_view subject_spki_der) {
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) return OpenSslError("X509_new");

  std::string serial = RandomBytes(kSerialBytes);
  serial[0] = static_cast<char>(serial[0] & 0x7f);  // positive, as RFC 5280 requires
  BignumPtr bn(BN_bin2bn(reinterpret_cast<const unsigned char*>(serial.data()), kSerialBytes, nullptr));
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get()))) return OpenSslError("serial");

  X509NamePtr name(X509_NAME_new());
  auto add_rdn = [&](const char* field, const std::string& value) {
    return value.empty() ||
           X509_NAME_add_entry_by_txt(name.get(), field, MBSTRING_UTF8,
                                      reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1, 0) == 1;
  };
  if (!add_rdn("C", spec.country) || !add_rdn("ST", spec.state)) {
    return OpenSslError("subject C/ST", ErrorCode::kInvalidArgument);
  }
  if (!spec.organization.empty() &&
      X509_NAME_add_entry_by_txt(name.get(), "O", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(spec.organization.c_str()), -1, -1, 0) != 1) {
    return OpenSslError("subject O", ErrorCode::kInvalidArgument);
  }
  if (X509_NAME_add_entry_by_txt(name.get(), "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(spec.common_name.c_str()), -1, -1, 0) != 1) {
    return OpenSslError("subject CN", ErrorCode::kInvalidArgument);
  }
  if (X509_set_subject_name(cert.get(), name.get()) != 1 ||
      X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name.get()) != 1) {
    return OpenSslError("names");
  }
  if (!ASN1_TIME_set(X509_getm_notBefore(cert.get()), static_cast<time_t>(spec.not_before_millis / 1000)) ||
      !ASN1_TIME_set(X509_getm_notAfter(cert.get()), static_cast<time_t>(spec.not_after_millis / 1000))) {
    return OpenSslError("validity");
  }
  if (!subject_spki_der.empty()) {
    CF_RETURN_IF_ERROR(CopyPublicKey(cert.get(), subject_spki_der));
  } else if (X509_set_pubkey(cert.get(), subject_key) != 1) {
    return OpenSslError("public key");
  }

  if (spec.is_ca) {
    std::string bc = "critical,CA:TRUE";
    if (spec.path_len >= 0) bc += ",pathlen:" + std::to_string(spec.path_len);
    CF_RETURN_IF_ERROR(AddExtension(cert.get(), issuer, NID_basic_constraints, bc));
    CF_RETURN_IF_ERROR(AddExtension(cert.get(), issuer, NID_key_usage, "critical,keyCertSign,cRLSign"));
  } else {
    CF_RETURN_IF_ERROR(AddExtension(cert.get(), issuer, NID_basic_constraints, "critical,CA:FALSE"));
    std::string ku = "critical,digitalSignature";
    if (EVP_PKEY_is_a(subject_key, "RSA")) ku += ",keyEncipherment";
    CF_RETURN_IF_ERROR(AddExtension(cert.get(), issuer, NID_key_usage, ku));
    std::string eku;
    if (spec.server_auth) eku = "serverAuth";
    if (spec.client_auth) eku += eku.empty() ? "clientAuth" : ",clientAuth";
    if (!eku.empty()) CF_RETURN_IF_ERROR(AddExtension(cert.get(), issuer, NID_ext_key_usage, eku));
  }
  CF_RETURN_IF_ERROR(AddExtension(cert.get(), issuer, NID_subject_key_identifier, "hash"));
  if (issuer) CF_RETURN_IF_ERROR(AddExtension(cert.get(), issuer, NID_authority_key_identifier, "keyid:always"));

  if (!spec.crl_url.empty()) {
    CF_RETURN_IF_ERROR(AddExtension(cert.get(), issuer, NID_crl_distribution_points, "URI:" + spec.crl_url));
  }
  if (!spec.ocsp_url.empty()) {
    CF_RETURN_IF_ERROR(AddExtension(cert.get(), issuer, NID_info_access, "OCSP;URI:" + spec.ocsp_url));
  }
  std::string san;
  for (const auto& d : spec.dns_names) san += (san.empty() ? "DNS:" : ",DNS:") + d;
  for (const auto& ip : spec.ip_addresses) san += (san.empty() ? "IP:" : ",IP:") + ip;
  if (!san.empty()) CF_RETURN_IF_ERROR(AddExtension(cert.get(), issuer, NID_subject_alt_name, san));

  if (X509_sign(cert.get(), issuer_key, DigestFor(issuer_key)) <= 0) return OpenSslError("signing certificate");
  return cert;
}

Result<std::string> CertificateToPem(X509* cert) {
  CF_ASSIGN_OR_RETURN(std::string der, CertificateToDer(cert));
  return PemEncode("CERTIFICATE", der);
}

std::string PemEncode(std::string_view label, std::string_view der) {
  constexpr size_t kPemLineBytes = 48;  // 64 base64 characters, as RFC 7468 writes them
  std::string out = fmt::format("-----BEGIN {}-----\n", label);
  for (size_t i = 0; i < der.size(); i += kPemLineBytes) {
    out += Base64Encode(der.substr(i, kPemLineBytes));
    out += '\n';
  }
  out += fmt::format("-----END {}-----\n", label);
  return out;
}

Result<X509Ptr> CertificateFromPem(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509* cert = bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr;
  if (!cert) return OpenSslError("reading certificate", ErrorCode::kInvalidArgument);
  return X509Ptr(cert);
}

Result<std::string> CertificateToDer(X509* cert) {
  unsigned char* der = nullptr;
  int len = i2d_X509(cert, &der);
  if (len <= 0) return OpenSslError("encoding certificate");
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

std::string SerialHex(const ASN1_INTEGER* serial) {
  BignumPtr bn(ASN1_INTEGER_to_BN(serial, nullptr));
  char* hex = bn ? BN_bn2hex(bn.get()) : nullptr;
  std::string out = hex ? hex : "";
  OPENSSL_free(hex);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  size_t nz = out.find_first_not_of('0');
  return nz == std::string::npos ? "0" : out.substr(nz);
}

Result<CertificateFacts> Inspect(X509* cert) {
  CertificateFacts f;
  f.serial_hex = SerialHex(X509_get0_serialNumber(cert));
  auto to_millis = [](const ASN1_TIME* t) -> int64_t {
    std::tm tm{};
    if (ASN1_TIME_to_tm(t, &tm) != 1) return 0;
    return static_cast<int64_t>(timegm(&tm)) * 1000;
  };
  f.not_before_millis = to_millis(X509_get0_notBefore(cert));
  f.not_after_millis = to_millis(X509_get0_notAfter(cert));
  CF_ASSIGN_OR_RETURN(std::string der, CertificateToDer(cert));
  f.sha256_fingerprint = Sha256Hex(der);
  f.pem = PemEncode("CERTIFICATE", der);
  X509_NAME* subject = X509_get_subject_name(cert);
  int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (idx >= 0) {
    ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
    unsigned char* utf8 = nullptr;
    int len = ASN1_STRING_to_UTF8(&utf8, data);
    if (len >= 0) f.common_name.assign(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
    OPENSSL_free(utf8);
  }
  // Only basicConstraints, not X509_check_ca, which decodes every extension and hashes the whole certificate.
  std::unique_ptr<BASIC_CONSTRAINTS, Deleter<BASIC_CONSTRAINTS_free>> bc(
      static_cast<BASIC_CONSTRAINTS*>(X509_get_ext_d2i(cert, NID_basic_constraints, nullptr, nullptr)));
  f.is_ca = bc && bc->ca;
  return f;
}

}  // namespace certfleet::pki
