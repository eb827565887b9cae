#include "pki/csr.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <array>
#include <map>
#include <mutex>

#include "pki/der.h"

namespace certfleet::pki {
namespace {

constexpr int kMinRsaBits = 2048;
constexpr int kMaxRsaBits = 8192;  // larger keys only cost the CA time

using AttributePtr = std::unique_ptr<X509_ATTRIBUTE, Deleter<X509_ATTRIBUTE_free>>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, Deleter<EVP_MD_CTX_free>>;
void FreeExtensions(STACK_OF(X509_EXTENSION) * exts) { sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free); }
using ExtensionsPtr = std::unique_ptr<STACK_OF(X509_EXTENSION), Deleter<FreeExtensions>>;

Error Invalid(std::string message) { return MakeError(ErrorCode::kInvalidArgument, std::move(message)); }

// d2i of a whole element; refuses trailing bytes.
template <typename T, T* (*D2i)(T**, const unsigned char**, long), auto Free>
Result<std::unique_ptr<T, Deleter<Free>>> Decode(std::string_view der, std::string_view what) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  std::unique_ptr<T, Deleter<Free>> out(D2i(nullptr, &p, static_cast<long>(der.size())));
  if (!out || p != reinterpret_cast<const unsigned char*>(der.data() + der.size())) {
    return OpenSslError(fmt::format("the CSR's {} is not valid", what), ErrorCode::kInvalidArgument);
  }
  return out;
}

Result<AlgorPtr> DecodeAlgorithm(std::string_view der, std::string_view what) {
  return Decode<X509_ALGOR, d2i_X509_ALGOR, X509_ALGOR_free>(der, what);
}

// An EC key of `curve` with no point yet, made once per curve: copying it and setting the
// point costs a fourth of building the key from parameters (EVP_PKEY_fromdata).
Result<EVP_PKEY*> CurveTemplate(int curve) {
  static std::mutex mu;
  static std::map<int, PkeyPtr> templates;
  std::lock_guard lock(mu);
  auto it = templates.find(curve);
  if (it != templates.end()) return it->second.get();
  const char* group = OBJ_nid2sn(curve);
  if (curve == NID_undef || group == nullptr) return Invalid("the CSR's EC key is on an unknown curve");
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, const_cast<char*>(group), 0),
                         OSSL_PARAM_construct_end()};
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  EVP_PKEY* raw = nullptr;
  if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_KEY_PARAMETERS, params) != 1) {
    return OpenSslError(fmt::format("the CSR's EC key is on a curve not supported here ({})", group),
                        ErrorCode::kInvalidArgument);
  }
  return templates.emplace(curve, PkeyPtr(raw)).first->second.get();
}

// A SubjectPublicKeyInfo's key (`whose`: "the CSR's", say, for messages). OpenSSL 3.0 builds a whole decoder chain for
// each key it reads from DER (d2i_X509_REQ, d2i_PUBKEY), which costs more than verifying the signature; EC and Ed25519
// keys, the ones devices use, are imported from their raw bytes instead.
Result<PkeyPtr> ImportPublicKey(const DerElement& spki, std::string_view whose) {
  Result<PublicKeyInfo> info = SplitPublicKeyInfo(spki.encoding);
  if (!info.ok()) return Invalid(fmt::format("{} public key: {}", whose, info.error().message));
  const std::string_view bits = info->key;
  const ASN1_OBJECT* oid = nullptr;
  int param_type = V_ASN1_UNDEF;
  const void* param = nullptr;
  X509_ALGOR_get0(&oid, &param_type, &param, info->algorithm.get());

  PkeyPtr key;
  switch (OBJ_obj2nid(oid)) {
    case NID_X9_62_id_ecPublicKey: {
      if (param_type != V_ASN1_OBJECT) return Invalid(fmt::format("{} EC key must name its curve", whose));
      const int curve = OBJ_obj2nid(static_cast<const ASN1_OBJECT*>(param));
      CF_ASSIGN_OR_RETURN(EVP_PKEY * empty, CurveTemplate(curve));
      key.reset(EVP_PKEY_dup(empty));
      if (!key || EVP_PKEY_set1_encoded_public_key(key.get(), reinterpret_cast<const unsigned char*>(bits.data()),
                                                   bits.size()) != 1) {
        return OpenSslError(fmt::format("{} EC key is not a point on {}", whose, OBJ_nid2sn(curve)),
                            ErrorCode::kInvalidArgument);
      }
      break;
    }
    case NID_ED25519:
      key.reset(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr,
                                            reinterpret_cast<const unsigned char*>(bits.data()), bits.size()));
      if (!key) return OpenSslError(fmt::format("{} Ed25519 key is not valid", whose), ErrorCode::kInvalidArgument);
      break;
    default: {
      const auto* p = reinterpret_cast<const unsigned char*>(spki.encoding.data());
      key.reset(d2i_PUBKEY(nullptr, &p, static_cast<long>(spki.encoding.size())));
      if (!key) return OpenSslError(fmt::format("{} public key is unreadable", whose), ErrorCode::kInvalidArgument);
    }
  }
  return key;
}

