#include "pki/der.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/pem.h>

namespace certfleet::pki {
namespace {

// Lengths of more than four octets would describe gigabytes; nothing certfleet reads is that big.
constexpr size_t kMaxLengthOctets = 4;
constexpr uint8_t kHighTagNumber = 0x1f;
constexpr uint8_t kLongLength = 0x80;

Error Malformed(std::string_view what, std::string_view why) {
  return MakeError(ErrorCode::kInvalidArgument, fmt::format("malformed {}: {}", what, why));
}

}  // namespace

Result<std::optional<DerElement>> DerReader::NextIf(uint8_t tag, std::string_view what) {
  if (rest_.empty() || static_cast<uint8_t>(rest_[0]) != tag) return std::optional<DerElement>();
  CF_ASSIGN_OR_RETURN(DerElement e, Next(tag, what));
  return std::optional<DerElement>(e);
}

Result<DerElement> DerReader::Next(uint8_t tag, std::string_view what) {
  if (!rest_.empty() && static_cast<uint8_t>(rest_[0]) != tag) {
    return Malformed(what, fmt::format("tag 0x{:02x} where 0x{:02x} belongs", static_cast<uint8_t>(rest_[0]), tag));
  }
  return NextAny(what);
}

Result<DerElement> DerReader::NextAny(std::string_view what) {
  if (rest_.size() < 2) return Malformed(what, "truncated");
  const auto first = static_cast<uint8_t>(rest_[0]);
  if ((first & kHighTagNumber) == kHighTagNumber) return Malformed(what, "unexpected multi-byte tag");
  size_t header = 2;
  size_t length = static_cast<uint8_t>(rest_[1]);
  if (length & kLongLength) {
    const size_t octets = length & ~size_t{kLongLength};
    if (octets == 0) return Malformed(what, "indefinite length");
    if (octets > kMaxLengthOctets) return Malformed(what, "length too large");
    if (rest_.size() < header + octets) return Malformed(what, "truncated");
    length = 0;
    for (size_t i = 0; i < octets; ++i) length = (length << 8) | static_cast<uint8_t>(rest_[header + i]);
    header += octets;
  }
  if (length > rest_.size() - header) return Malformed(what, "truncated");
  DerElement e{first, rest_.substr(header, length), rest_.substr(0, header + length)};
  rest_.remove_prefix(header + length);
  return e;
}

void DerAppend(std::string& out, uint8_t tag, std::string_view contents) {
  out += static_cast<char>(tag);
  const size_t n = contents.size();
  if (n < kLongLength) {
    out += static_cast<char>(n);
  } else {
    int octets = 0;
    for (size_t rest = n; rest != 0; rest >>= 8) ++octets;
    out += static_cast<char>(kLongLength | octets);
    for (int i = octets - 1; i >= 0; --i) out += static_cast<char>((n >> (8 * i)) & 0xff);
  }
  out += contents;
}

std::string Der(uint8_t tag, std::string_view contents) {
  std::string out;
  out.reserve(contents.size() + 6);
  DerAppend(out, tag, contents);
  return out;
}

std::string DerUnsignedInteger(std::string_view magnitude) {
  while (magnitude.size() > 1 && magnitude[0] == 0) magnitude.remove_prefix(1);
  std::string contents;
  // A set top bit would make the number negative: a zero octet keeps it positive.
  if (magnitude.empty() || (static_cast<uint8_t>(magnitude[0]) & 0x80) != 0) contents += '\0';
  contents += magnitude;
  return Der(kDerInteger, contents);
}

std::string DerOid(int nid) {
  const ASN1_OBJECT* obj = OBJ_nid2obj(nid);
  if (obj == nullptr || OBJ_length(obj) == 0) return {};
  return Der(kDerOid, std::string_view(reinterpret_cast<const char*>(OBJ_get0_data(obj)), OBJ_length(obj)));
}

std::vector<std::string> PemBlocksBytes(std::string_view pem, const char* label, size_t most) {
  std::vector<std::string> out;
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  while (bio && out.size() < most) {
    char* name = nullptr;
    unsigned char* der = nullptr;
    long len = 0;
    if (PEM_bytes_read_bio(&der, &len, &name, label, bio.get(), nullptr, nullptr) != 1) break;
    out.emplace_back(reinterpret_cast<char*>(der), static_cast<size_t>(len));
    OPENSSL_free(name);
    OPENSSL_free(der);
  }
  ERR_clear_error();  // the end of the input reads as an error
  return out;
}

std::optional<std::string> PemBlockBytes(std::string_view pem, const char* label) {
  std::vector<std::string> blocks = PemBlocksBytes(pem, label, 1);
  if (blocks.empty()) return std::nullopt;
  return std::move(blocks.front());
}

Result<std::string_view> BitStringBytes(const DerElement& bit_string, std::string_view what) {
  if (bit_string.contents.empty() || bit_string.contents[0] != 0) return Malformed(what, "bit string with unused bits");
  return bit_string.contents.substr(1);
}

Result<PublicKeyInfo> SplitPublicKeyInfo(std::string_view spki_der) {
  DerReader top(spki_der);
  CF_ASSIGN_OR_RETURN(DerElement spki, top.Next(kDerSequence, "subject public key info"));
  if (!top.done()) return Malformed("subject public key info", "trailing data");
  DerReader parts(spki.contents);
  CF_ASSIGN_OR_RETURN(DerElement alg, parts.Next(kDerSequence, "public key algorithm"));
  CF_ASSIGN_OR_RETURN(DerElement bits, parts.Next(kDerBitString, "public key"));
  if (!parts.done()) return Malformed("public key", "trailing data");
  PublicKeyInfo out;
  CF_ASSIGN_OR_RETURN(out.key, BitStringBytes(bits, "public key"));
  const auto* p = reinterpret_cast<const unsigned char*>(alg.encoding.data());
  out.algorithm.reset(d2i_X509_ALGOR(nullptr, &p, static_cast<long>(alg.encoding.size())));
  if (!out.algorithm || p != reinterpret_cast<const unsigned char*>(alg.encoding.data() + alg.encoding.size())) {
    return OpenSslError("malformed public key algorithm", ErrorCode::kInvalidArgument);
  }
  return out;
}

}  // namespace certfleet::pki
