#include "pki/certificate.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <ctime>
#include <optional>

#include "core/crypto.h"
#include "pki/der.h"

namespace certfleet::pki {
namespace {

// Serials of 128 bits, as CA/B Forum and RFC 5280 allow (<= 20 octets): 48 of time, 80 random.
constexpr size_t kSerialTimeBytes = 6;
constexpr size_t kSerialRandomBytes = 10;
// Upper bounds of X.520 (RFC 5280 appendix A), in characters.
constexpr size_t kUbCommonName = 64;
constexpr size_t kUbOrganization = 64;
constexpr size_t kUbState = 128;
// RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
constexpr int kFirstGeneralizedYear = 2050;
constexpr int kFirstUtcYear = 1950;
// keyUsage bits (RFC 5280 4.2.1.3), numbered from the first octet's high bit.
constexpr int kDigitalSignature = 0;
constexpr int kKeyEncipherment = 2;
constexpr int kKeyCertSign = 5;
constexpr int kCrlSign = 6;
// Context tags of GeneralName (RFC 5280 4.2.1.6) and AuthorityKeyIdentifier, all IMPLICIT.
constexpr uint8_t kGeneralNameDns = 0x82;        // [2] dNSName
constexpr uint8_t kGeneralNameUri = 0x86;        // [6] uniformResourceIdentifier
constexpr uint8_t kGeneralNameIp = 0x87;         // [7] iPAddress
constexpr uint8_t kKeyIdentifier = 0x80;         // [0] keyIdentifier
constexpr std::string_view kDerTrue("\xff", 1);  // a BOOLEAN's contents

Error Invalid(std::string message) { return MakeError(ErrorCode::kInvalidArgument, std::move(message)); }

// Characters of well-formed UTF-8 text, or nothing if it is not.
std::optional<size_t> Utf8Length(std::string_view s) {
  size_t chars = 0;
  for (size_t i = 0; i < s.size(); ++chars) {
    const auto c = static_cast<uint8_t>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      n = 1, cp = c;
    } else if ((c & 0xe0) == 0xc0) {
      n = 2, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 3, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 4, cp = c & 0x07;
    } else {
      return std::nullopt;
    }
    if (i + n > s.size()) return std::nullopt;
    for (size_t k = 1; k < n; ++k) {
      const auto cc = static_cast<uint8_t>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return std::nullopt;
      cp = (cp << 6) | (cc & 0x3f);
    }
    constexpr uint32_t kMinOf[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinOf[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return std::nullopt;  // overlong, surrogate
    i += n;
  }
  return chars;
}

// One RelativeDistinguishedName with a single attribute.
Result<void> AppendRdn(std::string& name, int nid, uint8_t string_tag, std::string_view value, size_t max_chars,
                       std::string_view field) {
  if (value.empty()) return Ok();
  std::optional<size_t> chars = Utf8Length(value);
  if (!chars) return Invalid(fmt::format("the {} is not valid UTF-8", field));
  if (*chars > max_chars) return Invalid(fmt::format("the {} is longer than {} characters", field, max_chars));
  DerAppend(name, kDerSet, Der(kDerSequence, DerOid(nid) + Der(string_tag, value)));
  return Ok();
}

Result<std::string> SubjectName(const CertificateSpec& spec) {
  if (!spec.country.empty() &&
      (spec.country.size() != 2 || !std::isalpha(static_cast<unsigned char>(spec.country[0])) ||
       !std::isalpha(static_cast<unsigned char>(spec.country[1])))) {
    return Invalid("the country must be two letters");
  }
  std::string rdns;
  CF_RETURN_IF_ERROR(AppendRdn(rdns, NID_countryName, kDerPrintableString, spec.country, 2, "country"));
  CF_RETURN_IF_ERROR(AppendRdn(rdns, NID_stateOrProvinceName, kDerUtf8String, spec.state, kUbState, "state"));
  CF_RETURN_IF_ERROR(
      AppendRdn(rdns, NID_organizationName, kDerUtf8String, spec.organization, kUbOrganization, "organization"));
  if (spec.common_name.empty()) return Invalid("the common name is empty");
  CF_RETURN_IF_ERROR(AppendRdn(rdns, NID_commonName, kDerUtf8String, spec.common_name, kUbCommonName, "common name"));
  return Der(kDerSequence, rdns);
}

Result<std::string> DerTime(int64_t millis) {
  const auto seconds = static_cast<time_t>(millis / 1000);
  std::tm tm{};
  if (gmtime_r(&seconds, &tm) == nullptr) return Invalid("a time out of range");
  const int year = tm.tm_year + 1900;
  if (year < kFirstUtcYear || year > 9999) return Invalid("a time out of range");
  const bool utc = year < kFirstGeneralizedYear;
  std::string text = utc ? fmt::format("{:02}", year % 100) : fmt::format("{:04}", year);
  text += fmt::format("{:02}{:02}{:02}{:02}{:02}Z", tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return Der(utc ? kDerUtcTime : kDerGeneralizedTime, text);
}

// A BIT STRING of the named bits, in DER's shortest form.
std::string KeyUsageBits(std::initializer_list<int> bits) {
  uint16_t value = 0;
  int last = 0;
  for (int b : bits) {
    value |= static_cast<uint16_t>(0x8000 >> b);
    last = std::max(last, b);
  }
  const int octets = last / 8 + 1;
  std::string contents(1, static_cast<char>(8 * octets - 1 - last));
  for (int i = 0; i < octets; ++i) contents += static_cast<char>((value >> (8 * (1 - i))) & 0xff);
  return Der(kDerBitString, contents);
}

void AppendExtension(std::string& out, int nid, bool critical, std::string_view value) {
  std::string ext = DerOid(nid);
  if (critical) ext += Der(kDerBoolean, kDerTrue);
  DerAppend(ext, kDerOctetString, value);
  DerAppend(out, kDerSequence, ext);
}

Result<std::string> Sha1(std::string_view data) {
  static EVP_MD* const kSha1 = EVP_MD_fetch(nullptr, "SHA1", nullptr);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (kSha1 == nullptr || EVP_Digest(data.data(), data.size(), md, &len, kSha1, nullptr) != 1) {
    return OpenSslError("hashing the subject key identifier");
  }
  return std::string(reinterpret_cast<char*>(md), len);
}

Result<std::string> SubjectAltName(const CertificateSpec& spec) {
  std::string names;
  for (const auto& d : spec.dns_names) {
    for (char c : d) {
      if (static_cast<unsigned char>(c) >= 0x80) return Invalid("DNS name " + d + " is not ASCII");
    }
    DerAppend(names, kGeneralNameDns, d);
  }
  for (const auto& ip : spec.ip_addresses) {
    unsigned char addr[16];
    if (inet_pton(AF_INET, ip.c_str(), addr) == 1) {
      DerAppend(names, kGeneralNameIp, std::string_view(reinterpret_cast<char*>(addr), 4));
    } else if (inet_pton(AF_INET6, ip.c_str(), addr) == 1) {
      DerAppend(names, kGeneralNameIp, std::string_view(reinterpret_cast<char*>(addr), 16));
    } else {
      return Invalid("not an IP address: " + ip);
    }
  }
  return Der(kDerSequence, names);
}

Result<std::string> Extensions(const CertificateSpec& spec, EVP_PKEY* subject_key, std::string_view subject_key_bits,
                               X509* issuer) {
  std::string exts;
  if (spec.is_ca) {
    std::string bc = Der(kDerBoolean, kDerTrue);
    if (spec.path_len >= 0) {
      const auto len = static_cast<uint32_t>(spec.path_len);
      std::string magnitude;
      for (int i = 3; i >= 0; --i) magnitude += static_cast<char>((len >> (8 * i)) & 0xff);
      bc += DerUnsignedInteger(magnitude);
    }
    AppendExtension(exts, NID_basic_constraints, true, Der(kDerSequence, bc));
    // digitalSignature too: the CA's key signs its OCSP responses (RFC 5280 4.2.1.3).
    AppendExtension(exts, NID_key_usage, true, KeyUsageBits({kDigitalSignature, kKeyCertSign, kCrlSign}));
  } else {
    AppendExtension(exts, NID_basic_constraints, true, Der(kDerSequence, ""));
    AppendExtension(exts, NID_key_usage, true,
                    EVP_PKEY_is_a(subject_key, "RSA") ? KeyUsageBits({kDigitalSignature, kKeyEncipherment})
                                                      : KeyUsageBits({kDigitalSignature}));
    std::string eku;
    if (spec.server_auth) eku += DerOid(NID_server_auth);
    if (spec.client_auth) eku += DerOid(NID_client_auth);
    if (!eku.empty()) AppendExtension(exts, NID_ext_key_usage, false, Der(kDerSequence, eku));
  }
  // RFC 5280 4.2.1.2 method (1): SHA-1 of the subjectPublicKey bits.
  CF_ASSIGN_OR_RETURN(std::string key_id, Sha1(subject_key_bits));
  AppendExtension(exts, NID_subject_key_identifier, false, Der(kDerOctetString, key_id));
  if (issuer) {
    const ASN1_OCTET_STRING* issuer_ski = X509_get0_subject_key_id(issuer);
    if (issuer_ski == nullptr) return MakeError(ErrorCode::kInternal, "the issuer has no subject key identifier");
    AppendExtension(
        exts, NID_authority_key_identifier, false,
        Der(kDerSequence,
            Der(kKeyIdentifier, std::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(issuer_ski)),
                                                 ASN1_STRING_length(issuer_ski)))));
  }
  if (!spec.crl_url.empty()) {
    // DistributionPoint { distributionPoint [0] { fullName [0] { uniformResourceIdentifier [6] } } }
    AppendExtension(
        exts, NID_crl_distribution_points, false,
        Der(kDerSequence, Der(kDerSequence, Der(kDerContext0, Der(kDerContext0, Der(kGeneralNameUri, spec.crl_url))))));
  }
  if (!spec.ocsp_url.empty()) {
    AppendExtension(exts, NID_info_access, false,
                    Der(kDerSequence, Der(kDerSequence, DerOid(NID_ad_OCSP) + Der(kGeneralNameUri, spec.ocsp_url))));
  }
  if (!spec.dns_names.empty() || !spec.ip_addresses.empty()) {
    CF_ASSIGN_OR_RETURN(std::string san, SubjectAltName(spec));
    AppendExtension(exts, NID_subject_alt_name, false, san);
  }
  return Der(kDerContext3, Der(kDerSequence, exts));
}

}  // namespace

const EVP_MD* SigningDigest(EVP_PKEY* issuer_key) {
  if (EVP_PKEY_is_a(issuer_key, "ED25519")) return nullptr;
  if (EVP_PKEY_is_a(issuer_key, "EC") && EVP_PKEY_get_bits(issuer_key) == 384) return EVP_sha384();
  if (EVP_PKEY_is_a(issuer_key, "EC") && EVP_PKEY_get_bits(issuer_key) == 521) return EVP_sha512();
  return EVP_sha256();
}

namespace {

// How an issuer key signs: the AlgorithmIdentifier and the digest (null: none, Ed25519).
struct SignatureAlgorithmInfo {
  std::string der;
  const char* digest;
};
Result<SignatureAlgorithmInfo> SignatureAlgorithm(EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "ED25519")) return SignatureAlgorithmInfo{Der(kDerSequence, DerOid(NID_ED25519)), nullptr};
  if (EVP_PKEY_is_a(key, "EC")) {
    // Each curve with its digest (RFC 5480 4).
    if (EVP_PKEY_get_bits(key) == 384) {
      return SignatureAlgorithmInfo{Der(kDerSequence, DerOid(NID_ecdsa_with_SHA384)), "SHA384"};
    }
    if (EVP_PKEY_get_bits(key) == 521) {
      return SignatureAlgorithmInfo{Der(kDerSequence, DerOid(NID_ecdsa_with_SHA512)), "SHA512"};
    }
    return SignatureAlgorithmInfo{Der(kDerSequence, DerOid(NID_ecdsa_with_SHA256)), "SHA256"};
  }
  if (EVP_PKEY_is_a(key, "RSA")) {
    return SignatureAlgorithmInfo{Der(kDerSequence, DerOid(NID_sha256WithRSAEncryption) + Der(kDerNull, "")), "SHA256"};
  }
  return MakeError(ErrorCode::kInvalidArgument, "the issuer's key type cannot sign certificates");
}

}  // namespace

