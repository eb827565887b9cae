// CSRs as devices and tools send them: every key type, PEM and DER, requested names; and
// every way a request can be broken or forged, each refused with kInvalidArgument.
#include "pki/csr.h"

#include <gtest/gtest.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "pki/certificate.h"
#include "pki/key.h"

namespace certfleet::pki {
namespace {

void FreeExtStack(STACK_OF(X509_EXTENSION) * exts) { sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free); }
using ExtStackPtr = std::unique_ptr<STACK_OF(X509_EXTENSION), Deleter<FreeExtStack>>;

// A request for `key` with CN `cn` and DNS SANs `sans`, signed with `md` (null for Ed25519).
X509ReqPtr MakeRequest(EVP_PKEY* key, const std::string& cn, const std::vector<std::string>& sans = {},
                       const EVP_MD* md = EVP_sha256()) {
  X509ReqPtr req(X509_REQ_new());
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_REQ_set_pubkey(req.get(), key);
  if (!sans.empty()) {
    std::string value;
    for (const auto& s : sans) value += (value.empty() ? "DNS:" : ",DNS:") + s;
    ExtStackPtr exts(sk_X509_EXTENSION_new_null());
    X509_EXTENSION* san = X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name, value.c_str());
    sk_X509_EXTENSION_push(exts.get(), san);
    X509_REQ_add_extensions(req.get(), exts.get());
  }
  EXPECT_GT(X509_REQ_sign(req.get(), key, md), 0);
  return req;
}

std::string Pem(X509_REQ* req) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ(bio.get(), req);
  return BioToString(bio.get());
}

