// The certificate builder writes DER itself: OpenSSL must read every certificate back, and
// re-encoding what it read must give the same bytes (canonical DER), extension by extension.
#include "pki/certificate.h"

#include <gtest/gtest.h>
#include <openssl/pem.h>

#include <functional>

#include "pki/crl.h"
#include "pki/der.h"
#include "pki/key.h"
#include "pki/profile.h"

namespace certfleet::pki {
namespace {

constexpr int64_t kNow = 1'795'456'605'000;
constexpr int64_t kDay = 86'400'000;

struct Made {
  PkeyPtr key;
  IssuedCertificate issued;
  X509Ptr cert;
};

Made Issue(const CertificateSpec& spec, KeyType kt, const Made* issuer) {
  Made out;
  out.key = std::move(GenerateKey(kt)).value();
  auto issued = IssueCertificate(spec, out.key.get(), issuer ? issuer->cert.get() : nullptr,
                                 issuer ? issuer->key.get() : out.key.get());
  EXPECT_TRUE(issued.ok()) << issued.error().message;
  out.issued = std::move(issued).value();
  const auto* p = reinterpret_cast<const unsigned char*>(out.issued.der.data());
  out.cert.reset(d2i_X509(nullptr, &p, static_cast<long>(out.issued.der.size())));
  EXPECT_TRUE(out.cert) << "OpenSSL cannot read the certificate";
  return out;
}

CertificateSpec Spec(std::string cn, bool is_ca) {
  CertificateSpec s;
  s.common_name = std::move(cn);
  s.is_ca = is_ca;
  s.not_before_millis = kNow;
  s.not_after_millis = kNow + 365 * kDay;
  return s;
}

std::string Bytes(const unsigned char* p, int len) { return std::string(reinterpret_cast<const char*>(p), len); }

// OpenSSL's own encoding of what it decoded: the TBS, and every extension's value.
void ExpectCanonical(const Made& m) {
  DerReader top(m.issued.der);
  auto cert = top.Next(kDerSequence, "certificate");
  ASSERT_TRUE(cert.ok());
  DerReader parts(cert->contents);
  auto tbs = parts.Next(kDerSequence, "tbs");
  ASSERT_TRUE(tbs.ok());
  unsigned char* der = nullptr;
  int len = i2d_re_X509_tbs(m.cert.get(), &der);
  ASSERT_GT(len, 0);
  EXPECT_EQ(Bytes(der, len), std::string(tbs->encoding));
  OPENSSL_free(der);
  for (int i = 0; i < X509_get_ext_count(m.cert.get()); ++i) {
    X509_EXTENSION* ext = X509_get_ext(m.cert.get(), i);
    const int nid = OBJ_obj2nid(X509_EXTENSION_get_object(ext));
    SCOPED_TRACE(OBJ_nid2sn(nid));
    const X509V3_EXT_METHOD* method = X509V3_EXT_get(ext);
    ASSERT_NE(method, nullptr);
    ASSERT_NE(method->it, nullptr);
    const ASN1_OCTET_STRING* value = X509_EXTENSION_get_data(ext);
    const unsigned char* p = ASN1_STRING_get0_data(value);
    ASN1_VALUE* decoded = ASN1_item_d2i(nullptr, &p, ASN1_STRING_length(value), ASN1_ITEM_ptr(method->it));
    ASSERT_NE(decoded, nullptr);
    unsigned char* again = nullptr;
    const int again_len = ASN1_item_i2d(decoded, &again, ASN1_ITEM_ptr(method->it));
    EXPECT_EQ(Bytes(again, again_len), Bytes(ASN1_STRING_get0_data(value), ASN1_STRING_length(value)));
    OPENSSL_free(again);
    ASN1_item_free(decoded, ASN1_ITEM_ptr(method->it));
  }
}

TEST(IssueCertificate, EveryProfileIsCanonicalDerWithTheFactsOpenSslReads) {
  CertificateSpec root_spec = Spec("example.com", true);
  root_spec.country = "SE";
  root_spec.state = "Västra Götaland";
  root_spec.organization = "Exempel AB";
  Made root = Issue(root_spec, KeyType::kEcP256, nullptr);
  CertificateSpec inter_spec = Spec("iot.example.com", true);
  inter_spec.path_len = 0;
  inter_spec.crl_url = "https://ca.test/crl/example.com.crl";
  inter_spec.ocsp_url = "https://ca.test/ocsp";
  Made inter = Issue(inter_spec, KeyType::kEcP256, &root);
  CertificateSpec server_spec = Spec("api.iot.example.com", false);
  server_spec.server_auth = true;
  server_spec.dns_names = {"api.iot.example.com", "www.example.com"};
  server_spec.ip_addresses = {"192.0.2.7", "2001:db8::1"};
  server_spec.crl_url = "https://ca.test/crl/iot.example.com.crl";
  server_spec.ocsp_url = "https://ca.test/ocsp";
  Made server = Issue(server_spec, KeyType::kRsa2048, &inter);
  CertificateSpec device_spec = Spec("0b7c1e7a-1d0f-4a57-9d7b-6f1f9e0e2d11.iot.example.com", false);
  device_spec.client_auth = true;
  Made device = Issue(device_spec, KeyType::kEd25519, &inter);

  for (const Made* m : {&root, &inter, &server, &device}) {
    SCOPED_TRACE(m->issued.facts.common_name);
    ExpectCanonical(*m);
    auto facts = Inspect(m->cert.get());
    ASSERT_TRUE(facts.ok());
    EXPECT_EQ(m->issued.facts.serial_hex, facts->serial_hex);
    EXPECT_EQ(m->issued.facts.not_before_millis, facts->not_before_millis);
    EXPECT_EQ(m->issued.facts.not_after_millis, facts->not_after_millis);
    EXPECT_EQ(m->issued.facts.sha256_fingerprint, facts->sha256_fingerprint);
    EXPECT_EQ(m->issued.facts.common_name, facts->common_name);
    EXPECT_EQ(m->issued.facts.is_ca, facts->is_ca);
    EXPECT_EQ(m->issued.facts.pem, facts->pem);
  }
  // keyUsage in DER's shortest form (OpenSSL re-encodes BIT STRINGs as it read them).
  auto key_usage = [](const Made& m) {
    const ASN1_OCTET_STRING* v =
        X509_EXTENSION_get_data(X509_get_ext(m.cert.get(), X509_get_ext_by_NID(m.cert.get(), NID_key_usage, -1)));
    return Bytes(ASN1_STRING_get0_data(v), ASN1_STRING_length(v));
  };
  EXPECT_EQ(key_usage(root), std::string("\x03\x02\x01\x86", 4));    // digitalSignature, keyCertSign, cRLSign
  EXPECT_EQ(key_usage(server), std::string("\x03\x02\x05\xa0", 4));  // digitalSignature, keyEncipherment
  EXPECT_EQ(key_usage(device), std::string("\x03\x02\x07\x80", 4));  // digitalSignature
  EXPECT_EQ(X509_verify(root.cert.get(), root.key.get()), 1);
  EXPECT_EQ(X509_verify(inter.cert.get(), root.key.get()), 1);
  EXPECT_EQ(X509_verify(server.cert.get(), inter.key.get()), 1);
  EXPECT_EQ(X509_check_issued(inter.cert.get(), device.cert.get()), X509_V_OK);
  EXPECT_EQ(X509_check_ip_asc(server.cert.get(), "2001:db8::1", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(server.cert.get(), "192.0.2.7", 0), 1);

  // Country as PrintableString, the other attributes as UTF8String, in the order C, ST, O, CN.
  X509_NAME* name = X509_get_subject_name(root.cert.get());
  ASSERT_EQ(X509_NAME_entry_count(name), 4);
  const int expected[][2] = {{NID_countryName, V_ASN1_PRINTABLESTRING},
                             {NID_stateOrProvinceName, V_ASN1_UTF8STRING},
                             {NID_organizationName, V_ASN1_UTF8STRING},
                             {NID_commonName, V_ASN1_UTF8STRING}};
  for (int i = 0; i < 4; ++i) {
    X509_NAME_ENTRY* e = X509_NAME_get_entry(name, i);
    EXPECT_EQ(OBJ_obj2nid(X509_NAME_ENTRY_get_object(e)), expected[i][0]);
    EXPECT_EQ(ASN1_STRING_type(X509_NAME_ENTRY_get_data(e)), expected[i][1]);
  }
  EXPECT_EQ(X509_NAME_cmp(X509_get_issuer_name(inter.cert.get()), name), 0);
}

TEST(IssueCertificate, SignsWithTheIssuersAlgorithm) {
  const std::pair<KeyType, int> cases[] = {{KeyType::kEcP256, NID_ecdsa_with_SHA256},
                                           {KeyType::kEcP384, NID_ecdsa_with_SHA384},
                                           {KeyType::kRsa2048, NID_sha256WithRSAEncryption},
                                           {KeyType::kEd25519, NID_ED25519}};
  for (auto [kt, nid] : cases) {
    SCOPED_TRACE(std::string(KeyTypeName(kt)));
    Made m = Issue(Spec("example.com", true), kt, nullptr);
    EXPECT_EQ(X509_get_signature_nid(m.cert.get()), nid);
    EXPECT_EQ(X509_verify(m.cert.get(), m.key.get()), 1);
    ExpectCanonical(m);
  }
}

TEST(IssueCertificate, TimesFrom2050AreGeneralizedTime) {
  CertificateSpec s = Spec("example.com", true);
  s.not_after_millis = 2'556'143'999'000;  // 2050-12-31T23:59:59Z
  Made m = Issue(s, KeyType::kEcP256, nullptr);
  EXPECT_EQ(ASN1_STRING_type(X509_get0_notBefore(m.cert.get())), V_ASN1_UTCTIME);
  EXPECT_EQ(ASN1_STRING_type(X509_get0_notAfter(m.cert.get())), V_ASN1_GENERALIZEDTIME);
  EXPECT_EQ(m.issued.facts.not_after_millis, Inspect(m.cert.get())->not_after_millis);
}

TEST(IssueCertificate, RefusesNamesOpenSslWouldRefuse) {
  auto key = GenerateKey(KeyType::kEcP256);
  auto refuse = [&](CertificateSpec s, std::string_view needle) {
    auto r = IssueCertificate(s, key->get(), nullptr, key->get());
    ASSERT_FALSE(r.ok()) << "accepted " << s.common_name;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message.find(needle), std::string::npos) << r.error().message;
  };
  refuse(Spec("", true), "empty");
  refuse(Spec(std::string(65, 'a'), true), "64 characters");
  refuse(Spec("bad\xff utf-8", true), "UTF-8");
  refuse(Spec("overlong \xc0\xaf", true), "UTF-8");
  CertificateSpec country = Spec("example.com", true);
  country.country = "S1";
  refuse(country, "country");
  CertificateSpec ip = Spec("example.com", false);
  ip.ip_addresses = {"300.1.1.1"};
  refuse(ip, "IP address");
  // 64 characters of two bytes each are still 64 characters.
  std::string wide;
  for (int i = 0; i < 64; ++i) wide += "é";
  EXPECT_TRUE(IssueCertificate(Spec(wide, true), key->get(), nullptr, key->get()).ok());
}

}  // namespace
}  // namespace certfleet::pki