// Certificates are written as DER directly: OpenSSL 3.0's X509 builder (X509V3_EXT_conf,
// X509_sign) costs twice the signature itself, and the issuance path is the product's hot path.
Result<IssuedCertificate> IssueCertificate(const CertificateSpec& spec, EVP_PKEY* subject_key, X509* issuer,
                                           EVP_PKEY* issuer_key, std::string_view subject_spki_der) {
  std::string spki_storage;
  if (subject_spki_der.empty()) {
    CF_ASSIGN_OR_RETURN(spki_storage, I2d<i2d_PUBKEY>(subject_key, "the public key"));
    subject_spki_der = spki_storage;
  }
  CF_ASSIGN_OR_RETURN(PublicKeyInfo spki, SplitPublicKeyInfo(subject_spki_der));
  CF_ASSIGN_OR_RETURN(auto algorithm, SignatureAlgorithm(issuer_key));

  // The issuance time in milliseconds, then random bits: unpredictable, as CA/Browser Forum
  // asks (at least 64 bits from a CSPRNG), while the indexes on serials (the inventory's
  // primary key, the registry's links to certificates) grow at one end instead of being
  // written all over, which costs the database less per certificate.
  const auto ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  std::string serial(kSerialTimeBytes, '\0');
  for (size_t i = 0; i < kSerialTimeBytes; ++i) serial[i] = static_cast<char>(ms >> (8 * (kSerialTimeBytes - 1 - i)));
  serial[0] = static_cast<char>(serial[0] & 0x7f);  // positive, as RFC 5280 requires (until the year 6429)
  serial += RandomBytes(kSerialRandomBytes);

  CF_ASSIGN_OR_RETURN(std::string subject, SubjectName(spec));
  std::string issuer_name = subject;
  if (issuer) {
    CF_ASSIGN_OR_RETURN(issuer_name, I2d<i2d_X509_NAME>(X509_get_subject_name(issuer), "the issuer's name"));
  }
  CF_ASSIGN_OR_RETURN(std::string not_before, DerTime(spec.not_before_millis));
  CF_ASSIGN_OR_RETURN(std::string not_after, DerTime(spec.not_after_millis));
  CF_ASSIGN_OR_RETURN(std::string extensions, Extensions(spec, subject_key, spki.key, issuer));

  std::string tbs_fields = Der(kDerContext0, Der(kDerInteger, "\x02"));  // version v3
  tbs_fields += DerUnsignedInteger(serial);
  tbs_fields += algorithm.der;
  tbs_fields += issuer_name;
  tbs_fields += Der(kDerSequence, not_before + not_after);
  tbs_fields += subject;
  tbs_fields += subject_spki_der;
  tbs_fields += extensions;
  const std::string tbs = Der(kDerSequence, tbs_fields);

  std::unique_ptr<EVP_MD_CTX, Deleter<EVP_MD_CTX_free>> ctx(EVP_MD_CTX_new());
  size_t sig_len = 0;
  if (!ctx || EVP_DigestSignInit_ex(ctx.get(), nullptr, algorithm.digest, nullptr, nullptr, issuer_key, nullptr) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &sig_len, reinterpret_cast<const unsigned char*>(tbs.data()), tbs.size()) !=
          1) {
    return OpenSslError("signing certificate");
  }
  std::string signature(sig_len + 1, '\0');  // a leading zero: no unused bits
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data() + 1), &sig_len,
                     reinterpret_cast<const unsigned char*>(tbs.data()), tbs.size()) != 1) {
    return OpenSslError("signing certificate");
  }
  signature.resize(sig_len + 1);

  IssuedCertificate out;
  out.der = Der(kDerSequence, tbs + algorithm.der + Der(kDerBitString, signature));
  CertificateFacts& f = out.facts;
  f.serial_hex = HexEncode(serial);
  const size_t nz = f.serial_hex.find_first_not_of('0');
  f.serial_hex = nz == std::string::npos ? "0" : f.serial_hex.substr(nz);
  f.not_before_millis = spec.not_before_millis / 1000 * 1000;
  f.not_after_millis = spec.not_after_millis / 1000 * 1000;
  f.sha256_fingerprint = Sha256Hex(out.der);
  f.common_name = spec.common_name;
  f.is_ca = spec.is_ca;
  f.pem = PemEncode("CERTIFICATE", out.der);
  return out;
}

