// Where certificates send relying parties for revocation: ca.revocation_url (a plain HTTP
// base, say) or else public_url, in the CRL distribution point and the OCSP URL.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <array>
#include <map>
#include <string>
#include <vector>

#include "issuance/setup.h"
#include "pki/certificate.h"
#include "testing/db.h"
#include "testing/issuance.h"

namespace certfleet::issuance {
namespace {

Config Configured(const std::map<std::string, std::string>& values) {
  std::vector<ConfigKey> keys(ConfigKeys().begin(), ConfigKeys().end());
  return Config::ForTest(keys, values);
}

TEST(RevocationUrl, IsPublicUrlUnlessSetAndMustBeAWebBase) {
  auto plain = IssuerOptions(Configured({}), "https://node:8443");
  ASSERT_TRUE(plain.ok()) << plain.error().message;
  EXPECT_EQ(plain->public_url, "https://node:8443");
  EXPECT_EQ(plain->revocation_url, "");
  auto set = IssuerOptions(Configured({{"ca.revocation_url", "http://pki.example.com/"}}), "https://node:8443");
  ASSERT_TRUE(set.ok()) << set.error().message;
  EXPECT_EQ(set->revocation_url, "http://pki.example.com");
  for (const char* bad : {"pki.example.com", "ftp://pki.example.com", "http://", "http://pki.example.com/?x=1",
                          "http://pki example.com", "http://pki.example.com/#f"}) {
    auto refused = IssuerOptions(Configured({{"ca.revocation_url", bad}}), "https://node:8443");
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_NE(refused.error().message.find("ca.revocation_url"), std::string::npos) << refused.error().message;
  }
}

// The certificate's extensions as openssl prints them.
std::string Extensions(const std::string& pem) {
  auto cert = pki::CertificateFromPem(pem);
  EXPECT_TRUE(cert.ok());
  if (!cert.ok()) return "";
  BIO* out = BIO_new(BIO_s_mem());
  X509_print_ex(out, cert->get(), 0, X509_FLAG_NO_SIGDUMP | X509_FLAG_NO_PUBKEY);
  char* data = nullptr;
  const long n = BIO_get_mem_data(out, &data);
  std::string text(data, static_cast<size_t>(n));
  BIO_free(out);
  return text;
}

TEST(RevocationUrl, CertificatesNameItInTheirCrlAndOcspUrls) {
  auto store = testing::FreshStore(store::Dialect::kSqlite);
  ASSERT_NE(store, nullptr);
  ManualClock clock;
  for (const auto& [revocation, base] : std::array<std::pair<std::string, std::string>, 2>{
           {{"", "https://ca.test"}, {"http://pki.test", "http://pki.test"}}}) {
    pki::file::FileKeyBackend keys(testing::TempDir() + "/keys", std::string(64, 'k'));
    Issuer issuer(*store, keys, clock, Issuer::Options{.public_url = "https://ca.test", .revocation_url = revocation});
    const std::string root = revocation.empty() ? "example.com" : "example.org";
    ASSERT_TRUE(testing::IssueHierarchy(issuer, root, "iot." + root));
    IssueRequest device;
    device.type = pki::CertType::kDevice;
    device.name = "sensor." + root;
    device.parent = "iot." + root;
    auto issued = issuer.Issue(device, "test");
    ASSERT_TRUE(issued.ok()) << issued.error().message;
    const std::string text = Extensions(issued->record.certificate_pem);
    EXPECT_NE(text.find(fmt::format("URI:{}/crl/iot.{}.crl", base, root)), std::string::npos) << text;
    EXPECT_NE(text.find("OCSP - URI:" + base + "/ocsp"), std::string::npos) << text;
  }
}

}  // namespace
}  // namespace certfleet::issuance