namespace certfleet::pki {
namespace {

std::string CnOf(std::string_view der) {
  auto cn = CertificateSubjectCn(der);
  return cn.ok() ? *cn : "error: " + cn.error().message;
}

TEST(CertificateSubjectCn, ReadsTheCnAsOpenSslDoesAndRefusesWhatIsNoCertificate) {
  Made root = Issue(Spec("Root ÅÄÖ CA", true), KeyType::kEcP256, nullptr);  // UTF8String
  EXPECT_EQ(CnOf(root.issued.der), NameEntry(X509_get_subject_name(root.cert.get()), NID_commonName));
  // Self-signed by OpenSSL's builder with the subject `fill` makes.
  auto self_signed = [&](const std::function<void(X509_NAME*)>& fill) {
    X509Ptr x(X509_new());
    fill(X509_get_subject_name(x.get()));
    X509_set_issuer_name(x.get(), X509_get_subject_name(x.get()));
    X509_set_pubkey(x.get(), root.key.get());
    ASN1_TIME_set(X509_getm_notBefore(x.get()), 0);
    ASN1_TIME_set(X509_getm_notAfter(x.get()), 86400);
    EXPECT_GT(X509_sign(x.get(), root.key.get(), EVP_sha256()), 0);
    unsigned char* der = nullptr;
    const int len = i2d_X509(x.get(), &der);
    std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
    OPENSSL_free(der);
    return out;
  };
  // A CN as BMPString: converted to UTF-8 as OpenSSL does.
  EXPECT_EQ(CnOf(self_signed([](X509_NAME* n) {
              X509_NAME_add_entry_by_NID(n, NID_commonName, MBSTRING_BMP,
                                         reinterpret_cast<const unsigned char*>("\0d\0e\0v"), 6, -1, 0);
            })),
            "dev");
  EXPECT_EQ(CnOf(self_signed([](X509_NAME* n) {
              X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("Acme"), -1, -1,
                                         0);
            })),
            "")
      << "no CN";