// Checks the signature over the request's info with the algorithm the CSR names.
Result<void> VerifySignature(EVP_PKEY* key, std::string_view signed_der, const DerElement& alg_der,
                             const DerElement& signature_der) {
  CF_ASSIGN_OR_RETURN(AlgorPtr alg, DecodeAlgorithm(alg_der.encoding, "signature algorithm"));
  const ASN1_OBJECT* oid = nullptr;
  X509_ALGOR_get0(&oid, nullptr, nullptr, alg.get());
  int md_nid = NID_undef;
  int key_nid = NID_undef;
  if (OBJ_find_sigid_algs(OBJ_obj2nid(oid), &md_nid, &key_nid) != 1) {
    return Invalid("the CSR's signature algorithm is unknown");
  }
  if (key_nid == NID_rsassaPss)
    return Invalid("RSA-PSS signed CSRs are not accepted; use PKCS#1 v1.5, ECDSA or Ed25519");
  if (!EVP_PKEY_is_a(key, OBJ_nid2sn(key_nid))) return Invalid("the CSR's signature algorithm does not fit its key");
  const char* md = nullptr;
  if (md_nid != NID_undef) {
    if (md_nid != NID_sha256 && md_nid != NID_sha384 && md_nid != NID_sha512) {
      return Invalid(
          fmt::format("CSRs signed with {} are not accepted; use SHA-256, SHA-384 or SHA-512", OBJ_nid2sn(md_nid)));
    }
    md = OBJ_nid2sn(md_nid);
  } else if (!EVP_PKEY_is_a(key, "ED25519")) {
    return Invalid("the CSR's signature algorithm names no digest");
  }
  CF_ASSIGN_OR_RETURN(std::string_view signature, BitStringBytes(signature_der, "signature"));
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit_ex(ctx.get(), nullptr, md, nullptr, nullptr, key, nullptr) != 1) {
    return OpenSslError("checking the CSR's signature", ErrorCode::kInvalidArgument);
  }
  if (EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                       reinterpret_cast<const unsigned char*>(signed_der.data()), signed_der.size()) != 1) {
    return OpenSslError("the CSR's signature does not verify", ErrorCode::kInvalidArgument);
  }
  return Ok();
}

// The subject's first common name, and how many it has.
Result<std::string> CommonName(std::string_view subject_der, int& count) {
  CF_ASSIGN_OR_RETURN(X509NamePtr subject, (Decode<X509_NAME, d2i_X509_NAME, X509_NAME_free>(subject_der, "subject")));
  const int idx = X509_NAME_get_index_by_NID(subject.get(), NID_commonName, -1);
  count = 0;
  for (int i = idx; i >= 0; i = X509_NAME_get_index_by_NID(subject.get(), NID_commonName, i)) ++count;
  if (idx < 0) return std::string();
  unsigned char* utf8 = nullptr;
  const int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject.get(), idx)));
  if (len < 0) return Invalid("the CSR's common name is not valid text");
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

