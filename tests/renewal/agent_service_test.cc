// W4 enrollment: an agent's first certificate for the key of its CSR, with the host's
// names, against a single-use token; every refusal leaves the token and the store as they were.
#include "renewal/agent_service.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <chrono>
#include <latch>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "pki/certificate.h"
#include "pki/csr.h"
#include "pki/key.h"
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
  // A CSR for another key than key_'s.
  std::string OtherCsr(const std::string& cn) {
    auto other = pki::GenerateKey(pki::KeyType::kEcP256);
    return *pki::MakeCsrPem(other->get(), cn, {});
  }
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

  auto other_key = agents_->Enroll("web-1.example.com", token, OtherCsr("web-1.example.com"));
  ASSERT_FALSE(other_key.ok());
  EXPECT_EQ(other_key.error().code, ErrorCode::kPermissionDenied) << "single use";
  // Its answer lost, the agent asks again for the key it kept: the same certificate, once.
  const int64_t issued = Certificates();
  auto again = agents_->Enroll("web-1.example.com", token, Csr("web-1.example.com"));
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again->record.serial, enrolled->record.serial);
  EXPECT_EQ(again->chain_pem, enrolled->chain_pem);
  EXPECT_EQ(Certificates(), issued);
  EXPECT_EQ(agents_->Enroll("web-1.example.com", "made-up", Csr("web-1.example.com")).error().code,
            ErrorCode::kPermissionDenied)
      << "only with the token it spent";
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
  const auto* p = reinterpret_cast<const unsigned char*>(crl_der->der.data());
  pki::X509CrlPtr crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(crl_der->der.size())));
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
  auto host = agents_->Authenticate(enrolled->record.serial, enrolled->record.fingerprint);
  ASSERT_TRUE(host.ok()) << host.error().message;
  EXPECT_EQ(host->host_id, "web-1.example.com");
  EXPECT_EQ(agents_->Authenticate("abcdef", enrolled->record.fingerprint).error().code, ErrorCode::kPermissionDenied)
      << "unknown serial";
  // Another certificate with the host's serial (from another CA the server trusts for clients).
  EXPECT_EQ(agents_->Authenticate(enrolled->record.serial, std::string(64, 'a')).error().code,
            ErrorCode::kPermissionDenied)
      << "the host's serial on another certificate";

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
  EXPECT_EQ(agents_->Authenticate(server->record.serial, server->record.fingerprint).error().code,
            ErrorCode::kPermissionDenied);

  ASSERT_TRUE(agents_->Revoke("web-1.example.com", "keyCompromise", "t").ok());
  EXPECT_EQ(agents_->Authenticate(enrolled->record.serial, enrolled->record.fingerprint).error().code,
            ErrorCode::kPermissionDenied)
      << "revoked";
}