Result<X509Ptr> SignCertificate(const CertificateSpec& spec, EVP_PKEY* subject_key, X509* issuer, EVP_PKEY* issuer_key,
                                std::string_view subject_spki_der) {
  CF_ASSIGN_OR_RETURN(IssuedCertificate issued,
                      IssueCertificate(spec, subject_key, issuer, issuer_key, subject_spki_der));
  const auto* p = reinterpret_cast<const unsigned char*>(issued.der.data());
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(issued.der.size())));
  if (!cert) return OpenSslError("reading the certificate just signed");
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

Result<std::string> CertificateToDer(X509* cert) { return I2d<i2d_X509>(cert, "the certificate"); }

std::vector<std::string> SubjectAltNames(X509* cert) {
  std::vector<std::string> out;
  GENERAL_NAMES* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
    if (gn->type == GEN_DNS) {
      out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.dNSName)),
                       static_cast<size_t>(ASN1_STRING_length(gn->d.dNSName)));
    } else if (gn->type == GEN_IPADD) {
      const int len = ASN1_STRING_length(gn->d.iPAddress);
      char text[INET6_ADDRSTRLEN] = {};
      if ((len == 4 || len == 16) && inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(gn->d.iPAddress),
                                               text, sizeof(text)) != nullptr) {
        out.emplace_back(text);
      }
    }
  }
  GENERAL_NAMES_free(names);
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

