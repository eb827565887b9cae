#include "acme/jws.h"

#include <fmt/format.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>

#include <algorithm>
#include <boost/json.hpp>

#include "core/crypto.h"

namespace certfleet::acme {
namespace {

namespace json = boost::json;

// RSA account keys: RFC 8555 leaves the size to the server; below 2048 bits is weak, above
// 8192 only costs the server time on every request.
constexpr int kMinRsaBits = 2048;
constexpr int kMaxRsaBits = 8192;

Error Malformed(std::string message) { return MakeError(ErrorCode::kInvalidArgument, std::move(message)); }

Result<std::string> StringMember(const json::object& o, std::string_view key, std::string_view where) {
  const json::value* v = o.if_contains(key);
  if (!v || !v->is_string()) return Malformed(fmt::format("{} has no string member \"{}\"", where, key));
  return std::string(v->as_string());
}

Result<std::string> Base64Member(const json::object& o, std::string_view key, std::string_view where) {
  CF_ASSIGN_OR_RETURN(std::string text, StringMember(o, key, where));
  auto decoded = Base64UrlDecode(text);
  if (!decoded) return Malformed(fmt::format("{} member \"{}\" is not base64url", where, key));
  return *decoded;
}

// A JWK's key member: base64url as RFC 7515 2 writes it (no padding, no stray bits in the
// last character) and, for RSA's integers, without leading zero octets (RFC 7518 6.3.1.1).
// Every key then has one spelling, so its thumbprint (RFC 7638), which accounts are unique by,
// names the key and not how a client wrote it.
Result<std::string> KeyMember(const json::object& jwk, std::string_view key, bool integer = false) {
  CF_ASSIGN_OR_RETURN(std::string decoded, Base64Member(jwk, key, "the JWK"));
  if (Base64UrlEncode(decoded) != jwk.at(key).as_string()) {
    return Malformed(fmt::format("the JWK member \"{}\" is not in canonical base64url", key));
  }
  if (integer && (decoded.empty() || decoded.front() == '\0')) {
    return Malformed(fmt::format("the JWK member \"{}\" is empty or has leading zero octets", key));
  }
  return decoded;
}

struct Curve {
  std::string_view jwk_name;
  const char* group;
  size_t coordinate_bytes;
  std::string_view alg;  // the one JWS algorithm of keys on this curve
  const char* digest;
};
constexpr Curve kCurves[] = {{"P-256", "P-256", 32, "ES256", "SHA256"}, {"P-384", "P-384", 48, "ES384", "SHA384"}};

const Curve* CurveNamed(std::string_view name) {
  for (const auto& c : kCurves) {
    if (c.jwk_name == name) return &c;
  }
  return nullptr;
}

Result<pki::PkeyPtr> FromParams(const char* type, OSSL_PARAM_BLD* bld) {
  std::unique_ptr<OSSL_PARAM, pki::Deleter<OSSL_PARAM_free>> params(OSSL_PARAM_BLD_to_param(bld));
  pki::PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* key = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    ERR_clear_error();
    return Malformed("the JWK is not a valid public key");
  }
  return pki::PkeyPtr(key);
}

using ParamBuilderPtr = std::unique_ptr<OSSL_PARAM_BLD, pki::Deleter<OSSL_PARAM_BLD_free>>;

}  // namespace

std::optional<std::string> Base64UrlDecode(std::string_view text) {
  for (char c : text) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) return std::nullopt;
  }
  return Base64Decode(text);
}

