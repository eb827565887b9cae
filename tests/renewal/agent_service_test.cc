// W4 enrollment: an agent's first certificate for the key of its CSR, with the host's
// names, against a single-use token; every refusal leaves the token and the store as they were.
#include "renewal/agent_service.h"

#include <gtest/gtest.h>
#include <openssl/x509v3.h>

#include "pki/certificate.h"
#include "pki/csr.h"
#include "renewal/fixture.h"

namespace certfleet::renewal {
namespace {

constexpr int64_t kDayMs = int64_t{24} * 3600 * 1000;

class EnrollTest : public HostsFixture {
 protected:
  void SetUp() override {
    HostsFixture::SetUp();
    for (const char* id : {"web-1.example.com", "db-1"}) {
      HostSpec spec;
      spec.host_id = id;
      spec.sans = {id, "10.0.0.7", "alt.example.com"};
      ASSERT_TRUE(hosts_->Create(spec, "t").ok());
    }
  }
  std::string Csr(const std::string& cn) { return *pki::MakeCsrPem(key_.get(), cn, {cn, "evil.example.net"}); }
  int64_t Certificates() {
    return store_
        ->Query(
            "SELECT COUNT(*) FROM certificates WHERE fqdn NOT LIKE '%example.com' OR fqdn LIKE "
            "'web-1%'")
        ->at(0)
        .Int(0);
  }
};

TEST_P(EnrollTest, AnAgentGetsACertificateForItsKeyWithTheHostsNamesOnce) {
  const std::string token = *hosts_->CreateToken("web-1.example.com", "t");
  auto enrolled = agents_->Enroll("web-1.example.com", token, Csr("web-1.example.com"));
  ASSERT_TRUE(enrolled.ok()) << enrolled.error().message;
  auto cert = pki::CertificateFromPem(enrolled->certificate_pem);
  ASSERT_TRUE(cert.ok());
  X509* c = cert->get();
  EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(c), key_.get()), 1) << "the key of the CSR";
  EXPECT_EQ(X509_get_extended_key_usage(c), static_cast<uint32_t>(XKU_SSL_SERVER | XKU_SSL_CLIENT));
  EXPECT_EQ(X509_check_host(c, "web-1.example.com", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(c, "alt.example.com", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(c, "evil.example.net", 0, 0, nullptr), 0) << "names come from the host, not the CSR";
  EXPECT_EQ(X509_check_ip_asc(c, "10.0.0.7", 0), 1);
  EXPECT_NE(enrolled->chain_pem.find("BEGIN CERTIFICATE"), std::string::npos);
  EXPECT_EQ(enrolled->settings.key_path, "/etc/pki/private");

  store::HostRecord host = *hosts_->Get("web-1.example.com");
  EXPECT_EQ(host.status, store::HostStatus::kActive);
  EXPECT_EQ(host.serial, enrolled->record.serial);
  EXPECT_EQ(host.not_after, enrolled->record.not_after);
  EXPECT_EQ(host.renew_at, enrolled->record.not_after - 30 * kDayMs);
  EXPECT_NEAR(static_cast<double>(enrolled->record.not_after - clock_.NowMillis()), 90.0 * kDayMs, kDayMs);

  auto again = agents_->Enroll("web-1.example.com", token, Csr("web-1.example.com"));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ErrorCode::kPermissionDenied) << "single use";
  auto audit = store_->Query("SELECT actor FROM audit_log WHERE action = 'host.enroll'");
  ASSERT_EQ(audit->size(), 1u);
  EXPECT_EQ(audit->at(0).Text(0), "host:web-1.example.com");
}

TEST_P(EnrollTest, RefusalsSpendNoTokenAndIssueNothing) {
  const std::string token = *hosts_->CreateToken("db-1", "t");
  const int64_t before = Certificates();
  auto other = agents_->Enroll("web-1.example.com", token, Csr("web-1.example.com"));
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().code, ErrorCode::kPermissionDenied) << "another host's token";
  EXPECT_EQ(agents_->Enroll("db-1", "made-up", Csr("db-1")).error().code, ErrorCode::kPermissionDenied);
  EXPECT_EQ(agents_->Enroll("db-1", token, "not a CSR").error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(agents_->Enroll("nope", token, Csr("nope")).error().code, ErrorCode::kNotFound);
  AgentService no_ca(*store_, *hosts_, *issuer_, clock_, AgentService::Options{"", 90});
  EXPECT_EQ(no_ca.Enroll("db-1", token, Csr("db-1")).error().code, ErrorCode::kFailedPrecondition);
  EXPECT_EQ(Certificates(), before);
  EXPECT_EQ(hosts_->Get("db-1")->status, store::HostStatus::kEnrolling);
  auto own = agents_->Enroll("db-1", token, Csr("db-1"));
  EXPECT_TRUE(own.ok()) << "the token still works for its host: " << own.error().message;

  const std::string late = *hosts_->CreateToken("web-1.example.com", "t");
  clock_.Advance(std::chrono::hours(2));
  EXPECT_EQ(agents_->Enroll("web-1.example.com", late, Csr("web-1.example.com")).error().code,
            ErrorCode::kPermissionDenied)
      << "expired";
}

TEST_P(EnrollTest, ARevokedHostsCertificateIsOnItsCasCrlAndTheHostIsNoLongerRenewed) {
  EXPECT_EQ(agents_->Revoke("db-1", "keyCompromise", "t").error().code, ErrorCode::kFailedPrecondition)
      << "no certificate yet";
  auto enrolled = agents_->Enroll("db-1", *hosts_->CreateToken("db-1", "t"), Csr("db-1"));
  ASSERT_TRUE(enrolled.ok()) << enrolled.error().message;
  auto revoked = agents_->Revoke("db-1", "keyCompromise", "token:ops");
  ASSERT_TRUE(revoked.ok()) << revoked.error().message;
  EXPECT_EQ(revoked->status, store::HostStatus::kRevoked);
  EXPECT_EQ(issuer_->Get(enrolled->record.serial)->status, store::CertStatus::kRevoked);
  auto crl_der = issuer_->Crl("hosts.example.com");
  ASSERT_TRUE(crl_der.ok());
  const auto* p = reinterpret_cast<const unsigned char*>(crl_der->data());
  pki::X509CrlPtr crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(crl_der->size())));
  ASSERT_NE(crl, nullptr);
  X509_REVOKED* entry = nullptr;
  EXPECT_EQ(X509_CRL_get0_by_serial(crl.get(), &entry,
                                    X509_get0_serialNumber(pki::CertificateFromPem(enrolled->certificate_pem)->get())),
            1)
      << "the serial is on the CRL";
  EXPECT_TRUE(agents_->Revoke("db-1", "keyCompromise", "token:ops").ok()) << "again: nothing more to do";
  auto due =
      store::Read(*store_, [&](store::Tx& tx) { return store::DueHosts(tx, clock_.NowMillis() + 400 * kDayMs, 10); });
  ASSERT_TRUE(due.ok());
  for (const auto& h : *due) EXPECT_NE(h.host_id, "db-1") << "a revoked host is not renewed";
  EXPECT_EQ(hosts_->CreateToken("db-1", "t").error().code, ErrorCode::kFailedPrecondition) << "no new enrollment";
}