// The DNS names and IP addresses of the subjectAltName among `extensions_der` (a DER
// SEQUENCE OF Extension), into `csr`.
Result<void> RequestedNames(std::string_view extensions_der, Csr& csr) {
  CF_ASSIGN_OR_RETURN(ExtensionsPtr exts, (Decode<STACK_OF(X509_EXTENSION), d2i_X509_EXTENSIONS, FreeExtensions>(
                                              extensions_der, "extension request")));
  GeneralNamesPtr names(
      static_cast<GENERAL_NAMES*>(X509V3_get_d2i(exts.get(), NID_subject_alt_name, nullptr, nullptr)));
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
    if (gn->type == GEN_DNS) {
      const ASN1_STRING* s = gn->d.dNSName;
      csr.dns_names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                 static_cast<size_t>(ASN1_STRING_length(s)));
    } else if (gn->type == GEN_IPADD) {
      const int len = ASN1_STRING_length(gn->d.iPAddress);
      char text[INET6_ADDRSTRLEN] = {};
      if ((len != 4 && len != 16) || inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(gn->d.iPAddress),
                                               text, sizeof(text)) == nullptr) {
        return Invalid("the CSR has an IP address that is not 4 or 16 bytes");
      }
      csr.ip_addresses.emplace_back(text);
    }
  }
  return Ok();
}

// The DNS names and IP addresses of the subjectAltName in the request's extensionRequest
// attribute, its challengePassword, if any, and the OIDs of its other attributes into `csr`.
Result<void> RequestedAttributes(std::string_view attributes, Csr& csr) {
  DerReader reader(attributes);
  while (!reader.done()) {
    CF_ASSIGN_OR_RETURN(DerElement attr_der, reader.Next(kDerSequence, "attribute"));
    CF_ASSIGN_OR_RETURN(AttributePtr attr, (Decode<X509_ATTRIBUTE, d2i_X509_ATTRIBUTE, X509_ATTRIBUTE_free>(
                                               attr_der.encoding, "attribute")));
    const int nid = OBJ_obj2nid(X509_ATTRIBUTE_get0_object(attr.get()));
    const ASN1_TYPE* value = X509_ATTRIBUTE_get0_type(attr.get(), 0);
    if (nid == NID_pkcs9_challengePassword) {
      // A DirectoryString; EST (RFC 7030 3.5) carries the TLS channel binding in it.
      if (value == nullptr || (value->type != V_ASN1_PRINTABLESTRING && value->type != V_ASN1_UTF8STRING &&
                               value->type != V_ASN1_IA5STRING)) {
        return Invalid("the CSR's challengePassword is not a string");
      }
      const ASN1_STRING* text = value->value.asn1_string;
      csr.challenge_password.emplace(reinterpret_cast<const char*>(ASN1_STRING_get0_data(text)),
                                     static_cast<size_t>(ASN1_STRING_length(text)));
      continue;
    }
    if (nid != NID_ext_req) {
      constexpr int kMaxOid = 128;
      std::array<char, kMaxOid> oid{};
      if (OBJ_obj2txt(oid.data(), kMaxOid, X509_ATTRIBUTE_get0_object(attr.get()), 1) > 0) {
        csr.other_attributes.emplace_back(oid.data());
      }
      continue;
    }
    if (value == nullptr || value->type != V_ASN1_SEQUENCE) return Invalid("the CSR's extension request is not valid");
    const ASN1_STRING* seq = value->value.sequence;
    CF_RETURN_IF_ERROR(RequestedNames(std::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(seq)),
                                                       static_cast<size_t>(ASN1_STRING_length(seq))),
                                      csr));
  }
  return Ok();
}

Result<std::string> CsrDer(std::string_view data) {
  if (data.find("-----BEGIN") == std::string_view::npos) return std::string(data);
  // Accepts "CERTIFICATE REQUEST" and the older "NEW CERTIFICATE REQUEST".
  std::optional<std::string> der = PemBlockBytes(data, PEM_STRING_X509_REQ);
  if (!der) return MakeError(ErrorCode::kInvalidArgument, "the CSR is not a PEM certificate request");
  return std::move(*der);
}

// The parts of a CertificationRequest (RFC 2986), as views into its DER.
struct RequestParts {
  DerElement info;  // what the signature covers
  DerElement subject;
  DerElement spki;
  std::optional<DerElement> attributes;
  DerElement signature_alg;
  DerElement signature;
};

