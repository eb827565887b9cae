#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "pki/ossl.h"

namespace certfleet::pki {

// DER tags certfleet reads and writes.
inline constexpr uint8_t kDerBoolean = 0x01;
inline constexpr uint8_t kDerInteger = 0x02;
inline constexpr uint8_t kDerBitString = 0x03;
inline constexpr uint8_t kDerOctetString = 0x04;
inline constexpr uint8_t kDerNull = 0x05;
inline constexpr uint8_t kDerOid = 0x06;
inline constexpr uint8_t kDerUtf8String = 0x0c;
inline constexpr uint8_t kDerPrintableString = 0x13;
inline constexpr uint8_t kDerIa5String = 0x16;
inline constexpr uint8_t kDerUtcTime = 0x17;
inline constexpr uint8_t kDerGeneralizedTime = 0x18;
inline constexpr uint8_t kDerSequence = 0x30;
inline constexpr uint8_t kDerSet = 0x31;
inline constexpr uint8_t kDerContext0 = 0xa0;  // [0] constructed
inline constexpr uint8_t kDerContext3 = 0xa3;  // [3] constructed

// One DER element: its tag, its contents, and the whole encoding (tag and length included).
struct DerElement {
  uint8_t tag = 0;
  std::string_view contents;
  std::string_view encoding;
};

// Walks the elements of a DER encoding one at a time without decoding them, so that callers
// can hand each part to the decoder that fits it (or to none). Every length is checked
// against the input; indefinite lengths and multi-byte tags, which DER structures certfleet
// reads never use, are refused. Views point into the input, which must outlive them.
class DerReader {
 public:
  explicit DerReader(std::string_view der) : rest_(der) {}

  bool done() const { return rest_.empty(); }
  // The next element; kInvalidArgument, naming `what`, if it is malformed or not `tag`.
  Result<DerElement> Next(uint8_t tag, std::string_view what);
  // The next element whatever its tag (a CHOICE); kInvalidArgument if it is malformed.
  Result<DerElement> NextAny(std::string_view what);
  // The next element if it has `tag`, nothing otherwise (for OPTIONAL fields).
  Result<std::optional<DerElement>> NextIf(uint8_t tag, std::string_view what);

 private:
  std::string_view rest_;
};

// Appends one DER element (tag, definite length, contents) to `out`.
void DerAppend(std::string& out, uint8_t tag, std::string_view contents);
// One DER element as a new string.
std::string Der(uint8_t tag, std::string_view contents);
// A DER INTEGER of the unsigned big-endian `magnitude`, in its shortest form.
std::string DerUnsignedInteger(std::string_view magnitude);
// The DER encoding of an OpenSSL object (OID) by its NID; empty for an unknown NID.
std::string DerOid(int nid);

// The DER bytes of the first PEM block labelled `label` (PEM_STRING_X509, ...) in `pem`, not
// decoded (OpenSSL 3.0's decoders cost ~50 µs a certificate, ~400 µs a public key); nullopt
// if there is none.
std::optional<std::string> PemBlockBytes(std::string_view pem, const char* label);
// The DER bytes of every PEM block labelled `label`, in order, at most `most` of them.
std::vector<std::string> PemBlocksBytes(std::string_view pem, const char* label, size_t most = SIZE_MAX);

// The contents of a BIT STRING with no unused bits (keys and signatures), or kInvalidArgument.
Result<std::string_view> BitStringBytes(const DerElement& bit_string, std::string_view what);

// A SubjectPublicKeyInfo split without decoding the key (OpenSSL 3.0 would build a decoder
// chain for that): the algorithm, decoded, and the key's bytes (a view into `spki_der`).
struct PublicKeyInfo {
  AlgorPtr algorithm;
  std::string_view key;
};
// `spki_der` is the whole SEQUENCE; kInvalidArgument if it is malformed.
Result<PublicKeyInfo> SplitPublicKeyInfo(std::string_view spki_der);

}  // namespace certfleet::pki