TEST_P(EnrollTest, OnlyAHostsOwnCurrentCertificateAuthenticatesItsAgent) {
  auto enrolled =
      agents_->Enroll("web-1.example.com", *hosts_->CreateToken("web-1.example.com", "t"), Csr("web-1.example.com"));
  ASSERT_TRUE(enrolled.ok());
  auto host = agents_->Authenticate(enrolled->record.serial);
  ASSERT_TRUE(host.ok()) << host.error().message;
  EXPECT_EQ(host->host_id, "web-1.example.com");
  EXPECT_EQ(agents_->Authenticate("abcdef").error().code, ErrorCode::kPermissionDenied) << "unknown serial";

  // A W1 server certificate named like a host is not that host's agent.
  HostSpec spec;
  spec.host_id = "api.example.com";
  ASSERT_TRUE(hosts_->Create(spec, "t").ok());
  issuance::IssueRequest w1;
  w1.type = pki::CertType::kServer;
  w1.name = "api.example.com";
  w1.parent = "hosts.example.com";
  auto server = issuer_->Issue(w1, "token:ops");
  ASSERT_TRUE(server.ok()) << server.error().message;
  EXPECT_EQ(agents_->Authenticate(server->record.serial).error().code, ErrorCode::kPermissionDenied);

  ASSERT_TRUE(agents_->Revoke("web-1.example.com", "keyCompromise", "t").ok());
  EXPECT_EQ(agents_->Authenticate(enrolled->record.serial).error().code, ErrorCode::kPermissionDenied) << "revoked";
}

INSTANTIATE_TEST_SUITE_P(Drivers, EnrollTest, testing::kBothDialects, testing::DialectName);

}  // namespace
}  // namespace certfleet::renewal
