#include "bulk/readers/microchip/microchip_reader.h"

#include <fmt/format.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <boost/json.hpp>

#include "core/crypto.h"
#include "core/log.h"
#include "core/text.h"
#include "pki/certificate.h"
#include "pki/ossl.h"

namespace certfleet::bulk::readers {
namespace {

namespace json = boost::json;

// One JWS entry with a device certificate and its signer is about 4 KiB.
constexpr size_t kMaxEntryBytes = size_t{1} << 20;

// A manifest signer: its certificate and key, how entries name it.
struct Signer {
  std::string kid;  // base64url of its SubjectKeyIdentifier
  std::string x5t;  // base64url of the SHA-256 of its DER
  int64_t not_before = 0;
  pki::PkeyPtr key;
};

Result<std::vector<Signer>> LoadSigners(const std::vector<std::string>& pems) {
  std::vector<Signer> out;
  for (const auto& pem : pems) {
    CF_ASSIGN_OR_RETURN(pki::X509Ptr cert, pki::CertificateFromPem(pem));
    const ASN1_OCTET_STRING* ski = X509_get0_subject_key_id(cert.get());
    if (ski == nullptr) {
      // No manifest can name it (a file dropped in bulk.verifier_dir, say): the others still check.
      log::Warn("a Microchip signer certificate without a SubjectKeyIdentifier is left out",
                {{"subject", pki::SubjectText(cert.get())}});
      continue;
    }
    Signer s;
    s.kid = Base64UrlEncode(std::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(ski)),
                                             static_cast<size_t>(ASN1_STRING_length(ski))));
    CF_ASSIGN_OR_RETURN(std::string der, pki::CertificateToDer(cert.get()));
    s.x5t = Base64UrlEncode(Sha256(der));
    CF_ASSIGN_OR_RETURN(pki::CertificateFacts facts, pki::Inspect(cert.get()));
    s.not_before = facts.not_before_millis;
    s.key.reset(X509_get_pubkey(cert.get()));
    if (!s.key) return MakeError(ErrorCode::kInvalidArgument, "a Microchip verification certificate has no key");
    out.push_back(std::move(s));
  }
  if (out.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "a Microchip manifest needs its signers' certificates to be checked");
  }
  std::sort(out.begin(), out.end(), [](const Signer& a, const Signer& b) { return a.not_before > b.not_before; });
  return out;
}

// A JWS signature as the DER the EVP verifier takes: ES* signatures are r||s (RFC 7518 3.4).
std::optional<std::string> SignatureDer(std::string_view alg, const std::string& raw) {
  if (!alg.starts_with("ES")) return raw;
  const size_t half = raw.size() / 2;
  if (raw.size() % 2 != 0 || half == 0) return std::nullopt;
  std::unique_ptr<ECDSA_SIG, decltype(&ECDSA_SIG_free)> sig(ECDSA_SIG_new(), ECDSA_SIG_free);
  BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()), static_cast<int>(half), nullptr);
  BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data() + half), static_cast<int>(half), nullptr);
  if (!sig || !r || !s || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
    BN_free(r);
    BN_free(s);
    return std::nullopt;
  }
  unsigned char* der = nullptr;
  const int len = i2d_ECDSA_SIG(sig.get(), &der);
  if (len <= 0) return std::nullopt;
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

const EVP_MD* Digest(std::string_view alg) {
  if (alg == "ES256" || alg == "RS256") return EVP_sha256();
  if (alg == "ES384" || alg == "RS384") return EVP_sha384();
  if (alg == "ES512" || alg == "RS512") return EVP_sha512();
  return nullptr;
}

bool Verify(EVP_PKEY* key, std::string_view alg, std::string_view signing_input, const std::string& signature) {
  const EVP_MD* md = Digest(alg);
  std::optional<std::string> der = SignatureDer(alg, signature);
  if (md == nullptr || !der) return false;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  const bool ok =
      ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, md, nullptr, key) == 1 &&
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(der->data()), der->size(),
                       reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size()) == 1;
  ERR_clear_error();
  return ok;
}