TEST_P(EnrollTest, AFleetCredentialEnrollsNewMatchingHostsUpToItsUsesEachAudited) {
  CredentialSpec spec{{"web-*.example.com", "db-1"}, 3, std::chrono::hours(72)};
  auto minted = hosts_->CreateCredential(spec, "t");
  ASSERT_TRUE(minted.ok()) << minted.error().message;
  const std::string& secret = minted->secret;

  // Not registered: registered with the defaults by its first enrollment.
  auto fresh = agents_->Enroll("web-7.example.com", secret, Csr("web-7.example.com"));
  ASSERT_TRUE(fresh.ok()) << fresh.error().message;
  EXPECT_EQ(hosts_->Get("web-7.example.com")->status, store::HostStatus::kActive);
  // Registered and never enrolled: its own settings (SANs) are kept.
  auto registered = agents_->Enroll("web-1.example.com", secret, Csr("web-1.example.com"));
  ASSERT_TRUE(registered.ok()) << registered.error().message;
  auto cert = pki::CertificateFromPem(registered->certificate_pem);
  EXPECT_EQ(X509_check_host(cert->get(), "alt.example.com", 0, 0, nullptr), 1);

  // Refusals take no use and issue nothing.
  const int64_t before = Certificates();
  auto enrolled_before = agents_->Enroll("web-1.example.com", secret, OtherCsr("web-1.example.com"));
  ASSERT_FALSE(enrolled_before.ok());
  EXPECT_EQ(enrolled_before.error().code, ErrorCode::kFailedPrecondition) << "never takes over an enrolled host";
  auto asked_again = agents_->Enroll("web-1.example.com", secret, Csr("web-1.example.com"));
  ASSERT_TRUE(asked_again.ok()) << "its own key again: the answer it lost, " << asked_again.error().message;
  EXPECT_EQ(asked_again->record.serial, registered->record.serial);
  // The enrolled host's id in capitals is the same host name: not a new host to enroll.
  auto twin = agents_->Enroll("WEB-1.example.com", secret, Csr("WEB-1.example.com"));
  ASSERT_FALSE(twin.ok());
  EXPECT_EQ(twin.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(twin.error().message.find("must be lower case"), std::string::npos) << twin.error().message;
  auto other = agents_->Enroll("web-1.eu.example.com", secret, Csr("web-1.eu.example.com"));
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().code, ErrorCode::kPermissionDenied) << "'*' stays within a label";
  EXPECT_NE(other.error().message.find("is not for host web-1.eu.example.com"), std::string::npos)
      << other.error().message;
  EXPECT_EQ(agents_->Enroll("mail.example.com", secret, Csr("mail.example.com")).error().code,
            ErrorCode::kPermissionDenied);
  EXPECT_EQ(Certificates(), before);

  ASSERT_TRUE(agents_->Enroll("db-1", secret, Csr("db-1")).ok()) << "an exact id of its list";
  auto spent = agents_->Enroll("web-9.example.com", secret, Csr("web-9.example.com"));
  ASSERT_FALSE(spent.ok());
  EXPECT_EQ(spent.error().code, ErrorCode::kPermissionDenied);
  EXPECT_NE(spent.error().message.find("is spent: all 3 of its uses are taken"), std::string::npos)
      << spent.error().message;
  EXPECT_FALSE(hosts_->Get("web-9.example.com").ok()) << "a refused enrollment registers nothing";

  auto uses = store_->Query("SELECT actor, details FROM audit_log WHERE action = 'credential.use' ORDER BY seq");
  ASSERT_EQ(uses->size(), 3u);
  EXPECT_EQ(uses->at(0).Text(0), fmt::format("credential:{}", minted->credential.id));
  EXPECT_NE(uses->at(0).Text(1).find("\"host_id\":\"web-7.example.com\""), std::string::npos) << uses->at(0).Text(1);
  EXPECT_NE(uses->at(2).Text(1).find("\"host_id\":\"db-1\""), std::string::npos);
  EXPECT_EQ(hosts_->ListCredentials(std::nullopt, 10)->at(0).used, 3);
}

TEST_P(EnrollTest, AnExpiredOrRevokedCredentialIsRefusedSayingSo) {
  auto a = hosts_->CreateCredential({{"web-*.example.com"}, 10, std::chrono::hours(1)}, "t");
  auto b = hosts_->CreateCredential({{"web-*.example.com"}, 10, std::chrono::hours(5)}, "t");
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(hosts_->RevokeCredential(b->credential.id, "t").ok());
  auto revoked = agents_->Enroll("web-2.example.com", b->secret, Csr("web-2.example.com"));
  ASSERT_FALSE(revoked.ok());
  EXPECT_NE(revoked.error().message.find("was revoked"), std::string::npos) << revoked.error().message;
  clock_.Advance(std::chrono::hours(2));
  auto expired = agents_->Enroll("web-2.example.com", a->secret, Csr("web-2.example.com"));
  ASSERT_FALSE(expired.ok());
  EXPECT_EQ(expired.error().code, ErrorCode::kPermissionDenied);
  EXPECT_NE(expired.error().message.find("expired at"), std::string::npos) << expired.error().message;
  EXPECT_EQ(hosts_->RevokeCredential(999, "t").error().code, ErrorCode::kNotFound);
}

TEST_P(EnrollTest, CredentialsAreCheckedWhenMinted) {
  auto code = [&](CredentialSpec spec) -> std::optional<ErrorCode> {
    auto r = hosts_->CreateCredential(spec, "t");
    if (r.ok()) return std::nullopt;
    return r.error().code;
  };
  const auto day = std::chrono::hours(24);
  EXPECT_EQ(code({{"*.example.*"}, 1, day}), ErrorCode::kInvalidArgument) << "the last label has no '*'";
  EXPECT_EQ(code({{"*"}, 1, day}), ErrorCode::kInvalidArgument) << "never every host";
  EXPECT_EQ(code({{"web_1.example.com"}, 1, day}), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code({{}, 1, day}), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code({{"db-1"}, 0, day}), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code({{"db-1"}, 1, std::chrono::hours(24 * 31)}), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code({{"db-1", "web-*.example.com"}, 1, day}), std::nullopt);
}

