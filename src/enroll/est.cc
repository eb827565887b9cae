#include "enroll/est.h"

#include <fmt/format.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>

#include "core/crypto.h"
#include "pki/certificate.h"
#include "pki/der.h"
#include "pki/pkcs7.h"

namespace certfleet::enroll::est {
namespace {

constexpr size_t kLineLength = 64;

Error Invalid(std::string message) { return MakeError(ErrorCode::kInvalidArgument, std::move(message)); }

}  // namespace

Result<std::string> BodyDer(std::string_view body) {
  if (body.size() > kMaxBodyBytes) return Invalid(fmt::format("the body is larger than {} bytes", kMaxBodyBytes));
  if (body.empty()) return Invalid("the body is empty");
  if (body.find("-----BEGIN") != std::string_view::npos) return std::string(body);  // PEM: the parser reads it
  if (static_cast<unsigned char>(body.front()) == pki::kDerSequence) return std::string(body);
  std::string compact;
  compact.reserve(body.size());
  for (char c : body) {
    if (c != '\r' && c != '\n' && c != ' ' && c != '\t') compact.push_back(c);
  }
  std::optional<std::string> der = Base64Decode(compact);
  if (!der || der->empty()) return Invalid("the body is not base64 DER (RFC 7030 sends base64)");
  return std::move(*der);
}

std::string Base64Body(std::string_view der, std::string_view eol) {
  const std::string text = Base64Encode(der);
  std::string out;
  out.reserve(text.size() + (text.size() / kLineLength + 1) * eol.size());
  for (size_t i = 0; i < text.size(); i += kLineLength) {
    out.append(text, i, kLineLength);
    out.append(eol);
  }
  return out;
}

Result<std::string> CertsOnly(std::string_view pem) {
  // The PEM blocks' bytes as they are: decoding each certificate (OpenSSL 3.0's d2i_X509,
  // ~50 µs) and encoding it again would cost more than the rest of an answer.
  std::vector<std::string> ders = pki::PemBlocksBytes(pem, PEM_STRING_X509);
  if (ders.empty()) return MakeError(ErrorCode::kInvalidArgument, "no PEM certificate");
  return pki::CertsOnlyPkcs7(ders);
}

std::string CsrAttributes(const Profile& profile) {
  std::string attrs = pki::DerOid(NID_pkcs9_challengePassword);
  switch (profile.key_type) {
    case pki::KeyType::kEcP256:
    case pki::KeyType::kEcP384: {
      const bool p384 = profile.key_type == pki::KeyType::kEcP384;
      std::string attribute = pki::DerOid(NID_X9_62_id_ecPublicKey);
      pki::DerAppend(attribute, pki::kDerSet, pki::DerOid(p384 ? NID_secp384r1 : NID_X9_62_prime256v1));
      pki::DerAppend(attrs, pki::kDerSequence, attribute);
      attrs += pki::DerOid(p384 ? NID_ecdsa_with_SHA384 : NID_ecdsa_with_SHA256);
      break;
    }
    case pki::KeyType::kRsa2048:
    case pki::KeyType::kRsa3072:
    case pki::KeyType::kRsa4096:
      attrs += pki::DerOid(NID_rsaEncryption);
      attrs += pki::DerOid(NID_sha256WithRSAEncryption);
      break;
    case pki::KeyType::kEd25519:
      attrs += pki::DerOid(NID_ED25519);
      break;
  }
  return pki::Der(pki::kDerSequence, attrs);
}

Result<std::string> ServerKeygenBody(std::string_view private_key_pem, std::string_view chain_pem,
                                     std::string& content_type) {
  std::optional<std::string> key = pki::PemBlockBytes(private_key_pem, PEM_STRING_PKCS8INF);
  if (!key) return MakeError(ErrorCode::kInternal, "the generated key is not PKCS#8 PEM");
  CF_ASSIGN_OR_RETURN(std::string pkcs7, CertsOnly(chain_pem));
  // Base64 has no '-': no line of a part can begin with the boundary's "--".
  const std::string boundary = "certfleet-est-" + RandomToken(12);
  content_type = fmt::format("multipart/mixed; boundary={}", boundary);
  return fmt::format(
      "--{0}\r\nContent-Type: application/pkcs8\r\nContent-Transfer-Encoding: base64\r\n\r\n{1}--{0}\r\n"
      "Content-Type: {2}\r\nContent-Transfer-Encoding: base64\r\n\r\n{3}--{0}--\r\n",
      // MIME (RFC 2046) ends every line of a multipart body with CRLF.
      boundary, Base64Body(*key, "\r\n"), kCertsOnlyType, Base64Body(pkcs7, "\r\n"));
}

}  // namespace certfleet::enroll::est