const json::string* StringAt(const json::value& v, std::string_view key) {
  const json::object* o = v.if_object();
  const json::value* field = o ? o->if_contains(key) : nullptr;
  return field ? field->if_string() : nullptr;
}

std::optional<json::value> JsonOfBase64Url(const json::string* text) {
  if (text == nullptr) return std::nullopt;
  std::optional<std::string> raw = Base64Decode(*text);
  if (!raw) return std::nullopt;
  boost::system::error_code ec;
  json::value v = json::parse(*raw, ec);
  if (ec) return std::nullopt;
  return v;
}

// Splits a JSON array read from a stream into its elements' texts, one at a time, without
// holding the array: tracks strings (with escapes) and nesting to find each element's end.
class ArraySplitter {
 public:
  explicit ArraySplitter(std::istream& in) : buf_(*in.rdbuf()) {}

  Result<std::optional<std::string>> Next() {
    const int first = SkipSpace();
    if (!started_) {
      if (first != '[') return MakeError(ErrorCode::kInvalidArgument, "a Microchip manifest is a JSON array");
      started_ = true;
      buf_.sbumpc();
      return Next();
    }
    if (first == ']') return std::optional<std::string>();
    if (first == ',' && seen_) {
      buf_.sbumpc();
      SkipSpace();
    } else if (seen_ || first == std::char_traits<char>::eof()) {
      return MakeError(ErrorCode::kInvalidArgument, "the manifest's JSON array is cut off or malformed");
    }
    std::string text;
    int depth = 0;
    bool in_string = false;
    bool escaped = false;
    for (;;) {
      const int c = buf_.sbumpc();
      if (c == std::char_traits<char>::eof()) {
        return MakeError(ErrorCode::kInvalidArgument, "the manifest's JSON array is cut off");
      }
      text += static_cast<char>(c);
      if (text.size() > kMaxEntryBytes) {
        return MakeError(ErrorCode::kInvalidArgument,
                         fmt::format("a manifest entry is larger than {} bytes", kMaxEntryBytes));
      }
      if (in_string) {
        if (escaped) {
          escaped = false;
        } else if (c == '\\') {
          escaped = true;
        } else if (c == '"') {
          in_string = false;
        }
        continue;
      }
      if (c == '"') in_string = true;
      if (c == '{' || c == '[') ++depth;
      if (c == '}' || c == ']') --depth;
      const int next = buf_.sgetc();
      if (depth == 0 && (next == ',' || next == ']' || std::isspace(next))) break;
    }
    seen_ = true;
    return std::optional<std::string>(std::move(text));
  }

 private:
  int SkipSpace() {
    int c = buf_.sgetc();
    while (c != std::char_traits<char>::eof() && std::isspace(c)) {
      buf_.sbumpc();
      c = buf_.sgetc();
    }
    return c;
  }

  std::streambuf& buf_;
  bool started_ = false;
  bool seen_ = false;  // an element was read: the next one needs a comma first
};

class MicrochipReader final : public FileManifestReader {
 public:
  explicit MicrochipReader(std::vector<Signer> signers) : signers_(std::move(signers)) {}

  Result<std::optional<ManifestEntry>> Next() override {
    if (!splitter_) splitter_.emplace(in());
    CF_ASSIGN_OR_RETURN(auto text, splitter_->Next());
    if (!text) return std::optional<ManifestEntry>();
    ++index_;
    ManifestEntry e;
    e.index = index_;
    e.problem = Read(*text, e);
    return std::optional<ManifestEntry>(std::move(e));
  }