  const std::string& good = root.issued.der;
  EXPECT_FALSE(CertificateSubjectCn(good.substr(0, good.size() - 1)).ok()) << "cut short";
  EXPECT_FALSE(CertificateSubjectCn(good + "x").ok()) << "trailing bytes";
  EXPECT_FALSE(CertificateSubjectCn("").ok());
  EXPECT_FALSE(CertificateSubjectCn(std::string("\x30\x03\x02\x01\x01", 5)).ok()) << "a SEQUENCE, not a certificate";
}

TEST(IsSelfIssued, ARootIsAndTheCertificateItSignsIsNot) {
  Made root = Issue(Spec("Root CA", true), KeyType::kEcP256, nullptr);
  Made leaf = Issue(Spec("leaf.example.com", false), KeyType::kEcP256, &root);
  EXPECT_TRUE(*IsSelfIssued(root.issued.der));
  EXPECT_FALSE(*IsSelfIssued(leaf.issued.der));
  auto der = PemBlockBytes(PemEncode("CERTIFICATE", leaf.issued.der) + PemEncode("CERTIFICATE", root.issued.der),
                           PEM_STRING_X509);
  ASSERT_TRUE(der.has_value());
  EXPECT_EQ(*der, leaf.issued.der) << "the first certificate of a PEM text";
  EXPECT_FALSE(PemBlockBytes("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n", PEM_STRING_X509));
  EXPECT_FALSE(PemBlockBytes(PemEncode("CERTIFICATE", leaf.issued.der), PEM_STRING_PUBLIC)) << "another label";
  EXPECT_FALSE(IsSelfIssued(root.issued.der.substr(1)).ok());
}

TEST(Serials, AnySpellingOfASerialFindsItsCanonicalForm) {
  // OpenSSL prints whole bytes in upper case; the inventory drops leading zeros.
  EXPECT_EQ(CanonicalSerial("0C0EE20BF1").value_or(""), "c0ee20bf1");
  EXPECT_EQ(CanonicalSerial("c0ee20bf1").value_or(""), "c0ee20bf1");
  EXPECT_EQ(CanonicalSerial("0c:0e:e2:0b:f1").value_or(""), "c0ee20bf1");
  EXPECT_EQ(CanonicalSerial("0x0C0EE20BF1").value_or(""), "c0ee20bf1");
  EXPECT_EQ(CanonicalSerial("00").value_or(""), "0");
  EXPECT_FALSE(CanonicalSerial("").has_value());
  EXPECT_FALSE(CanonicalSerial(":").has_value());
  EXPECT_FALSE(CanonicalSerial("api.example.com").has_value());
  EXPECT_FALSE(CanonicalSerial(std::string(65, 'a')).has_value());
}

TEST(Revocation, ReasonsThatDoNotRevokeForGoodAreRefused) {
  EXPECT_EQ(*ParseRevocationReason("keyCompromise"), 1);
  EXPECT_EQ(*ParseRevocationReason("aACompromise"), 10);
  for (const char* refused : {"removeFromCRL", "certificateHold", "", "whatever"}) {
    auto r = ParseRevocationReason(refused);
    ASSERT_FALSE(r.ok()) << refused;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << refused;
  }
  EXPECT_NE(ParseRevocationReason("removeFromCRL").error().message.find("delta CRL"), std::string::npos);
}

}  // namespace
}  // namespace certfleet::pki