TEST(HostPattern, StarMatchesWithinOneLabelCaseInsensitively) {
  EXPECT_TRUE(MatchesHostPattern("web-*.example.com", "web-01.example.com"));
  EXPECT_TRUE(MatchesHostPattern("web-*.example.com", "WEB-01.Example.com"));
  EXPECT_TRUE(MatchesHostPattern("web-*.example.com", "web-.example.com"));
  EXPECT_TRUE(MatchesHostPattern("*-db-*.example.com", "eu-db-7.example.com"));
  EXPECT_TRUE(MatchesHostPattern("*.*.example.com", "a.b.example.com"));
  EXPECT_FALSE(MatchesHostPattern("web-*.example.com", "web-01.eu.example.com"));
  EXPECT_FALSE(MatchesHostPattern("web-*.example.com", "api-01.example.com"));
  EXPECT_FALSE(MatchesHostPattern("web-*.example.com", "web-01.example.com.evil.net"));
  EXPECT_FALSE(MatchesHostPattern("db-1", "db-10"));
}

INSTANTIATE_TEST_SUITE_P(Drivers, EnrollTest, testing::kBothDialects, testing::DialectName);

// Two first enrollments of one host at once, on two nodes of one PostgreSQL (the second
// node: agents2_ over an issuer of its own), each with a fleet credential of its own (each
// use of one credential waits for the one before).
class EnrollRaceTest : public EnrollTest {
 protected:
  void SetUp() override {
    EnrollTest::SetUp();
    for (int i = 0; i < 2; ++i) {
      auto minted = hosts_->CreateCredential({{"web-*.example.com"}, 10, std::chrono::hours(72)}, "t");
      ASSERT_TRUE(minted.ok()) << minted.error().message;
      secrets_.push_back(minted->secret);
    }
    issuer2_ =
        std::make_unique<issuance::Issuer>(*store_, *keys_, clock_, issuance::Issuer::Options{"https://ca.test"});
    hosts2_ = std::make_unique<HostService>(*store_, clock_, HostService::Options{});
    agents2_ = std::make_unique<AgentService>(*store_, *hosts2_, *issuer2_, clock_,
                                              AgentService::Options{"hosts.example.com", 90});
  }

  // A transaction of its own that runs `sql`, taking a lock, and holds it until `release`:
  // started once the lock is held (or the transaction failed). `runs` counts its runs; more
  // than one, it was run again and the lock let go meanwhile.
  std::thread Hold(std::string sql, std::latch& release, int& runs) {
    auto held = std::make_shared<std::latch>(1);
    std::thread holder([this, sql = std::move(sql), held, &release, &runs] {
      Result<void> r = store_->Transact([&](store::Tx& tx) -> Result<void> {
        CF_RETURN_IF_ERROR(tx.Exec(fmt::format("SET LOCAL lock_timeout = {}", kPatience.count() * 1000)));
        CF_RETURN_IF_ERROR(tx.Query(sql));
        if (++runs == 1) held->count_down();
        release.wait();
        return certfleet::Ok();
      });
      EXPECT_TRUE(r.ok()) << sql << ": " << r.error().message;
      if (runs == 0) held->count_down();  // failed before it held the lock: the waits tell
    });
    held->wait();
    return holder;
  }

  // Until `done()`; false after kPatience.
  static bool Until(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + kPatience;
    while (!done()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(kPoll);
    }
    return true;
  }

  // Until a backend of this database waits for a lock of the kind `wait_events` names (a
  // row: "'transactionid', 'tuple'"; an advisory lock: "'advisory'"; a table: "'relation'");
  // false if an enrollment ended first, or after kPatience.
  bool LockWaiter(std::string_view wait_events) {
    const std::string sql = fmt::format(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
        "AND wait_event IN ({})",
        wait_events);
    bool waiting = false;
    Until([&] {
      auto rows = store_->Query(sql);
      waiting = rows.ok() && rows->at(0).Int(0) >= 1;
      return waiting || ended_ > 0;
    });
    return waiting;
  }

  // Enrollment `i` of web-1 in a thread, with secrets_[i] and a key of its own: 0 on this
  // node, 1 on the second.
  std::thread Enroll(int i) {
    return std::thread([this, i] {
      results_[i] =
          (i == 0 ? agents_ : agents2_)->Enroll("web-1.example.com", secrets_[i], OtherCsr("web-1.example.com"));
      ++ended_;
    });
  }

  // The host's row held by another transaction until `release` (the holder returned), and
  // the first enrollment started: it waits with its write of the host, after it looked at it.
  std::thread HoldTheHostForTheFirst(std::latch& release, int& runs, std::thread& first) {
    std::thread holder =
        Hold("SELECT host_id FROM hosts WHERE host_id = 'web-1.example.com' FOR UPDATE", release, runs);
    first = Enroll(0);
    EXPECT_TRUE(LockWaiter("'transactionid', 'tuple'"))
        << "the first enrollment waits for the host's row (" << ended_ << " ended)";
    return holder;
  }