 private:
  // Fills `e` from one JWS entry; the reason it cannot be imported, or "".
  std::string Read(const std::string& text, ManifestEntry& e) {
    boost::system::error_code ec;
    json::value jws = json::parse(text, ec);
    if (ec || !jws.is_object()) return "the entry is not a JSON object";
    const json::value* header = jws.get_object().if_contains("header");
    if (const json::string* id = header ? StringAt(*header, "uniqueId") : nullptr) e.thing_name = std::string(*id);
    const json::string* protected_b64 = StringAt(jws, "protected");
    const json::string* payload_b64 = StringAt(jws, "payload");
    const json::string* signature_b64 = StringAt(jws, "signature");
    if (!protected_b64 || !payload_b64 || !signature_b64)
      return "the entry is not a flattened JWS (protected, payload, signature)";
    std::optional<json::value> prot = JsonOfBase64Url(protected_b64);
    if (!prot) return "the JWS protected header is not base64url JSON";
    const json::string* alg = StringAt(*prot, "alg");
    const json::string* kid = StringAt(*prot, "kid");
    const json::string* x5t = StringAt(*prot, "x5t#S256");
    if (!alg || !kid) return "the JWS protected header names no alg or kid";
    std::optional<std::string> signature = Base64Decode(*signature_b64);
    if (!signature) return "the JWS signature is not base64url";
    const std::string signing_input = std::string(*protected_b64) + "." + std::string(*payload_b64);
    bool named = false;
    bool verified = false;
    for (const Signer& s : signers_) {
      if (s.kid != *kid) continue;
      named = true;
      if (x5t && s.x5t != *x5t) continue;
      if (Verify(s.key.get(), *alg, signing_input, *signature)) {
        verified = true;
        break;
      }
    }
    // What the manifest says is quoted escaped: it may hold anything, a NUL byte included.
    if (!named) return fmt::format("no verification certificate has kid {}", Escaped(*kid));
    if (!verified)
      return fmt::format("the JWS signature ({}) does not verify with the signer {}", Escaped(*alg), Escaped(*kid));
    std::optional<json::value> payload = JsonOfBase64Url(payload_b64);
    if (!payload) return "the JWS payload is not base64url JSON";
    // The thing is the signed payload's uniqueId: the unprotected header's copy is covered by
    // no signature, so it must say the same or the entry is refused.
    const json::string* signed_id = StringAt(*payload, "uniqueId");
    if (!signed_id || signed_id->empty()) return "the signed payload has no uniqueId";
    if (!e.thing_name.empty() && e.thing_name != *signed_id)
      return fmt::format("header.uniqueId {} differs from the signed payload's uniqueId {}", Escaped(e.thing_name),
                         Escaped(*signed_id));
    e.thing_name = std::string(*signed_id);
    const json::value* x5c = nullptr;
    if (const json::value* set = payload->get_object().if_contains("publicKeySet"); set && set->is_object()) {
      const json::value* keys = set->get_object().if_contains("keys");
      if (keys && keys->is_array() && !keys->get_array().empty() && keys->get_array()[0].is_object()) {
        x5c = keys->get_array()[0].get_object().if_contains("x5c");
      }
    }
    if (!x5c || !x5c->is_array() || x5c->get_array().empty())
      return "the entry has no certificate (publicKeySet.keys[0].x5c)";
    const std::string name = e.thing_name;
    for (size_t i = 0; i < x5c->get_array().size(); ++i) {
      const json::string* b64 = x5c->get_array()[i].if_string();
      std::optional<std::string> der = b64 ? Base64Decode(*b64) : std::nullopt;
      if (!der) return fmt::format("x5c[{}] is not base64", i);
      if (i == 0) {
        ManifestEntry cert = EntryFromDer(e.index, std::move(*der), name);
        if (!cert.problem.empty()) return "x5c[0]: " + cert.problem;
        e.certificate = std::move(cert.certificate);
      } else {
        e.chain.push_back(std::move(*der));
      }
    }
    return "";
  }

  std::optional<ArraySplitter> splitter_;  // on the file, once it is open
  std::vector<Signer> signers_;
  size_t index_ = 0;
};

}  // namespace

Result<std::unique_ptr<ManifestReader>> OpenMicrochipManifest(const std::string& path,
                                                              const std::vector<std::string>& verifiers_pem) {
  CF_ASSIGN_OR_RETURN(std::vector<Signer> signers, LoadSigners(verifiers_pem));
  auto reader = std::make_unique<MicrochipReader>(std::move(signers));
  CF_RETURN_IF_ERROR(reader->OpenFile(path));
  return std::unique_ptr<ManifestReader>(std::move(reader));
}

}  // namespace certfleet::bulk::readers
