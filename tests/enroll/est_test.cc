// EST's wire formats read back by OpenSSL, and enrollment profiles from the API's JSON.
#include "enroll/est.h"

#include <gtest/gtest.h>
#include <openssl/pkcs7.h>

#include <boost/json.hpp>

#include "core/crypto.h"
#include "enroll/profiles.h"
#include "pki/certificate.h"
#include "pki/ossl.h"

namespace certfleet::enroll {
namespace {

namespace json = boost::json;

// A self-signed CA certificate, PEM.
std::string SelfSigned(EVP_PKEY* key, const std::string& cn) {
  pki::CertificateSpec spec;
  spec.common_name = cn;
  spec.is_ca = true;
  spec.not_before_millis = 1'700'000'000'000;
  spec.not_after_millis = 1'900'000'000'000;
  auto issued = pki::IssueCertificate(spec, key, nullptr, key);
  EXPECT_TRUE(issued.ok());
  return pki::PemEncode("CERTIFICATE", issued->der);
}

TEST(Est, BodiesAreBase64WithAnyLineBreaksOrPemOrDer) {
  const std::string der = "\x30\x03\x02\x01\x05";
  EXPECT_EQ(*est::BodyDer("MAMCAQU=\r\n"), der);
  EXPECT_EQ(*est::BodyDer("MAM\nCAQU="), der);
  EXPECT_EQ(*est::BodyDer(der), der);
  EXPECT_EQ(est::BodyDer("not base64!").error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(est::BodyDer("").error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(est::BodyDer(std::string(est::kMaxBodyBytes + 1, 'A')).error().code, ErrorCode::kInvalidArgument);
  const std::string long_der(100, 'x');
  const std::string body = est::Base64Body(long_der);
  EXPECT_EQ(body.find('\n'), 64u);
  EXPECT_TRUE(body.ends_with("\n"));
  EXPECT_EQ(est::BodyDer(body).value(), long_der);
}

TEST(Est, CsrAttributesAreADerSequenceOpenSslReads) {
  Profile p;
  p.key_type = pki::KeyType::kEcP384;
  const std::string der = est::CsrAttributes(p);
  const auto* in = reinterpret_cast<const unsigned char*>(der.data());
  STACK_OF(ASN1_TYPE)* seq = d2i_ASN1_SEQUENCE_ANY(nullptr, &in, static_cast<long>(der.size()));
  ASSERT_NE(seq, nullptr);
  ASSERT_EQ(sk_ASN1_TYPE_num(seq), 3);
  EXPECT_EQ(OBJ_obj2nid(sk_ASN1_TYPE_value(seq, 0)->value.object), NID_pkcs9_challengePassword);
  EXPECT_EQ(sk_ASN1_TYPE_value(seq, 1)->type, V_ASN1_SEQUENCE);  // id-ecPublicKey with its curve
  EXPECT_EQ(OBJ_obj2nid(sk_ASN1_TYPE_value(seq, 2)->value.object), NID_ecdsa_with_SHA384);
  sk_ASN1_TYPE_pop_free(seq, ASN1_TYPE_free);
}

TEST(Est, ServerKeygenAnswersTheKeyAndTheCertificateAsTwoParts) {
  std::string type;
  EXPECT_FALSE(est::ServerKeygenBody("no key", "", type).ok());
  pki::PkeyPtr key = std::move(pki::GenerateKey(pki::KeyType::kEcP256).value());
  auto body = est::ServerKeygenBody(*pki::PrivateKeyToPem(key.get()), SelfSigned(key.get(), "Test"), type);
  ASSERT_TRUE(body.ok()) << body.error().message;
  ASSERT_TRUE(type.starts_with("multipart/mixed; boundary="));
  const std::string boundary = "--" + type.substr(type.find('=') + 1);
  EXPECT_TRUE(body->starts_with(boundary + "\r\nContent-Type: application/pkcs8\r\n"));
  EXPECT_NE(body->find("Content-Type: application/pkcs7-mime; smime-type=certs-only\r\n"), std::string::npos);
  EXPECT_TRUE(body->ends_with(boundary + "--\r\n"));
}

TEST(Est, CertsOnlyHoldsEveryCertificateOfTheBundle) {
  EXPECT_FALSE(est::CertsOnly("no certificates").ok());
  pki::PkeyPtr key = std::move(pki::GenerateKey(pki::KeyType::kEcP256).value());
  auto der = est::CertsOnly(SelfSigned(key.get(), "One") + SelfSigned(key.get(), "Two"));
  ASSERT_TRUE(der.ok());
  const auto* in = reinterpret_cast<const unsigned char*>(der->data());
  PKCS7* p7 = d2i_PKCS7(nullptr, &in, static_cast<long>(der->size()));
  ASSERT_NE(p7, nullptr);
  ASSERT_TRUE(PKCS7_type_is_signed(p7));
  STACK_OF(X509)* certs = p7->d.sign->cert;
  ASSERT_EQ(sk_X509_num(certs), 2);
  EXPECT_EQ(pki::NameEntry(X509_get_subject_name(sk_X509_value(certs, 1)), NID_commonName), "Two");
  EXPECT_EQ(sk_PKCS7_SIGNER_INFO_num(p7->d.sign->signer_info), 0);
  PKCS7_free(p7);
}

TEST(EnrollProfiles, JsonIsCheckedAndRoundTrips) {
  auto p = ProfileFromJson(
      "line-7",
      json::object{
          {"template", "t"}, {"auth", {"secret", "reenroll", "secret"}}, {"key_type", "rsa-2048"}, {"approval", true}});
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(p->auth, (std::vector<AuthWay>{AuthWay::kSecret, AuthWay::kReenroll}));
  EXPECT_TRUE(p->Allows(AuthWay::kReenroll));
  EXPECT_FALSE(p->Allows(AuthWay::kFactory));
  auto back = ProfileFromRecord(ProfileRecord(*p, 1));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(json::serialize(ProfileJson(*back)), json::serialize(ProfileJson(*p)));

  const json::object ok{{"template", "t"}, {"auth", {"secret"}}};
  EXPECT_FALSE(ProfileFromJson("Line_7", ok).ok());
  EXPECT_FALSE(ProfileFromJson(std::string(65, 'a'), ok).ok());
  EXPECT_FALSE(ProfileFromJson("x", json::object{{"auth", {"secret"}}}).ok());
  EXPECT_FALSE(ProfileFromJson("x", json::object{{"template", "t"}, {"auth", json::array{}}}).ok());
  EXPECT_FALSE(ProfileFromJson("x", json::object{{"template", "t"}, {"auth", {"password"}}}).ok());
  EXPECT_FALSE(ProfileFromJson("x", json::object{{"template", "t"}, {"auth", {"secret"}}, {"key_type", "dsa"}}).ok());
  EXPECT_FALSE(
      ProfileFromJson("x", json::object{{"template", "t"}, {"auth", {"secret"}}, {"factory_anchors", "junk"}}).ok());
}

}  // namespace
}  // namespace certfleet::enroll
