// CA keys on a real PKCS#11 token (SoftHSM2): made there, signing certificates and CRLs that
// OpenSSL verifies with the public key alone; imports; a token that goes away and comes back.
#include <gtest/gtest.h>
#include <openssl/ec.h>

#include <atomic>
#include <filesystem>
#include <thread>
#include <vector>

#include "pki/certificate.h"
#include "pki/crl.h"
#include "pki/pkcs11/pkcs11_key_backend.h"
#include "testing/softhsm.h"

namespace certfleet::pki::pkcs11 {
namespace {

using testing::SoftHsmToken;

constexpr int64_t kNow = 1'800'000'000'000;
constexpr int64_t kYear = int64_t{365} * 24 * 3600 * 1000;

class Pkcs11Test : public ::testing::Test {
 protected:
  void SetUp() override {
    token_ = testing::MakeSoftHsmToken();
    auto opened = Pkcs11KeyBackend::Open({SoftHsmToken::kModule, SoftHsmToken::kLabel, SoftHsmToken::kPin});
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    keys_ = std::move(*opened);
  }

  // A self-signed CA certificate made by `key`, checked by OpenSSL with its public key.
  static Result<X509Ptr> SelfSigned(EVP_PKEY* key) {
    CertificateSpec spec;
    spec.common_name = "hsm.example.com";
    spec.is_ca = true;
    spec.not_before_millis = kNow;
    spec.not_after_millis = kNow + kYear;
    return SignCertificate(spec, key, nullptr, key);
  }

  testing::SoftHsmToken token_;
  std::unique_ptr<Pkcs11KeyBackend> keys_;
};

TEST_F(Pkcs11Test, KeysMadeOnTheTokenSignCertificatesAndCrls) {
  for (KeyType type : {KeyType::kEcP256, KeyType::kEcP384, KeyType::kRsa2048}) {
    SCOPED_TRACE(std::string(KeyTypeName(type)));
    auto ref = keys_->Generate(type, "");
    ASSERT_TRUE(ref.ok()) << ref.error().message;
    EXPECT_TRUE(ref->starts_with("pkcs11:"));
    auto key = keys_->Get(*ref);
    ASSERT_TRUE(key.ok()) << key.error().message;
    EXPECT_EQ(*KeyTypeOf(key->get()), type);
    auto cert = SelfSigned(key->get());
    ASSERT_TRUE(cert.ok()) << cert.error().message;
    EXPECT_EQ(X509_verify(cert->get(), X509_get0_pubkey(cert->get())), 1) << "the token's signature verifies";
    auto crl_der = BuildCrl(cert->get(), key->get(), {{"1234", kNow, 1}}, 2, kNow, kNow + kYear);
    ASSERT_TRUE(crl_der.ok()) << crl_der.error().message;
    const auto* p = reinterpret_cast<const unsigned char*>(crl_der->data());
    X509CrlPtr crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(crl_der->size())));
    ASSERT_TRUE(crl);
    EXPECT_EQ(X509_CRL_verify(crl.get(), X509_get0_pubkey(cert->get())), 1);
  }
}

// Signers beyond pkcs11.max_sessions wait for a session instead of opening more (a token with
// a limit answers CKR_SESSION_COUNT, which used to log every signer in afresh).
TEST(Pkcs11Sessions, SignersShareAtMostTheSessionsAllowed) {
  SoftHsmToken token = testing::MakeSoftHsmToken();
  auto opened = Pkcs11KeyBackend::Open({SoftHsmToken::kModule, SoftHsmToken::kLabel, SoftHsmToken::kPin, 2});
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  std::unique_ptr<Pkcs11KeyBackend> keys = std::move(*opened);
  auto ref = keys->Generate(KeyType::kEcP256, "");
  ASSERT_TRUE(ref.ok()) << ref.error().message;
  auto key = keys->Get(*ref);
  ASSERT_TRUE(key.ok()) << key.error().message;
  std::vector<std::thread> signers;
  std::atomic<int> signed_ok{0};
  for (int t = 0; t < 6; ++t) {
    signers.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        CertificateSpec spec;
        spec.common_name = "hsm.example.com";
        spec.is_ca = true;
        spec.not_before_millis = kNow;
        spec.not_after_millis = kNow + kYear;
        if (SignCertificate(spec, key->get(), nullptr, key->get()).ok()) ++signed_ok;
      }
    });
  }
  for (auto& t : signers) t.join();
  EXPECT_EQ(signed_ok, 120);
  EXPECT_LE(keys->OpenSessions(), 2u);
  EXPECT_GE(keys->OpenSessions(), 1u);
}