Result<RequestParts> Split(std::string_view der) {
  RequestParts out;
  DerReader top(der);
  CF_ASSIGN_OR_RETURN(DerElement request, top.Next(kDerSequence, "certificate request"));
  if (!top.done()) return Invalid("trailing data after the request");
  DerReader parts(request.contents);
  CF_ASSIGN_OR_RETURN(out.info, parts.Next(kDerSequence, "certification request info"));
  CF_ASSIGN_OR_RETURN(out.signature_alg, parts.Next(kDerSequence, "signature algorithm"));
  CF_ASSIGN_OR_RETURN(out.signature, parts.Next(kDerBitString, "signature"));
  if (!parts.done()) return Invalid("trailing data after the signature");

  DerReader fields(out.info.contents);
  CF_ASSIGN_OR_RETURN(DerElement version, fields.Next(kDerInteger, "version"));
  if (version.contents != std::string_view("\0", 1)) return Invalid("the version must be 1 (0)");
  CF_ASSIGN_OR_RETURN(out.subject, fields.Next(kDerSequence, "subject"));
  CF_ASSIGN_OR_RETURN(out.spki, fields.Next(kDerSequence, "subject public key info"));
  CF_ASSIGN_OR_RETURN(out.attributes, fields.NextIf(kDerContext0, "attributes"));
  if (!fields.done()) return Invalid("trailing data in the request info");
  return out;
}

}  // namespace

// The request is split with DerReader and each part decoded on its own (see ImportPublicKey).
Result<Csr> ParseCsr(std::string_view data) {
  if (data.empty()) return Invalid("the CSR is empty");
  if (data.size() > kMaxCsrBytes) return Invalid(fmt::format("the CSR is larger than {} bytes", kMaxCsrBytes));
  CF_ASSIGN_OR_RETURN(std::string der, CsrDer(data));
  Result<RequestParts> split = Split(der);
  if (!split.ok()) return Invalid("the CSR is not a PKCS#10 request: " + split.error().message);
  const RequestParts& r = *split;

  Csr csr;
  CF_ASSIGN_OR_RETURN(csr.public_key, ImportPublicKey(r.spki, "the CSR's"));
  CF_RETURN_IF_ERROR(VerifySignature(csr.public_key.get(), r.info.encoding, r.signature_alg, r.signature));
  CF_RETURN_IF_ERROR(LintPublicKey(csr.public_key.get()));
  csr.spki_der = r.spki.encoding;
  CF_ASSIGN_OR_RETURN(csr.common_name, CommonName(r.subject.encoding, csr.common_names));
  if (r.attributes) {
    CF_RETURN_IF_ERROR(RequestedAttributes(r.attributes->contents, csr));
  }
  csr.der = std::move(der);  // last: the views above point into it
  return csr;
}

Result<Csr> RequestFromTemplate(std::string_view subject_der, std::string_view spki_der,
                                std::string_view extensions_der, std::string_view identity) {
  Csr csr;
  DerReader reader(spki_der);
  CF_ASSIGN_OR_RETURN(DerElement spki, reader.Next(kDerSequence, "subject public key info"));
  if (!reader.done()) return Invalid("trailing data after the public key");
  CF_ASSIGN_OR_RETURN(csr.public_key, ImportPublicKey(spki, "the request's"));
  CF_RETURN_IF_ERROR(LintPublicKey(csr.public_key.get()));
  csr.spki_der = std::string(spki_der);
  CF_ASSIGN_OR_RETURN(csr.common_name, CommonName(subject_der, csr.common_names));
  if (!extensions_der.empty()) CF_RETURN_IF_ERROR(RequestedNames(extensions_der, csr));
  csr.der = std::string(identity);
  return csr;
}

