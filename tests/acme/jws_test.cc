// ACME's JWS as clients send it: every accepted algorithm signed here with OpenSSL and
// verified, the RFC 7638 thumbprint vector, and the broken or hostile requests refused.
#include "acme/jws.h"

#include <gtest/gtest.h>
#include <openssl/core_names.h>

#include <boost/json.hpp>

#include "core/crypto.h"
#include "pki/key.h"

namespace certfleet::acme {
namespace {

namespace json = boost::json;

std::string Bn(EVP_PKEY* key, const char* name) {
  BIGNUM* bn = nullptr;
  EVP_PKEY_get_bn_param(key, name, &bn);
  std::string out(static_cast<size_t>(BN_num_bytes(bn)), '\0');
  BN_bn2bin(bn, reinterpret_cast<unsigned char*>(out.data()));
  BN_free(bn);
  return out;
}

// The public JWK of a key, as a client writes it.
json::object JwkOf(EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "RSA")) {
    return {{"kty", "RSA"},
            {"n", Base64UrlEncode(Bn(key, OSSL_PKEY_PARAM_RSA_N))},
            {"e", Base64UrlEncode(Bn(key, OSSL_PKEY_PARAM_RSA_E))}};
  }
  if (EVP_PKEY_is_a(key, "ED25519")) {
    unsigned char raw[32];
    size_t len = sizeof(raw);
    EVP_PKEY_get_raw_public_key(key, raw, &len);
    return {{"kty", "OKP"},
            {"crv", "Ed25519"},
            {"x", Base64UrlEncode(std::string_view(reinterpret_cast<char*>(raw), len))}};
  }
  unsigned char* point = nullptr;
  const size_t len = EVP_PKEY_get1_encoded_public_key(key, &point);
  const std::string p(reinterpret_cast<char*>(point), len);
  OPENSSL_free(point);
  const size_t half = (len - 1) / 2;
  return {{"kty", "EC"},
          {"crv", half == 32 ? "P-256" : "P-384"},
          {"x", Base64UrlEncode(p.substr(1, half))},
          {"y", Base64UrlEncode(p.substr(1 + half))}};
}

// A flattened JWS over `payload` by `key` with `alg`, the key as jwk.
std::string Sign(EVP_PKEY* key, const std::string& alg, const std::string& payload, json::object extra = {}) {
  json::object header{
      {"alg", alg}, {"nonce", "n0nce"}, {"url", "https://ca.example/acme/new-account"}, {"jwk", JwkOf(key)}};
  for (auto& [k, v] : extra) header[k] = v;
  const std::string protected_b64 = Base64UrlEncode(json::serialize(header));
  const std::string payload_b64 = Base64UrlEncode(payload);
  const std::string input = protected_b64 + "." + payload_b64;
  const char* digest = alg == "EdDSA" ? nullptr : alg == "ES384" ? "SHA384" : "SHA256";
  std::unique_ptr<EVP_MD_CTX, pki::Deleter<EVP_MD_CTX_free>> ctx(EVP_MD_CTX_new());
  EVP_DigestSignInit_ex(ctx.get(), nullptr, digest, nullptr, nullptr, key, nullptr);
  size_t len = 0;
  EVP_DigestSign(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()), input.size());
  std::string sig(len, '\0');
  EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                 reinterpret_cast<const unsigned char*>(input.data()), input.size());
  sig.resize(len);
  if (alg.starts_with("ES")) {  // DER to r || s
    const auto* p = reinterpret_cast<const unsigned char*>(sig.data());
    ECDSA_SIG* ecdsa = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
    const int half = alg == "ES384" ? 48 : 32;
    std::string raw(static_cast<size_t>(2 * half), '\0');
    BN_bn2binpad(ECDSA_SIG_get0_r(ecdsa), reinterpret_cast<unsigned char*>(raw.data()), half);
    BN_bn2binpad(ECDSA_SIG_get0_s(ecdsa), reinterpret_cast<unsigned char*>(raw.data()) + half, half);
    ECDSA_SIG_free(ecdsa);
    sig = raw;
  }
  return json::serialize(
      json::object{{"protected", protected_b64}, {"payload", payload_b64}, {"signature", Base64UrlEncode(sig)}});
}