std::optional<std::string> CanonicalSerial(std::string_view text) {
  // A serial is at most 20 bytes (RFC 5280 4.1.2.2); the bound also keeps junk short.
  constexpr size_t kMaxSerialText = 64;
  if (text.size() > kMaxSerialText) return std::nullopt;
  if (text.starts_with("0x") || text.starts_with("0X")) text.remove_prefix(2);
  std::string out;
  for (char c : text) {
    if (c == ':') continue;
    if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
    if (out.empty() && c == '0') continue;
    out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  if (out.empty()) {
    if (text.find('0') == std::string_view::npos) return std::nullopt;  // no digit at all
    return "0";
  }
  return out;
}

namespace {

struct CertificateNames {
  DerElement issuer;
  DerElement subject;
};

// The issuer and subject of a DER certificate, after checking its outer structure
// (Certificate, TBSCertificate up to the key) with a DER reader.
Result<CertificateNames> SplitNames(std::string_view der) {
  auto bad = [] { return MakeError(ErrorCode::kInvalidArgument, "not an X.509 certificate"); };
  DerReader top(der);
  auto cert = top.Next(kDerSequence, "certificate");
  if (!cert.ok() || !top.done()) return bad();
  DerReader parts(cert->contents);
  auto tbs = parts.Next(kDerSequence, "tbsCertificate");
  auto alg = parts.Next(kDerSequence, "signatureAlgorithm");
  auto sig = parts.Next(kDerBitString, "signature");
  if (!tbs.ok() || !alg.ok() || !sig.ok() || !parts.done()) return bad();
  DerReader fields(tbs->contents);
  if (!fields.NextIf(kDerContext0, "version").ok() || !fields.Next(kDerInteger, "serial").ok() ||
      !fields.Next(kDerSequence, "signature").ok()) {
    return bad();
  }
  auto issuer = fields.Next(kDerSequence, "issuer");
  auto validity = fields.Next(kDerSequence, "validity");
  auto subject = fields.Next(kDerSequence, "subject");
  if (!issuer.ok() || !validity.ok() || !subject.ok() || !fields.Next(kDerSequence, "subjectPublicKeyInfo").ok()) {
    return bad();
  }
  return CertificateNames{*issuer, *subject};
}

}  // namespace

Result<bool> IsSelfIssued(std::string_view der) {
  CF_ASSIGN_OR_RETURN(CertificateNames names, SplitNames(der));
  return names.issuer.encoding == names.subject.encoding;
}

Result<std::string> CertificateSubjectCn(std::string_view der) {
  auto bad = [] { return MakeError(ErrorCode::kInvalidArgument, "not an X.509 certificate"); };
  CF_ASSIGN_OR_RETURN(CertificateNames names, SplitNames(der));
  const DerElement& subject = names.subject;
  // Name: SEQUENCE OF SET OF SEQUENCE {type OID, value}; CN is 2.5.4.3.
  constexpr std::string_view kCnOid = "\x55\x04\x03";
  DerReader rdns(subject.contents);
  while (!rdns.done()) {
    auto rdn = rdns.Next(kDerSet, "RDN");
    if (!rdn.ok()) return bad();
    DerReader attrs(rdn->contents);
    while (!attrs.done()) {
      auto attr = attrs.Next(kDerSequence, "attribute");
      if (!attr.ok()) return bad();
      DerReader tv(attr->contents);
      auto type = tv.Next(kDerOid, "attribute type");
      if (!type.ok()) return bad();
      if (type->contents != kCnOid) continue;
      auto value = tv.NextIf(kDerUtf8String, "CN");
      if (value.ok() && *value) return std::string((*value)->contents);
      value = tv.NextIf(kDerPrintableString, "CN");
      if (value.ok() && *value) return std::string((*value)->contents);
      // Other string types (BMPString, T61String, ...): OpenSSL converts them.
      const auto* p = reinterpret_cast<const unsigned char*>(subject.encoding.data());
      std::unique_ptr<X509_NAME, decltype(&X509_NAME_free)> name(
          d2i_X509_NAME(nullptr, &p, static_cast<long>(subject.encoding.size())), X509_NAME_free);
      if (!name) return bad();
      return NameEntry(name.get(), NID_commonName);
    }
  }
  return std::string();
}

std::string NameEntry(const X509_NAME* name, int nid) {
  const int idx = X509_NAME_get_index_by_NID(name, nid, -1);
  if (idx < 0) return std::string();
  unsigned char* utf8 = nullptr;
  const int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx)));
  if (len < 0) return std::string();
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