Result<Jws> ParseJws(std::string_view body, JwsRole role) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) return Malformed("the request is not a JWS in flattened JSON serialization");
  const json::object& o = v.as_object();
  if (o.contains("header") || o.contains("signatures")) {
    return Malformed("only the flattened serialization with a protected header alone is accepted");
  }
  Jws jws;
  CF_ASSIGN_OR_RETURN(jws.protected_b64, StringMember(o, "protected", "the JWS"));
  CF_ASSIGN_OR_RETURN(jws.payload_b64, StringMember(o, "payload", "the JWS"));
  CF_ASSIGN_OR_RETURN(jws.signature, Base64Member(o, "signature", "the JWS"));
  auto header_text = Base64UrlDecode(jws.protected_b64);
  if (!header_text) return Malformed("the protected header is not base64url");
  auto payload = Base64UrlDecode(jws.payload_b64);
  if (!payload) return Malformed("the payload is not base64url");
  jws.payload = std::move(*payload);
  json::value header = json::parse(*header_text, ec);
  if (ec || !header.is_object()) return Malformed("the protected header is not a JSON object");
  const json::object& h = header.as_object();
  CF_ASSIGN_OR_RETURN(jws.alg, StringMember(h, "alg", "the protected header"));
  if (role == JwsRole::kRequest) {
    CF_ASSIGN_OR_RETURN(jws.nonce, StringMember(h, "nonce", "the protected header"));
  } else if (role == JwsRole::kInner && (h.contains("nonce") || !h.contains("jwk"))) {
    return Malformed("the inner JWS of a key change has a jwk and no nonce (RFC 8555 7.3.5)");
  } else if (role == JwsRole::kEab && (h.contains("nonce") || !h.contains("kid"))) {
    return Malformed("an external account binding has a kid and no nonce (RFC 8555 7.3.4)");
  }
  CF_ASSIGN_OR_RETURN(jws.url, StringMember(h, "url", "the protected header"));
  const json::value* jwk = h.if_contains("jwk");
  const json::value* kid = h.if_contains("kid");
  if ((jwk == nullptr) == (kid == nullptr)) return Malformed("the protected header needs exactly one of jwk and kid");
  if (jwk) {
    if (!jwk->is_object()) return Malformed("jwk is not a JSON object");
    jws.jwk = jwk->as_object();
  } else {
    if (!kid->is_string()) return Malformed("kid is not a string");
    jws.kid = std::string(kid->as_string());
  }
  if (h.contains("crit")) return Malformed("no critical header extensions are understood");
  return jws;
}

bool SupportedAlgorithm(std::string_view alg) {
  return std::find(std::begin(kSupportedAlgorithms), std::end(kSupportedAlgorithms), alg) !=
         std::end(kSupportedAlgorithms);
}

Result<pki::PkeyPtr> PublicKeyFromJwk(const json::object& jwk) {
  CF_ASSIGN_OR_RETURN(std::string kty, StringMember(jwk, "kty", "the JWK"));
  if (jwk.contains("d")) return Malformed("the JWK holds a private key");
  ParamBuilderPtr bld(OSSL_PARAM_BLD_new());
  if (!bld) return pki::OpenSslError("building a key");
  if (kty == "EC") {
    CF_ASSIGN_OR_RETURN(std::string crv, StringMember(jwk, "crv", "the JWK"));
    const Curve* curve = CurveNamed(crv);
    if (!curve) return Malformed(fmt::format("curve {} is not accepted (P-256, P-384)", crv));
    CF_ASSIGN_OR_RETURN(std::string x, KeyMember(jwk, "x"));
    CF_ASSIGN_OR_RETURN(std::string y, KeyMember(jwk, "y"));
    if (x.size() != curve->coordinate_bytes || y.size() != curve->coordinate_bytes) {
      return Malformed(fmt::format("the JWK's coordinates are not {} bytes each", curve->coordinate_bytes));
    }
    const std::string point = "\x04" + x + y;
    if (OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, curve->group, 0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) != 1) {
      return pki::OpenSslError("building a key");
    }
    return FromParams("EC", bld.get());
  }
  if (kty == "RSA") {
    CF_ASSIGN_OR_RETURN(std::string n, KeyMember(jwk, "n", /*integer=*/true));
    CF_ASSIGN_OR_RETURN(std::string e, KeyMember(jwk, "e", /*integer=*/true));
    pki::BignumPtr bn_n(
        BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()), static_cast<int>(n.size()), nullptr));
    pki::BignumPtr bn_e(
        BN_bin2bn(reinterpret_cast<const unsigned char*>(e.data()), static_cast<int>(e.size()), nullptr));
    if (!bn_n || !bn_e) return pki::OpenSslError("building a key");
    const int bits = BN_num_bits(bn_n.get());
    if (bits < kMinRsaBits || bits > kMaxRsaBits) {
      return Malformed(fmt::format("an RSA key of {} bits is not accepted ({} to {})", bits, kMinRsaBits, kMaxRsaBits));
    }
    if (OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1) {
      return pki::OpenSslError("building a key");
    }
    return FromParams("RSA", bld.get());
  }
  if (kty == "OKP") {
    CF_ASSIGN_OR_RETURN(std::string crv, StringMember(jwk, "crv", "the JWK"));
    if (crv != "Ed25519") return Malformed(fmt::format("curve {} is not accepted (Ed25519)", crv));
    CF_ASSIGN_OR_RETURN(std::string x, KeyMember(jwk, "x"));
    EVP_PKEY* key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr,
                                                reinterpret_cast<const unsigned char*>(x.data()), x.size());
    if (!key) {
      ERR_clear_error();
      return Malformed("the JWK is not a valid Ed25519 key");
    }
    return pki::PkeyPtr(key);
  }
  return Malformed(fmt::format("key type {} is not accepted (EC, RSA, OKP)", kty));
}