Result<void> LintPublicKey(EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "RSA")) {
    const int bits = EVP_PKEY_get_bits(key);
    if (bits < kMinRsaBits || bits > kMaxRsaBits) {
      return MakeError(ErrorCode::kInvalidArgument, fmt::format("RSA keys must have {} to {} bits; this one has {}",
                                                                kMinRsaBits, kMaxRsaBits, bits));
    }
    // An odd exponent of at least 3: with e = 1 a "signature" is the padded digest itself,
    // which anyone can make (CA/Browser Forum Baseline Requirements 6.1.6).
    BIGNUM* e = nullptr;
    const bool odd_enough = EVP_PKEY_get_bn_param(key, "e", &e) == 1 && BN_is_odd(e) && !BN_is_one(e);
    BN_free(e);
    if (!odd_enough)
      return MakeError(ErrorCode::kInvalidArgument, "the RSA public exponent must be odd and at least 3");
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

constexpr std::string_view kNotPublicKeyPem = "the public key is not a PEM SubjectPublicKeyInfo (BEGIN PUBLIC KEY)";

Result<std::string> PublicKeyPemToDer(std::string_view pem) {
  if (pem.size() > kMaxPublicKeyPemBytes) {
    return MakeError(ErrorCode::kInvalidArgument,
                     fmt::format("the public key is larger than {} bytes", kMaxPublicKeyPemBytes));
  }
  // The PEM's bytes, then the key imported as a CSR's is (PEM_read_bio_PUBKEY's decoders
  // cost ~400 µs a key, which a 100,000-row upload pays 100,000 times).
  std::optional<std::string> bytes = PemBlockBytes(pem, PEM_STRING_PUBLIC);
  if (!bytes) return Invalid(std::string(kNotPublicKeyPem));
  const std::string& spki = *bytes;
  DerReader reader(spki);
  Result<DerElement> element = reader.Next(kDerSequence, "public key");
  if (!element.ok() || !reader.done()) return Invalid(std::string(kNotPublicKeyPem));
  CF_ASSIGN_OR_RETURN(PkeyPtr key, ImportPublicKey(*element, "the"));
  CF_RETURN_IF_ERROR(LintPublicKey(key.get()));
  return spki;
}

Result<std::string> PublicKeyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key) != 1) return OpenSslError("writing public key");
  return BioToString(bio.get());
}

Result<std::string> MakeCsrPem(EVP_PKEY* key, std::string_view common_name, const std::vector<std::string>& sans) {
  X509ReqPtr req(X509_REQ_new());
  if (!req) return OpenSslError("making a CSR");
  const std::string cn(common_name);
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                                 0) != 1) {
    return OpenSslError("the CSR's common name");
  }
  if (!sans.empty()) {
    GeneralNamesPtr names(sk_GENERAL_NAME_new_null());
    for (const auto& san : sans) {
      unsigned char ip[16];
      int ip_len = 0;
      if (inet_pton(AF_INET, san.c_str(), ip) == 1) {
        ip_len = 4;
      } else if (inet_pton(AF_INET6, san.c_str(), ip) == 1) {
        ip_len = 16;
      }
      GENERAL_NAME* gn = GENERAL_NAME_new();
      ASN1_STRING* value = ip_len ? ASN1_OCTET_STRING_new() : ASN1_IA5STRING_new();
      const bool set = gn && value &&
                       (ip_len ? ASN1_OCTET_STRING_set(value, ip, ip_len)
                               : ASN1_STRING_set(value, san.data(), static_cast<int>(san.size())));
      if (!set || sk_GENERAL_NAME_push(names.get(), gn) == 0) {
        ASN1_STRING_free(value);
        GENERAL_NAME_free(gn);
        return OpenSslError("the CSR's subjectAltName");
      }
      GENERAL_NAME_set0_value(gn, ip_len ? GEN_IPADD : GEN_DNS, value);
    }
    ExtensionsPtr exts(sk_X509_EXTENSION_new_null());
    X509_EXTENSION* ext = X509V3_EXT_i2d(NID_subject_alt_name, 0, names.get());
    if (!ext || sk_X509_EXTENSION_push(exts.get(), ext) == 0) {
      X509_EXTENSION_free(ext);
      return OpenSslError("the CSR's subjectAltName");
    }
    if (X509_REQ_add_extensions(req.get(), exts.get()) != 1) return OpenSslError("the CSR's extensions");
  }
  if (X509_REQ_set_pubkey(req.get(), key) != 1) return OpenSslError("the CSR's public key");
  const bool ed25519 = EVP_PKEY_get_id(key) == EVP_PKEY_ED25519;
  if (X509_REQ_sign(req.get(), key, ed25519 ? nullptr : EVP_sha256()) <= 0) return OpenSslError("signing the CSR");
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509_REQ(bio.get(), req.get()) != 1) return OpenSslError("writing the CSR");
  return BioToString(bio.get());
}

}  // namespace certfleet::pki