int64_t TimeMillis(const ASN1_TIME* t) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm)) * 1000;
}

int64_t NotBeforeMillis(const X509* cert) { return TimeMillis(X509_get0_notBefore(cert)); }
int64_t NotAfterMillis(const X509* cert) { return TimeMillis(X509_get0_notAfter(cert)); }

Result<CertificateFacts> Inspect(X509* cert) {
  CertificateFacts f;
  f.serial_hex = SerialHex(X509_get0_serialNumber(cert));
  f.not_before_millis = NotBeforeMillis(cert);
  f.not_after_millis = NotAfterMillis(cert);
  CF_ASSIGN_OR_RETURN(std::string der, CertificateToDer(cert));
  f.sha256_fingerprint = Sha256Hex(der);
  f.pem = PemEncode("CERTIFICATE", der);
  f.common_name = NameEntry(X509_get_subject_name(cert), NID_commonName);
  // Only basicConstraints, not X509_check_ca, which decodes every extension and hashes the whole certificate.
  std::unique_ptr<BASIC_CONSTRAINTS, Deleter<BASIC_CONSTRAINTS_free>> bc(
      static_cast<BASIC_CONSTRAINTS*>(X509_get_ext_d2i(cert, NID_basic_constraints, nullptr, nullptr)));
  f.is_ca = bc && bc->ca;
  return f;
}

