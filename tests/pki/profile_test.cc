// The profiles field by field, the lint, CSRs, CRLs and OCSP, read back with OpenSSL.
#include "pki/profile.h"

#include <gtest/gtest.h>
#include <openssl/pem.h>

#include <chrono>
#include <string>
#include <vector>

#include "pki/certificate.h"
#include "pki/crl.h"
#include "pki/key.h"
#include "pki/ocsp.h"

namespace certfleet::pki {
namespace {

constexpr int64_t kNow = 1'795'456'605'000;
constexpr int64_t kDay = 86'400'000;

struct Issued {
  PkeyPtr key;
  X509Ptr cert;
};

Issued Make(CertType type, const std::string& fqdn, const Issued* issuer, KeyType kt = KeyType::kEcP256,
            std::vector<std::string> sans = {}, ServerUsage usage = ServerUsage::kServer) {
  Issued out;
  out.key = std::move(GenerateKey(kt)).value();
  ProfileInput in;
  in.type = type;
  in.fqdn = fqdn;
  in.sans = std::move(sans);
  in.usage = usage;
  in.not_before_millis = kNow;
  in.not_after_millis = kNow + 365 * kDay;
  if (issuer) {
    in.crl_url = "https://ca.test/crl/p.crl";
    in.ocsp_url = "https://ca.test/ocsp";
  }
  auto spec = ApplyProfile(in, out.key.get(), issuer ? issuer->cert.get() : nullptr);
  EXPECT_TRUE(spec.ok()) << spec.error().message;
  out.cert = std::move(SignCertificate(spec->spec, out.key.get(), issuer ? issuer->cert.get() : nullptr,
                                       issuer ? issuer->key.get() : out.key.get()))
                 .value();
  return out;
}

ProfileInput Input(CertType type, std::string fqdn) {
  ProfileInput in;
  in.type = type;
  in.fqdn = std::move(fqdn);
  return in;
}

bool Critical(X509* cert, int nid) {
  int idx = X509_get_ext_by_NID(cert, nid, -1);
  return idx >= 0 && X509_EXTENSION_get_critical(X509_get_ext(cert, idx));
}
bool Has(X509* cert, int nid) { return X509_get_ext_by_NID(cert, nid, -1) >= 0; }

class Profiles : public ::testing::Test {
 protected:
  Issued root_ = Make(CertType::kRoot, "example.com", nullptr);
  Issued inter_ = Make(CertType::kIntermediate, "iot.example.com", &root_);
};

TEST_F(Profiles, Root) {
  X509* c = root_.cert.get();
  EXPECT_EQ(X509_check_ca(c), 1);
  EXPECT_TRUE(Critical(c, NID_basic_constraints));
  EXPECT_EQ(X509_get_pathlen(c), -1);
  EXPECT_TRUE(Critical(c, NID_key_usage));
  EXPECT_EQ(X509_get_key_usage(c), static_cast<uint32_t>(KU_DIGITAL_SIGNATURE | KU_KEY_CERT_SIGN | KU_CRL_SIGN));
  EXPECT_TRUE(Has(c, NID_subject_key_identifier));
  EXPECT_FALSE(Has(c, NID_crl_distribution_points));
  EXPECT_EQ(X509_check_issued(c, c), X509_V_OK);
}

TEST_F(Profiles, Intermediate) {
  X509* c = inter_.cert.get();
  EXPECT_TRUE(Critical(c, NID_basic_constraints));
  EXPECT_EQ(X509_get_pathlen(c), 0);
  EXPECT_EQ(X509_get_key_usage(c), static_cast<uint32_t>(KU_DIGITAL_SIGNATURE | KU_KEY_CERT_SIGN | KU_CRL_SIGN));
  EXPECT_TRUE(Has(c, NID_subject_key_identifier));
  EXPECT_TRUE(Has(c, NID_authority_key_identifier));
  EXPECT_TRUE(Has(c, NID_crl_distribution_points));
  EXPECT_TRUE(Has(c, NID_info_access));
  EXPECT_EQ(X509_check_issued(root_.cert.get(), c), X509_V_OK);
}

TEST_F(Profiles, ServerWithRsaHasKeyEnciphermentAndSans) {
  Issued s = Make(CertType::kServer, "api.iot.example.com", &inter_, KeyType::kRsa2048, {"www.example.com"});
  X509* c = s.cert.get();
  EXPECT_EQ(X509_check_ca(c), 0);
  EXPECT_TRUE(Critical(c, NID_basic_constraints));
  EXPECT_EQ(X509_get_key_usage(c), static_cast<uint32_t>(KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT));
  EXPECT_EQ(X509_get_extended_key_usage(c), static_cast<uint32_t>(XKU_SSL_SERVER));
  EXPECT_EQ(X509_check_host(c, "api.iot.example.com", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(c, "www.example.com", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(c, "other.example.com", 0, 0, nullptr), 0);
  for (int nid :
       {NID_subject_key_identifier, NID_authority_key_identifier, NID_crl_distribution_points, NID_info_access}) {
    EXPECT_TRUE(Has(c, nid)) << OBJ_nid2sn(nid);
  }
  auto facts = Inspect(c);
  ASSERT_TRUE(facts.ok());
  EXPECT_EQ(facts->serial_hex.size() >= 30, true) << facts->serial_hex;  // 128 bits, top bit clear
}

// A serial is the time of issue in milliseconds (48 bits), then 80 random bits.
TEST_F(Profiles, SerialsBeginWithTheTimeOfIssueThenRandomBits) {
  auto now_ms = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  const int64_t before = now_ms();
  std::vector<std::string> serials;
  for (int i = 0; i < 2; ++i) {
    auto facts = Inspect(Make(CertType::kServer, "api.iot.example.com", &inter_).cert.get());
    ASSERT_TRUE(facts.ok());
    serials.push_back(std::string(32 - facts->serial_hex.size(), '0') + facts->serial_hex);  // 16 bytes
  }
  const int64_t after = now_ms();
  for (const auto& serial : serials) {
    const int64_t at = std::stoll(serial.substr(0, 12), nullptr, 16);
    EXPECT_TRUE(before <= at && at <= after) << serial << " " << before << ".." << after;
  }
  EXPECT_NE(serials[0].substr(12), serials[1].substr(12)) << "the random part";
  EXPECT_LE(serials[0].substr(0, 12), serials[1].substr(0, 12)) << "issued later, sorted later";
}

TEST_F(Profiles, DeviceIsClientAuthWithTheDeviceIdAsCn) {
  Issued d = Make(CertType::kDevice, "0b7c1e7a-1d0f-4a57-9d7b-6f1f9e0e2d11.iot.example.com", &inter_);
  X509* c = d.cert.get();
  EXPECT_EQ(X509_get_key_usage(c), static_cast<uint32_t>(KU_DIGITAL_SIGNATURE));
  EXPECT_EQ(X509_get_extended_key_usage(c), static_cast<uint32_t>(XKU_SSL_CLIENT));
  EXPECT_EQ(Inspect(c)->common_name, "0b7c1e7a-1d0f-4a57-9d7b-6f1f9e0e2d11.iot.example.com");
}

TEST_F(Profiles, AHostAuthenticatesAsServerAndClientAndAClientAsClientOnly) {
  Issued host = Make(CertType::kServer, "web-1.example.com", &inter_, KeyType::kEcP256, {}, ServerUsage::kHost);
  EXPECT_EQ(X509_get_extended_key_usage(host.cert.get()), static_cast<uint32_t>(XKU_SSL_SERVER | XKU_SSL_CLIENT));
  EXPECT_EQ(X509_check_host(host.cert.get(), "web-1.example.com", 0, 0, nullptr), 1);
  Issued client = Make(CertType::kServer, "db-1", &inter_, KeyType::kEcP256, {}, ServerUsage::kClient);
  EXPECT_EQ(X509_get_extended_key_usage(client.cert.get()), static_cast<uint32_t>(XKU_SSL_CLIENT));
  EXPECT_EQ(X509_check_purpose(client.cert.get(), X509_PURPOSE_SSL_SERVER, 0), 0);
  EXPECT_EQ(X509_check_purpose(client.cert.get(), X509_PURPOSE_SSL_CLIENT, 0), 1);
}

TEST_F(Profiles, VerifyChainAcceptsTheIssuersAndRefusesAnotherRoot) {
  Issued leaf = Make(CertType::kServer, "web-1.example.com", &inter_, KeyType::kEcP256, {}, ServerUsage::kHost);
  auto pem = [](X509* c) { return std::move(CertificateToPem(c)).value(); };
  auto chain = CertificatesFromPem(pem(inter_.cert.get()) + pem(root_.cert.get()));
  ASSERT_TRUE(chain.ok()) << chain.error().message;
  ASSERT_EQ(chain->size(), 2u);
  EXPECT_TRUE(VerifyChain(leaf.cert.get(), *chain).ok());
  Issued other_root = Make(CertType::kRoot, "example.org", nullptr);
  auto wrong = CertificatesFromPem(pem(inter_.cert.get()) + pem(other_root.cert.get()));
  auto refused = VerifyChain(leaf.cert.get(), *wrong);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument);
  EXPECT_FALSE(CertificatesFromPem("no certificate").ok());
}

TEST_F(Profiles, LintRefusals) {
  auto key = GenerateKey(KeyType::kEcP256);
  auto refuse = [&](ProfileInput in, X509* issuer, std::string_view needle) {
    if (in.not_after_millis == 0) {
      in.not_before_millis = kNow;
      in.not_after_millis = kNow + kDay;
    }
    auto r = ApplyProfile(in, key->get(), issuer);
    ASSERT_FALSE(r.ok()) << "accepted " << in.fqdn;
    EXPECT_NE(r.error().message.find(needle), std::string::npos) << r.error().message;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  };
  refuse(Input(CertType::kServer, ""), inter_.cert.get(), "required");
  refuse(Input(CertType::kServer, "bad name.example.com"), inter_.cert.get(), "not a valid DNS name");
  refuse(Input(CertType::kServer, "ctl\x01.example.com"), inter_.cert.get(), "control characters");
  refuse(Input(CertType::kServer, std::string(70, 'a') + ".example.com"), inter_.cert.get(), "63");
  refuse(Input(CertType::kServer, std::string(60, 'a') + ".example.com"), inter_.cert.get(), "64 characters");
  ProfileInput zero = Input(CertType::kServer, "a.example.com");
  zero.not_before_millis = zero.not_after_millis = kNow;
  refuse(zero, inter_.cert.get(), "validity");
  Issued leaf = Make(CertType::kServer, "leaf.iot.example.com", &inter_);
  refuse(Input(CertType::kServer, "x.example.com"), leaf.cert.get(), "leaf");
  refuse(Input(CertType::kIntermediate, "sub.iot.example.com"), inter_.cert.get(), "pathLen 0");
  ProfileInput country = Input(CertType::kServer, "a.example.com");
  country.country = "Sweden";
  refuse(country, inter_.cert.get(), "country");

  // A device names DNS names only: an IPv4 address would pass for one.
  ProfileInput device_ip = Input(CertType::kDevice, "d.iot.example.com");
  device_ip.sans = {"10.0.0.5"};
  refuse(device_ip, inter_.cert.get(), "IP address");
  ProfileInput every_name = Input(CertType::kServer, "a.example.com");
  every_name.sans = {"*.com"};
  refuse(every_name, inter_.cert.get(), "not a valid DNS name");
  EXPECT_FALSE(IsValidDnsName("*", true));
  EXPECT_FALSE(IsValidDnsName("*.com", true));
  EXPECT_TRUE(IsValidDnsName("*.example.com", true));
  EXPECT_FALSE(IsValidDnsName("*.example.com", false));

  auto weak = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{1024});
  ProfileInput ok = Input(CertType::kServer, "a.example.com");
  ok.not_before_millis = kNow;
  ok.not_after_millis = kNow + kDay;
  auto r = ApplyProfile(ok, weak, inter_.cert.get());
  EVP_PKEY_free(weak);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("2048"), std::string::npos);
}

TEST_F(Profiles, ValidityIsClampedToTheIssuer) {
  auto key = GenerateKey(KeyType::kEcP256);
  ProfileInput in = Input(CertType::kServer, "long.iot.example.com");
  in.not_before_millis = kNow;
  in.not_after_millis = kNow + 5000 * kDay;
  auto r = ApplyProfile(in, key->get(), inter_.cert.get());
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->validity_clamped);
  EXPECT_EQ(r->spec.not_after_millis, Inspect(inter_.cert.get())->not_after_millis);
}