Result<std::string> JwkThumbprint(const json::object& jwk) {
  CF_ASSIGN_OR_RETURN(std::string kty, StringMember(jwk, "kty", "the JWK"));
  // The required members only, in lexicographic order (RFC 7638 3.2), as serialized JSON.
  std::vector<std::string_view> members;
  if (kty == "EC") {
    members = {"crv", "kty", "x", "y"};
  } else if (kty == "RSA") {
    members = {"e", "kty", "n"};
  } else if (kty == "OKP") {
    members = {"crv", "kty", "x"};
  } else {
    return Malformed(fmt::format("key type {} is not accepted (EC, RSA, OKP)", kty));
  }
  std::string canonical = "{";
  for (std::string_view m : members) {
    CF_ASSIGN_OR_RETURN(std::string value, StringMember(jwk, m, "the JWK"));
    if (canonical.size() > 1) canonical += ",";
    canonical += json::serialize(json::string(m)) + ":" + json::serialize(json::string(value));
  }
  canonical += "}";
  return Base64UrlEncode(Sha256(canonical));
}

Result<void> VerifyJws(const Jws& jws, EVP_PKEY* key) {
  const std::string input = jws.protected_b64 + "." + jws.payload_b64;
  const char* digest = nullptr;
  std::string signature = jws.signature;
  if (jws.alg == "RS256") {
    if (!EVP_PKEY_is_a(key, "RSA")) return Malformed("alg RS256 needs an RSA key");
    digest = "SHA256";
  } else if (jws.alg == "EdDSA") {
    if (!EVP_PKEY_is_a(key, "ED25519")) return Malformed("alg EdDSA needs an Ed25519 key");
  } else if (jws.alg == "ES256" || jws.alg == "ES384") {
    const Curve* curve = nullptr;
    for (const auto& c : kCurves) {
      if (c.alg == jws.alg) curve = &c;
    }
    char group[32] = {};
    size_t len = 0;
    if (!EVP_PKEY_is_a(key, "EC") || EVP_PKEY_get_group_name(key, group, sizeof(group), &len) != 1 ||
        std::string_view(group, len) != (curve->coordinate_bytes == 32 ? "prime256v1" : "secp384r1")) {
      return Malformed(fmt::format("alg {} needs an EC key on {}", jws.alg, curve->jwk_name));
    }
    // JWS writes r and s side by side (RFC 7518 3.4); OpenSSL verifies their DER.
    if (signature.size() != 2 * curve->coordinate_bytes) {
      return MakeError(ErrorCode::kUnauthenticated, "the JWS signature does not verify");
    }
    const auto* raw = reinterpret_cast<const unsigned char*>(signature.data());
    const int half = static_cast<int>(curve->coordinate_bytes);
    std::unique_ptr<ECDSA_SIG, pki::Deleter<ECDSA_SIG_free>> sig(ECDSA_SIG_new());
    BIGNUM* r = BN_bin2bn(raw, half, nullptr);
    BIGNUM* s = BN_bin2bn(raw + half, half, nullptr);
    if (!sig || !r || !s || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
      BN_free(r);
      BN_free(s);
      return pki::OpenSslError("reading the signature");
    }
    unsigned char* der = nullptr;
    const int der_len = i2d_ECDSA_SIG(sig.get(), &der);
    if (der_len <= 0) return pki::OpenSslError("reading the signature");
    signature.assign(reinterpret_cast<char*>(der), static_cast<size_t>(der_len));
    OPENSSL_free(der);
    digest = curve->digest;
  } else {
    return Malformed(fmt::format("alg {} is not accepted (ES256, ES384, RS256, EdDSA)", jws.alg));
  }
  std::unique_ptr<EVP_MD_CTX, pki::Deleter<EVP_MD_CTX_free>> ctx(EVP_MD_CTX_new());
  const bool verified =
      ctx && EVP_DigestVerifyInit_ex(ctx.get(), nullptr, digest, nullptr, nullptr, key, nullptr) == 1 &&
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                       reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
  ERR_clear_error();
  if (!verified) return MakeError(ErrorCode::kUnauthenticated, "the JWS signature does not verify");
  return Ok();
}

}  // namespace certfleet::acme