std::string Der(X509_REQ* req) {
  unsigned char* der = nullptr;
  const int len = i2d_X509_REQ(req, &der);
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

std::string SpkiDer(EVP_PKEY* key) {
  unsigned char* der = nullptr;
  const int len = i2d_PUBKEY(key, &der);
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

void ExpectRefused(const std::string& data, const std::string& words) {
  auto r = ParseCsr(data);
  ASSERT_FALSE(r.ok()) << "accepted; expected: " << words;
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message.find(words), std::string::npos) << r.error().message;
}

TEST(Csr, EveryKeyTypeParsesAndItsKeyGoesIntoTheCertificate) {
  for (KeyType kt : {KeyType::kEcP256, KeyType::kEcP384, KeyType::kRsa2048, KeyType::kEd25519}) {
    SCOPED_TRACE(std::string(KeyTypeName(kt)));
    auto key = GenerateKey(kt);
    ASSERT_TRUE(key.ok());
    const EVP_MD* md = kt == KeyType::kEd25519 ? nullptr : kt == KeyType::kEcP384 ? EVP_sha384() : EVP_sha256();
    X509ReqPtr req = MakeRequest(key->get(), "device-1", {"a.example.com", "b.example.com"}, md);
    for (const std::string& data : {Pem(req.get()), Der(req.get())}) {
      auto csr = ParseCsr(data);
      ASSERT_TRUE(csr.ok()) << csr.error().message;
      EXPECT_EQ(EVP_PKEY_eq(csr->public_key.get(), key->get()), 1);
      EXPECT_EQ(csr->spki_der, SpkiDer(key->get()));
      EXPECT_EQ(csr->common_name, "device-1");
      EXPECT_EQ(csr->dns_names, (std::vector<std::string>{"a.example.com", "b.example.com"}));

      // The certificate carries the CSR's key exactly, and OpenSSL reads it back.
      CertificateSpec spec;
      spec.common_name = "device-1";
      spec.not_after_millis = 4'000'000'000'000;
      auto signed_cert = SignCertificate(spec, csr->public_key.get(), nullptr, key->get(), csr->spki_der);
      ASSERT_TRUE(signed_cert.ok()) << signed_cert.error().message;
      auto cert = CertificateFromPem(*CertificateToPem(signed_cert->get()));
      ASSERT_TRUE(cert.ok());
      PkeyPtr in_cert(X509_get_pubkey(cert->get()));
      EXPECT_EQ(EVP_PKEY_eq(in_cert.get(), key->get()), 1);
      EXPECT_EQ(X509_verify(cert->get(), key->get()), 1);
    }
  }
}

TEST(Csr, MakeCsrPemWritesWhatParseCsrReadsForEveryKeyType) {
  for (KeyType kt : {KeyType::kEcP256, KeyType::kRsa2048, KeyType::kEd25519}) {
    PkeyPtr key = std::move(GenerateKey(kt)).value();
    auto pem = MakeCsrPem(key.get(), "web-1.example.com", {"web-1.example.com", "10.0.0.7", "::1", "alt.example.com"});
    ASSERT_TRUE(pem.ok()) << pem.error().message;
    EXPECT_TRUE(pem->starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    auto csr = ParseCsr(*pem);
    ASSERT_TRUE(csr.ok()) << KeyTypeName(kt) << ": " << csr.error().message;
    EXPECT_EQ(csr->common_name, "web-1.example.com");
    EXPECT_EQ(csr->dns_names, (std::vector<std::string>{"web-1.example.com", "alt.example.com"}));
    EXPECT_EQ(EVP_PKEY_eq(csr->public_key.get(), key.get()), 1);
  }
  PkeyPtr key = std::move(GenerateKey(KeyType::kEcP256)).value();
  auto bare = MakeCsrPem(key.get(), "db-1", {});
  ASSERT_TRUE(bare.ok());
  EXPECT_TRUE(ParseCsr(*bare)->dns_names.empty());
}

TEST(Csr, OldPemLabelAndNoSansAreFine) {
  auto key = GenerateKey(KeyType::kEcP256);
  X509ReqPtr req = MakeRequest(key->get(), "device-2");
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ_NEW(bio.get(), req.get());
  const std::string pem = BioToString(bio.get());
  ASSERT_NE(pem.find("NEW CERTIFICATE REQUEST"), std::string::npos);
  auto csr = ParseCsr(pem);
  ASSERT_TRUE(csr.ok()) << csr.error().message;
  EXPECT_TRUE(csr->dns_names.empty());
}

TEST(Csr, RefusesGarbageTruncationAndSize) {
  auto key = GenerateKey(KeyType::kEcP256);
  X509ReqPtr req = MakeRequest(key->get(), "device-1", {"a.example.com"});
  const std::string pem = Pem(req.get());
  const std::string der = Der(req.get());
  ExpectRefused("", "empty");
  ExpectRefused("garbage", "not a PKCS#10 request");
  ExpectRefused(pem.substr(0, pem.size() / 2), "PEM");
  ExpectRefused(std::string(kMaxCsrBytes + 1, 'A'), "larger than");
  ExpectRefused(der + std::string("\0", 1), "trailing data");
  for (size_t len = 0; len < der.size(); ++len) {
    EXPECT_FALSE(ParseCsr(der.substr(0, len)).ok()) << "a prefix of " << len << " bytes was accepted";
  }
}

TEST(Csr, EveryChangedByteIsRefused) {
  auto key = GenerateKey(KeyType::kEcP256);
  const std::string der = Der(MakeRequest(key->get(), "device-1", {"a.example.com"}).get());
  ASSERT_TRUE(ParseCsr(der).ok());
  for (size_t i = 0; i < der.size(); ++i) {
    std::string changed = der;
    changed[i] = static_cast<char>(changed[i] ^ 0x01);
    auto r = ParseCsr(changed);
    EXPECT_FALSE(r.ok()) << "byte " << i << " changed and still accepted";
    if (!r.ok()) {
      EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << r.error().message;
    }
  }
}

TEST(Csr, RefusesForgedWeakAndUnsupported) {
  // Another key put into a signed request: the signature no longer verifies.
  auto key = GenerateKey(KeyType::kEcP256);
  auto other = GenerateKey(KeyType::kEcP256);
  X509ReqPtr forged = MakeRequest(key->get(), "device-1");
  X509_REQ_set_pubkey(forged.get(), other->get());
  ExpectRefused(Pem(forged.get()), "signature does not verify");

  ExpectRefused(Pem(MakeRequest(key->get(), "device-1", {}, EVP_sha1()).get()), "SHA-256");

  PkeyPtr rsa1024(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{1024}));
  ExpectRefused(Pem(MakeRequest(rsa1024.get(), "device-1").get()), "RSA keys must have");

  PkeyPtr k1(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "secp256k1"));
  ExpectRefused(Pem(MakeRequest(k1.get(), "device-1").get()), "not accepted");
}