TEST_F(Profiles, InspectGivesTheFactsAndThePemOpenSslWrites) {
  Issued leaf = Make(CertType::kServer, "a.iot.example.com", &inter_);
  for (X509* c : {root_.cert.get(), inter_.cert.get(), leaf.cert.get()}) {
    auto facts = Inspect(c);
    ASSERT_TRUE(facts.ok());
    BioPtr bio(BIO_new(BIO_s_mem()));
    PEM_write_bio_X509(bio.get(), c);
    EXPECT_EQ(facts->pem, BioToString(bio.get()));
    EXPECT_EQ(facts->is_ca, c != leaf.cert.get());
    EXPECT_EQ(facts->serial_hex, SerialHex(X509_get0_serialNumber(c)));
  }
}

TEST_F(Profiles, CrlListsRevokedSerialsWithReasons) {
  auto der = BuildCrl(inter_.cert.get(), inter_.key.get(), {{"abcdef01", kNow, 1}, {"abcdef02", kNow, 0}}, 7, kNow,
                      kNow + kDay);
  ASSERT_TRUE(der.ok()) << der.error().message;
  const auto* p = reinterpret_cast<const unsigned char*>(der->data());
  X509CrlPtr crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(der->size())));
  ASSERT_TRUE(crl);
  EXPECT_EQ(X509_CRL_verify(crl.get(), inter_.key.get()), 1);
  ASSERT_EQ(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl.get())), 2);
  X509_REVOKED* r = sk_X509_REVOKED_value(X509_CRL_get_REVOKED(crl.get()), 0);
  EXPECT_EQ(SerialHex(X509_REVOKED_get0_serialNumber(r)), "abcdef01");
  EXPECT_GE(X509_REVOKED_get_ext_by_NID(r, NID_crl_reason, -1), 0);
  X509_REVOKED* unspecified = sk_X509_REVOKED_value(X509_CRL_get_REVOKED(crl.get()), 1);
  EXPECT_EQ(X509_REVOKED_get_ext_by_NID(unspecified, NID_crl_reason, -1), -1)
      << "unspecified is said by leaving the reasonCode out (RFC 5280 5.3.1)";
  Asn1IntegerPtr number(static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(crl.get(), NID_crl_number, nullptr, nullptr)));
  EXPECT_EQ(ASN1_INTEGER_get(number.get()), 7);
  EXPECT_EQ(ParseRevocationReason("keyCompromise").value(), 1);
  EXPECT_FALSE(ParseRevocationReason("bored").ok());
}