Result<std::vector<X509Ptr>> CertificatesFromPem(std::string_view pem) {
  std::vector<X509Ptr> out;
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  while (X509* c = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) out.emplace_back(c);
  ERR_clear_error();  // the end of the bundle
  if (out.empty()) return MakeError(ErrorCode::kInvalidArgument, "no PEM certificate");
  return out;
}

Result<void> VerifyChain(X509* leaf, const std::vector<X509Ptr>& chain) {
  if (chain.empty()) return MakeError(ErrorCode::kInvalidArgument, "an empty chain");
  std::vector<X509*> untrusted;
  for (size_t i = 0; i + 1 < chain.size(); ++i) untrusted.push_back(chain[i].get());
  return VerifyToAnchors(leaf, untrusted, {chain.back().get()}, std::nullopt);
}

Result<void> VerifyToAnchors(X509* leaf, const std::vector<X509*>& untrusted, const std::vector<X509*>& anchors,
                             std::optional<int> purpose) {
  if (anchors.empty()) return MakeError(ErrorCode::kInvalidArgument, "no trust anchor");
  X509StorePtr store(X509_STORE_new());
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  STACK_OF(X509)* others = sk_X509_new_null();
  bool ready = store && ctx && others;
  for (X509* anchor : anchors) ready = ready && X509_STORE_add_cert(store.get(), anchor) == 1;
  for (X509* cert : untrusted) ready = ready && sk_X509_push(others, cert) > 0;
  ready = ready && X509_STORE_CTX_init(ctx.get(), store.get(), leaf, others) == 1;
  if (ready && purpose) ready = X509_STORE_CTX_set_purpose(ctx.get(), *purpose) == 1;
  const int verified = ready ? X509_verify_cert(ctx.get()) : -1;
  const int error = ready ? X509_STORE_CTX_get_error(ctx.get()) : 0;
  sk_X509_free(others);  // the certificates stay the caller's
  if (!ready) return OpenSslError("setting up chain verification");
  if (verified != 1) {
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("the certificate does not verify to its chain: {}",
                                                              X509_verify_cert_error_string(error)));
  }
  return Ok();
}

Result<X509Ptr> CertificateFromDer(std::string_view der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert || p != reinterpret_cast<const unsigned char*>(der.data() + der.size())) {
    return MakeError(ErrorCode::kInvalidArgument, "not a DER certificate");
  }
  return cert;
}

std::string SubjectText(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) < 0) return {};
  return BioToString(bio.get());
}

}  // namespace certfleet::pki