// A device's key registered as PEM must compare equal to the key its CSR carries.
TEST(PublicKeyPem, ItsDerIsTheSpkiACsrWithTheSameKeyCarries) {
  for (KeyType kt : {KeyType::kEcP256, KeyType::kEcP384, KeyType::kRsa2048, KeyType::kEd25519}) {
    SCOPED_TRACE(std::string(KeyTypeName(kt)));
    auto key = GenerateKey(kt);
    ASSERT_TRUE(key.ok());
    auto pem = PublicKeyToPem(key->get());
    ASSERT_TRUE(pem.ok());
    auto der = PublicKeyPemToDer(*pem);
    ASSERT_TRUE(der.ok()) << der.error().message;
    const EVP_MD* md = kt == KeyType::kEd25519 ? nullptr : EVP_sha256();
    auto csr = ParseCsr(Pem(MakeRequest(key->get(), "device-1", {}, md).get()));
    ASSERT_TRUE(csr.ok());
    EXPECT_EQ(*der, csr->spki_der);
  }
}

TEST(PublicKeyPem, RefusesGarbagePrivateKeysWeakKeysAndSize) {
  auto expect_refused = [](std::string_view pem, std::string_view words) {
    auto r = PublicKeyPemToDer(pem);
    ASSERT_FALSE(r.ok()) << "accepted; expected: " << words;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message.find(words), std::string::npos) << r.error().message;
  };
  expect_refused("", "BEGIN PUBLIC KEY");
  expect_refused("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n", "BEGIN PUBLIC KEY");
  auto key = GenerateKey(KeyType::kEcP256);
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key->get(), nullptr, nullptr, 0, nullptr, nullptr);
  expect_refused(BioToString(bio.get()), "BEGIN PUBLIC KEY");
  PkeyPtr rsa1024(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{1024}));
  expect_refused(*PublicKeyToPem(rsa1024.get()), "RSA keys must have");
  expect_refused(std::string(kMaxPublicKeyPemBytes + 1, 'A'), "larger than");
}

}  // namespace
}  // namespace certfleet::pki

namespace certfleet::pki {
namespace {

TEST(Csr, KeepsItsDerAndChallengePassword) {
  PkeyPtr key = std::move(GenerateKey(KeyType::kEcP256).value());
  X509ReqPtr plain = MakeRequest(key.get(), "dev-1");
  auto parsed = ParseCsr(Pem(plain.get()));
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->der, Der(plain.get()));
  EXPECT_FALSE(parsed->challenge_password);

  X509ReqPtr bound(X509_REQ_new());
  X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(bound.get()), "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("dev-1"), -1, -1, 0);
  X509_REQ_set_pubkey(bound.get(), key.get());
  ASSERT_EQ(X509_REQ_add1_attr_by_NID(bound.get(), NID_pkcs9_challengePassword, MBSTRING_ASC,
                                      reinterpret_cast<const unsigned char*>("dGxzLXVuaXF1ZQ=="), -1),
            1);
  ASSERT_GT(X509_REQ_sign(bound.get(), key.get(), EVP_sha256()), 0);
  parsed = ParseCsr(Der(bound.get()));
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  EXPECT_EQ(parsed->challenge_password, "dGxzLXVuaXF1ZQ==");
}

// With e = 1 an RSA "signature" is the padded digest, which anyone can make; an even exponent
// is no RSA key.
TEST(Csr, TheLintRefusesRsaExponentsThatAreOneOrEven) {
  auto real = GenerateKey(KeyType::kRsa2048);
  ASSERT_TRUE(real.ok());
  BIGNUM* n = nullptr;
  ASSERT_EQ(EVP_PKEY_get_bn_param(real->get(), "n", &n), 1);
  for (unsigned long exponent : {1UL, 65536UL, 65537UL}) {
    SCOPED_TRACE(exponent);
    BIGNUM* e = BN_new();
    BN_set_word(e, exponent);
    OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM_BLD_push_BN(bld, "n", n);
    OSSL_PARAM_BLD_push_BN(bld, "e", e);
    OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr);
    EVP_PKEY* key = nullptr;
    ASSERT_EQ(EVP_PKEY_fromdata_init(ctx), 1);
    ASSERT_EQ(EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params), 1);
    Result<void> linted = LintPublicKey(key);
    if (exponent == 65537UL) {
      EXPECT_TRUE(linted.ok()) << linted.error().message;
    } else {
      ASSERT_FALSE(linted.ok());
      EXPECT_NE(linted.error().message.find("exponent"), std::string::npos);
    }
    EVP_PKEY_free(key);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(e);
  }
  BN_free(n);
}

}  // namespace
}  // namespace certfleet::pki