TEST_F(Profiles, OcspAnswersGoodAndRevoked) {
  Issued d = Make(CertType::kDevice, "d.iot.example.com", &inter_);
  using CertIdPtr = std::unique_ptr<OCSP_CERTID, Deleter<OCSP_CERTID_free>>;
  OcspRequestPtr req(OCSP_REQUEST_new());
  OCSP_request_add0_id(req.get(), OCSP_cert_to_id(nullptr, d.cert.get(), inter_.cert.get()));
  unsigned char* der = nullptr;
  int len = i2d_OCSP_REQUEST(req.get(), &der);
  std::string request(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  auto parsed = ParseOcspRequest(request);
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  ASSERT_EQ(parsed->questions.size(), 1u);
  EXPECT_EQ(parsed->questions[0].serial_hex, Inspect(d.cert.get())->serial_hex);
  EXPECT_EQ(parsed->questions[0].issuer_key_hash, IssuerKeyHash(inter_.cert.get()));
  auto resp = BuildOcspResponse(*parsed, inter_.cert.get(), inter_.key.get(),
                                {OcspAnswer{OcspStatus::kRevoked, kNow, 1}}, kNow, kNow + kDay);
  ASSERT_TRUE(resp.ok()) << resp.error().message;
  const auto* p = reinterpret_cast<const unsigned char*>(resp->data());
  std::unique_ptr<OCSP_RESPONSE, Deleter<OCSP_RESPONSE_free>> r(
      d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(resp->size())));
  ASSERT_TRUE(r);
  std::unique_ptr<OCSP_BASICRESP, Deleter<OCSP_BASICRESP_free>> basic(OCSP_response_get1_basic(r.get()));
  CertIdPtr id(OCSP_cert_to_id(nullptr, d.cert.get(), inter_.cert.get()));
  int status = -1, reason = -1;
  ASSERT_EQ(OCSP_resp_find_status(basic.get(), id.get(), &status, &reason, nullptr, nullptr, nullptr), 1);
  EXPECT_EQ(status, V_OCSP_CERTSTATUS_REVOKED);
  EXPECT_EQ(reason, 1);
  EXPECT_FALSE(ParseOcspRequest("nonsense").ok());

  // A nonce of 1 to 128 octets (RFC 9654 2.1); others make a malformed request.
  for (int length : {0, 1, 32, 128, 129, 200}) {
    SCOPED_TRACE(length);
    OcspRequestPtr with_nonce(OCSP_REQUEST_new());
    OCSP_request_add0_id(with_nonce.get(), OCSP_cert_to_id(nullptr, d.cert.get(), inter_.cert.get()));
    // extnValue: the DER of an OCTET STRING holding the nonce.
    std::string inner = length < 128 ? std::string{'\x04', static_cast<char>(length)}
                                     : std::string{'\x04', '\x81', static_cast<char>(length)};
    inner += std::string(static_cast<size_t>(length), 'n');
    std::unique_ptr<ASN1_OCTET_STRING, Deleter<ASN1_OCTET_STRING_free>> value(ASN1_OCTET_STRING_new());
    ASN1_OCTET_STRING_set(value.get(), reinterpret_cast<const unsigned char*>(inner.data()),
                          static_cast<int>(inner.size()));
    std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION_free>> ext(
        X509_EXTENSION_create_by_NID(nullptr, NID_id_pkix_OCSP_Nonce, 0, value.get()));
    ASSERT_EQ(OCSP_REQUEST_add_ext(with_nonce.get(), ext.get(), -1), 1);
    unsigned char* nonce_der = nullptr;
    const int nonce_len = i2d_OCSP_REQUEST(with_nonce.get(), &nonce_der);
    auto asked = ParseOcspRequest(std::string(reinterpret_cast<char*>(nonce_der), static_cast<size_t>(nonce_len)));
    OPENSSL_free(nonce_der);
    EXPECT_EQ(asked.ok(), length >= 1 && length <= 128) << (asked.ok() ? "" : asked.error().message);
  }
}