  // The first waits with its write of the host, the second for the host's lock.
  void EnrollTheSecondWaitingForTheLock() {
    std::latch release(1);
    int holder_runs = 0;
    std::thread first;
    std::thread holder = HoldTheHostForTheFirst(release, holder_runs, first);
    std::thread second = Enroll(1);
    EXPECT_TRUE(LockWaiter("'advisory'")) << "the second enrollment waits for the host's lock (" << ended_ << " ended)";
    release.count_down();
    holder.join();
    first.join();
    second.join();
    EXPECT_EQ(holder_runs, 1) << "the transaction holding the host's row ran again";
    ExpectOneEnrolled();
  }

  // The first enrolled; the second refused, saying the host is enrolled; one certificate.
  void ExpectOneEnrolled() {
    EXPECT_TRUE(results_[0].ok()) << results_[0].error().message;
    ASSERT_FALSE(results_[1].ok()) << "a second certificate, " << results_[1]->record.serial
                                   << ", the host would not know";
    EXPECT_EQ(results_[1].error().code, ErrorCode::kFailedPrecondition) << results_[1].error().message;
    EXPECT_NE(results_[1].error().message.find("enrolls a host once"), std::string::npos)
        << results_[1].error().message;
    EXPECT_EQ(Certificates(), 1);
  }

  std::vector<std::string> secrets_;
  std::unique_ptr<issuance::Issuer> issuer2_;
  std::unique_ptr<HostService> hosts2_;
  std::unique_ptr<AgentService> agents2_;
  std::vector<Result<Enrolled>> results_ = std::vector<Result<Enrolled>>(2, Error{});
  std::atomic<int> ended_{0};  // enrollments ended

  static constexpr std::chrono::seconds kPatience{60};  // for a wait on a loaded machine
  static constexpr std::chrono::milliseconds kPoll{2};
};

// EXPECT, not ASSERT, below: the threads are released and joined whatever happens.

TEST_P(EnrollRaceTest, FirstEnrollmentsOfOneHostAtOnceIssueOneCertificate) { EnrollTheSecondWaitingForTheLock(); }

// Both with the last use of one credential: the one that waited hears that the host is
// enrolled, not that the credential was spent meanwhile.
TEST_P(EnrollRaceTest, TwoAtOnceWithTheLastUseOfOneCredential) {
  auto minted = hosts_->CreateCredential({{"web-*.example.com"}, 1, std::chrono::hours(72)}, "t");
  ASSERT_TRUE(minted.ok()) << minted.error().message;
  secrets_ = {minted->secret, minted->secret};
  EnrollTheSecondWaitingForTheLock();
}

// The other order: the second enrollment looks at the host before the first commits, and its
// transaction begins after. The issuer's one active certificate for the name refuses it; the
// answer is the same as the host's lock gives.
TEST_P(EnrollRaceTest, OneThatLookedBeforeTheOtherCommittedIsRefusedAsOneThatWaited) {
  std::latch release_row(1);
  int row_runs = 0;
  std::thread first;
  std::thread row_holder = HoldTheHostForTheFirst(release_row, row_runs, first);
  // The settings locked: the second enrollment looks at the host, then waits to read which CA
  // issues host certificates, before anything is signed.
  std::latch release_settings(1);
  int settings_runs = 0;
  std::thread settings_holder = Hold("LOCK TABLE settings IN ACCESS EXCLUSIVE MODE", release_settings, settings_runs);
  std::thread second = Enroll(1);
  EXPECT_TRUE(LockWaiter("'relation'")) << "the second enrollment waits for the settings (" << ended_ << " ended)";
  release_row.count_down();
  row_holder.join();
  EXPECT_TRUE(Until([&] { return ended_ > 0; })) << "the first enrollment ends while the settings are locked";
  release_settings.count_down();
  settings_holder.join();
  first.join();
  second.join();
  EXPECT_EQ(row_runs, 1) << "the transaction holding the host's row ran again";
  EXPECT_EQ(settings_runs, 1) << "the transaction holding the settings ran again";
  ExpectOneEnrolled();
}

INSTANTIATE_TEST_SUITE_P(Drivers, EnrollRaceTest, ::testing::Values(store::Dialect::kPostgres), testing::DialectName);

}  // namespace
}  // namespace certfleet::renewal