TEST(Jws, EveryAcceptedAlgorithmVerifiesAndATamperedOneDoesNot) {
  const std::pair<pki::KeyType, std::string> cases[] = {{pki::KeyType::kEcP256, "ES256"},
                                                        {pki::KeyType::kEcP384, "ES384"},
                                                        {pki::KeyType::kRsa2048, "RS256"},
                                                        {pki::KeyType::kEd25519, "EdDSA"}};
  for (const auto& [type, alg] : cases) {
    SCOPED_TRACE(alg);
    auto key = pki::GenerateKey(type);
    ASSERT_TRUE(key.ok());
    auto jws = ParseJws(Sign(key->get(), alg, R"({"termsOfServiceAgreed":true})"));
    ASSERT_TRUE(jws.ok()) << jws.error().message;
    EXPECT_EQ(jws->alg, alg);
    EXPECT_EQ(jws->nonce, "n0nce");
    EXPECT_EQ(jws->url, "https://ca.example/acme/new-account");
    EXPECT_EQ(jws->payload, R"({"termsOfServiceAgreed":true})");
    EXPECT_TRUE(SupportedAlgorithm(jws->alg));
    auto public_key = PublicKeyFromJwk(*jws->jwk);
    ASSERT_TRUE(public_key.ok()) << public_key.error().message;
    EXPECT_EQ(EVP_PKEY_eq(public_key->get(), key->get()), 1);
    EXPECT_TRUE(VerifyJws(*jws, public_key->get()).ok());
    Jws tampered = *jws;
    tampered.payload_b64 = Base64UrlEncode(R"({"termsOfServiceAgreed":false})");
    auto refused = VerifyJws(tampered, public_key->get());
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.error().code, ErrorCode::kUnauthenticated);
  }
}

TEST(Jws, AnAlgorithmThatDoesNotFitTheKeyIsRefused) {
  auto key = pki::GenerateKey(pki::KeyType::kEcP256);
  auto jws = ParseJws(Sign(key->get(), "ES256", "{}"));
  ASSERT_TRUE(jws.ok());
  auto rsa = pki::GenerateKey(pki::KeyType::kRsa2048);
  EXPECT_EQ(VerifyJws(*jws, rsa->get()).error().code, ErrorCode::kInvalidArgument);
  jws->alg = "ES384";
  EXPECT_EQ(VerifyJws(*jws, key->get()).error().code, ErrorCode::kInvalidArgument);
  jws->alg = "HS256";
  EXPECT_FALSE(SupportedAlgorithm(jws->alg));
  EXPECT_EQ(VerifyJws(*jws, key->get()).error().code, ErrorCode::kInvalidArgument);
  jws->alg = "none";
  EXPECT_FALSE(VerifyJws(*jws, key->get()).ok());
}