TEST(KeyTypes, EveryKeyTypeSignsCertificatesCrlsAndOcsp) {
  for (KeyType kt : {KeyType::kEcP256, KeyType::kEcP384, KeyType::kRsa2048, KeyType::kEd25519}) {
    SCOPED_TRACE(std::string(KeyTypeName(kt)));
    Issued root = Make(CertType::kRoot, "example.com", nullptr, kt);
    Issued leaf = Make(CertType::kServer, "a.example.com", &root, kt);
    EXPECT_EQ(X509_verify(leaf.cert.get(), root.key.get()), 1);
    auto crl_der = BuildCrl(root.cert.get(), root.key.get(), {{"01", kNow, 0}}, 1, kNow, kNow + kDay);
    ASSERT_TRUE(crl_der.ok());
    const auto* crl_p = reinterpret_cast<const unsigned char*>(crl_der->data());
    X509CrlPtr crl(d2i_X509_CRL(nullptr, &crl_p, static_cast<long>(crl_der->size())));
    ASSERT_TRUE(crl);
    // The certificates' digest: a P-384 CA's CRLs and OCSP responses are SHA-384 too.
    const int expected_sig = X509_get_signature_nid(leaf.cert.get());
    EXPECT_EQ(X509_CRL_get_signature_nid(crl.get()), expected_sig);
    OcspRequestPtr req(OCSP_REQUEST_new());
    OCSP_request_add0_id(req.get(), OCSP_cert_to_id(nullptr, leaf.cert.get(), root.cert.get()));
    unsigned char* der = nullptr;
    int len = i2d_OCSP_REQUEST(req.get(), &der);
    auto parsed = ParseOcspRequest(std::string(reinterpret_cast<char*>(der), static_cast<size_t>(len)));
    OPENSSL_free(der);
    ASSERT_TRUE(parsed.ok());
    auto resp =
        BuildOcspResponse(*parsed, root.cert.get(), root.key.get(), {OcspAnswer{OcspStatus::kGood}}, kNow, kNow + kDay);
    ASSERT_TRUE(resp.ok()) << resp.error().message;
    const auto* resp_p = reinterpret_cast<const unsigned char*>(resp->data());
    std::unique_ptr<OCSP_RESPONSE, Deleter<OCSP_RESPONSE_free>> r(
        d2i_OCSP_RESPONSE(nullptr, &resp_p, static_cast<long>(resp->size())));
    std::unique_ptr<OCSP_BASICRESP, Deleter<OCSP_BASICRESP_free>> basic(OCSP_response_get1_basic(r.get()));
    ASSERT_TRUE(basic);
    EXPECT_EQ(OBJ_obj2nid(OCSP_resp_get0_tbs_sigalg(basic.get())->algorithm), expected_sig);
  }
  EXPECT_TRUE(GenerateKey(KeyType::kRsa3072).ok());
  EXPECT_FALSE(ParseKeyType("rsa-1024").ok());
}

}  // namespace
}  // namespace certfleet::pki