TEST_F(Pkcs11Test, RefusesKeyTypesAndBackendsItDoesNotHold) {
  EXPECT_EQ(keys_->Generate(KeyType::kEd25519, "").error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(keys_->Generate(KeyType::kEcP256, "file").error().code, ErrorCode::kInvalidArgument);
  // A P-521 key (a CA imported with one) is refused naming what the token holds.
  PkeyPtr p521(EVP_EC_gen("P-521"));
  ASSERT_NE(p521, nullptr);
  auto refused = keys_->Put(p521.get(), "pkcs11");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("P-256/P-384 and RSA"), std::string::npos) << refused.error().message;
}

TEST_F(Pkcs11Test, ImportedKeysSignAsTheOriginalAndCanBeRemoved) {
  for (KeyType type : {KeyType::kEcP256, KeyType::kRsa2048}) {
    auto original = GenerateKey(type);
    ASSERT_TRUE(original.ok());
    auto ref = keys_->Put(original->get(), "pkcs11");
    ASSERT_TRUE(ref.ok()) << ref.error().message;
    auto key = keys_->Get(*ref);
    ASSERT_TRUE(key.ok()) << key.error().message;
    EXPECT_EQ(EVP_PKEY_eq(key->get(), original->get()), 1) << "the token holds the same key";
    auto cert = SelfSigned(key->get());
    ASSERT_TRUE(cert.ok()) << cert.error().message;
    EXPECT_EQ(X509_verify(cert->get(), original->get()), 1);
    ASSERT_TRUE(keys_->Remove(*ref).ok());
    EXPECT_FALSE(keys_->Get(*ref).ok()) << "removed from the token";
  }
}

TEST(Pkcs11Open, AWrongPinOrMissingTokenIsAClearError) {
  const auto token = testing::MakeSoftHsmToken();
  auto wrong_pin = Pkcs11KeyBackend::Open({SoftHsmToken::kModule, SoftHsmToken::kLabel, "not-the-pin"});
  ASSERT_FALSE(wrong_pin.ok());
  EXPECT_EQ(wrong_pin.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(wrong_pin.error().message.find("wrong PIN"), std::string::npos) << wrong_pin.error().message;
  auto no_token = Pkcs11KeyBackend::Open({SoftHsmToken::kModule, "no-such-token", SoftHsmToken::kPin});
  ASSERT_FALSE(no_token.ok());
  EXPECT_NE(no_token.error().message.find("no PKCS#11 token labelled 'no-such-token'"), std::string::npos)
      << no_token.error().message;
  EXPECT_NE(no_token.error().message.find(SoftHsmToken::kLabel), std::string::npos) << "names the tokens present";
  auto no_module = Pkcs11KeyBackend::Open({"/nonexistent/module.so", SoftHsmToken::kLabel, SoftHsmToken::kPin});
  ASSERT_FALSE(no_module.ok());
  EXPECT_NE(no_module.error().message.find("cannot load the PKCS#11 module"), std::string::npos);
}

TEST_F(Pkcs11Test, ATokenThatGoesAwayIsUnavailableUntilItIsBack) {
  auto ref = keys_->Generate(KeyType::kEcP256, "");
  ASSERT_TRUE(ref.ok()) << ref.error().message;
  auto key = keys_->Get(*ref);
  ASSERT_TRUE(key.ok());
  ASSERT_TRUE(SelfSigned(key->get()).ok());

  const std::string away = token_.dir + "/away";
  std::filesystem::rename(token_.token_dir, away);
  auto failed = SelfSigned(key->get());
  ASSERT_FALSE(failed.ok()) << "signed without the token";
  EXPECT_EQ(failed.error().code, ErrorCode::kUnavailable) << failed.error().message;
  auto still_away = SelfSigned(key->get());
  ASSERT_FALSE(still_away.ok());
  EXPECT_EQ(still_away.error().code, ErrorCode::kUnavailable) << still_away.error().message;

  std::filesystem::rename(away, token_.token_dir);
  auto back = SelfSigned(key->get());
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(X509_verify(back->get(), X509_get0_pubkey(back->get())), 1);
}

}  // namespace
}  // namespace certfleet::pki::pkcs11