TEST(Jws, ThumbprintIsTheRfc7638Example) {
  const json::object jwk{
      {"kty", "RSA"},
      {"e", "AQAB"},
      {"alg", "RS256"},
      {"kid", "2011-04-29"},
      {"n",
       "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3"
       "oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdA"
       "ZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-"
       "kEgU8awapJzKnqDKgw"}};
  auto thumbprint = JwkThumbprint(jwk);
  ASSERT_TRUE(thumbprint.ok()) << thumbprint.error().message;
  EXPECT_EQ(*thumbprint, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
}

TEST(Jws, BrokenRequestsAreMalformed) {
  auto key = pki::GenerateKey(pki::KeyType::kEcP256);
  const std::string good = Sign(key->get(), "ES256", "{}");
  for (const std::string& bad : {std::string("not json"), std::string("[]"), std::string(R"({"protected":"e30"})"),
                                 std::string(R"({"protected":"e30=","payload":"","signature":""})")}) {
    auto r = ParseJws(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  }
  // Both jwk and kid, or an unknown critical extension.
  EXPECT_FALSE(ParseJws(Sign(key->get(), "ES256", "{}", {{"kid", "https://ca.example/acct/1"}})).ok());
  EXPECT_FALSE(ParseJws(Sign(key->get(), "ES256", "{}", {{"crit", json::array{"b64"}}})).ok());
  // An unprotected header is refused.
  json::value v = json::parse(good);
  v.as_object()["header"] = json::object{{"alg", "none"}};
  EXPECT_FALSE(ParseJws(json::serialize(v)).ok());
}

TEST(Jws, WeakPrivateOrOddKeysAreRefused) {
  auto weak = pki::GenerateKey(pki::KeyType::kRsa2048);
  json::object jwk = JwkOf(weak->get());
  EXPECT_TRUE(PublicKeyFromJwk(jwk).ok());
  EVP_PKEY* small = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{1024});
  auto refused = PublicKeyFromJwk(JwkOf(small));
  EVP_PKEY_free(small);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("1024 bits"), std::string::npos);
  jwk["d"] = "AAAA";
  EXPECT_FALSE(PublicKeyFromJwk(jwk).ok()) << "a private key is never accepted";
  auto ec = pki::GenerateKey(pki::KeyType::kEcP256);
  json::object short_x = JwkOf(ec->get());
  short_x["x"] = Base64UrlEncode(std::string(31, 'x'));
  EXPECT_FALSE(PublicKeyFromJwk(short_x).ok());
  json::object off_curve = JwkOf(ec->get());
  off_curve["y"] = Base64UrlEncode(std::string(32, '\x01'));
  EXPECT_FALSE(PublicKeyFromJwk(off_curve).ok()) << "a point not on the curve";
  EXPECT_FALSE(PublicKeyFromJwk(json::object{{"kty", "oct"}, {"k", "AAAA"}}).ok());
}

// Accounts are unique by their key's thumbprint, so a key must have one spelling: another
// spelling of the same key would make a second account for it.
TEST(Jws, AKeyHasOneSpelling) {
  auto ec = pki::GenerateKey(pki::KeyType::kEcP256);
  const json::object jwk = JwkOf(ec->get());
  ASSERT_TRUE(PublicKeyFromJwk(jwk).ok());
  // 32 bytes are 43 characters of 6 bits: the last one's 2 low bits are not part of the value.
  json::object stray_bits = jwk;
  std::string x(jwk.at("x").as_string());
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  x.back() = alphabet[alphabet.find(x.back()) ^ 1];
  ASSERT_EQ(Base64UrlDecode(x), Base64UrlDecode(jwk.at("x").as_string())) << "the same coordinate";
  stray_bits["x"] = x;
  EXPECT_FALSE(PublicKeyFromJwk(stray_bits).ok());
  json::object padded = jwk;
  padded["y"] = std::string(jwk.at("y").as_string()) + "=";
  EXPECT_FALSE(PublicKeyFromJwk(padded).ok());

  auto rsa = pki::GenerateKey(pki::KeyType::kRsa2048);
  const json::object rsa_jwk = JwkOf(rsa->get());
  ASSERT_TRUE(PublicKeyFromJwk(rsa_jwk).ok());
  for (const char* member : {"n", "e"}) {
    json::object leading_zero = rsa_jwk;
    leading_zero[member] = Base64UrlEncode(std::string(1, '\0') + *Base64UrlDecode(rsa_jwk.at(member).as_string()));
    auto refused = PublicKeyFromJwk(leading_zero);
    ASSERT_FALSE(refused.ok()) << member;
    EXPECT_NE(refused.error().message.find("leading zero"), std::string::npos) << refused.error().message;
  }
}

}  // namespace
}  // namespace certfleet::acme
