// W4's renewal workflow: runs queue renewals, at most `concurrency` work at once, an agent
// advances its renewal, deadlines and failures retry with backoff and then fail for good
// (host marked, mail and event), the replaced certificate is revoked after the grace, and a
// new service over the same store (a restart) carries on. On both stores.
#include "renewal/renewal_service.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <sstream>
#include <thread>

#include "core/crypto.h"
#include "pki/csr.h"
#include "renewal/fixture.h"
#include "store/certificates_repo.h"
#include "store/hosts_repo.h"
#include "store/jobs_repo.h"

namespace certfleet::renewal {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int64_t kDayMs = int64_t{24} * 3600 * 1000;

class RenewalTest : public HostsFixture {
 protected:
  void SetUp() override {
    HostsFixture::SetUp();
    mail_dir_ = testing::TempDir() + "/mail";
    mailer_ = std::move(mail::OpenMailer("file://" + mail_dir_, clock_)).value();
    options_.concurrency = 2;
    options_.deadline = seconds(60);
    options_.max_attempts = 2;
    options_.backoff = seconds(30);
    options_.grace = std::chrono::hours(24);
    options_.notify = {"ops@example.com"};
    Restart();
  }

  // A new service over the same store, as after a crash or restart.
  void Restart() {
    renewals_.reset();
    renewals_ = std::make_unique<RenewalService>(*store_, *hosts_, *agents_, mailer_.get(), clock_, options_);
  }

  // Registers and enrolls hosts h1..hN; their certificates are due in 60 days.
  void Enroll(int n) {
    for (int i = 1; i <= n; ++i) {
      HostSpec spec;
      spec.host_id = "h" + std::to_string(i);
      ASSERT_TRUE(hosts_->Create(spec, "t").ok());
      auto token = hosts_->CreateToken(spec.host_id, "t");
      ASSERT_TRUE(agents_->Enroll(spec.host_id, *token, Csr(spec.host_id)).ok());
    }
  }
  std::string Csr(const std::string& cn) { return *pki::MakeCsrPem(key_.get(), cn, {}); }
  store::HostRecord Host(const std::string& id) { return std::move(hosts_->Get(id)).value(); }
  store::RenewalRecord Renewal(int64_t id) { return std::move(renewals_->Get(id)).value(); }
  std::vector<store::RenewalRecord> InState(store::RenewalState state) {
    store::RenewalFilter f;
    f.state = state;
    return std::move(renewals_->List(f)).value();
  }
  int64_t Count(const std::string& sql) { return store_->Query(sql)->at(0).Int(0); }
  // Jobs that revoke `serial` as superseded, in `state` if one is named.
  int64_t RevocationJobs(const std::string& serial, const std::string& state = "") {
    return Count("SELECT COUNT(*) FROM jobs WHERE kind = 'ca.revoke_superseded' AND payload LIKE '%" + serial + "%'" +
                 (state.empty() ? "" : " AND state = '" + state + "'"));
  }
  // The mails written so far, whole.
  std::vector<std::string> Mails() {
    std::vector<std::string> out;
    for (const auto& f : std::filesystem::directory_iterator(mail_dir_)) {
      std::ifstream in(f.path());
      std::stringstream text;
      text << in.rdbuf();
      out.push_back(text.str());
    }
    return out;
  }
  // The agent's part of a renewal, up to validated.
  void Complete(const store::RenewalRecord& r) {
    const store::HostRecord host = Host(r.host_id);
    ASSERT_TRUE(renewals_->SubmitCsr(host, r.id, Csr(r.host_id)).ok());
    ASSERT_TRUE(renewals_->Report(host, r.id, store::RenewalState::kDeployed, "", "").ok());
    auto done = renewals_->Report(host, r.id, store::RenewalState::kValidated, "", "");
    ASSERT_TRUE(done.ok()) << done.error().message;
  }
  RunScope All() {
    RunScope s;
    s.all = true;
    return s;
  }

  std::string mail_dir_;
  std::unique_ptr<mail::Mailer> mailer_;
  RenewalService::Options options_;
  std::unique_ptr<RenewalService> renewals_;
};

TEST_P(RenewalTest, AtMostConcurrencyRenewalsWorkAndEachSuccessUpdatesTheHost) {
  Enroll(3);
  const store::HostRecord before = Host("h1");
  const store::HostRecord before2 = Host("h2");
  auto run = renewals_->StartRun(All(), "manual", "t");
  ASSERT_TRUE(run.ok()) << run.error().message;
  EXPECT_EQ(run->queued, 3);
  EXPECT_EQ(*renewals_->Pump(), 2);
  EXPECT_EQ(InState(store::RenewalState::kAwaitingCsr).size(), 2u);
  EXPECT_EQ(*renewals_->Pump(), 0) << "no slot is free";

  // A second run finds every host with its renewal open: nothing queued twice.
  EXPECT_EQ(renewals_->StartRun(All(), "manual", "t")->queued, 0);

  auto working = InState(store::RenewalState::kAwaitingCsr);
  auto task = renewals_->TaskFor(working.back().host_id);
  ASSERT_TRUE(task.ok() && task->has_value());
  EXPECT_EQ((*task)->renewal_id, working.back().id);
  EXPECT_EQ((*task)->settings.key_path, "/etc/pki/private");
  for (const auto& r : working) Complete(r);
  EXPECT_EQ(*renewals_->Pump(), 1) << "the third starts once slots free";

  const store::RenewalRecord done = Renewal(working.front().id);
  EXPECT_EQ(done.state, store::RenewalState::kValidated);
  const store::HostRecord after = Host(done.host_id);
  EXPECT_EQ(after.serial, done.serial);
  EXPECT_NE(after.serial, done.host_id == "h1" ? before.serial : before2.serial);
  EXPECT_EQ(after.renew_at, *after.not_after - 30 * kDayMs) << "expiry minus the threshold";
  EXPECT_EQ(after.last_run, done.id);
  auto runs = renewals_->Runs(std::nullopt, 10);
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 2u);
  EXPECT_EQ(runs->back().run.total, 3);
}

TEST_P(RenewalTest, TheReplacedCertificateIsRevokedAfterTheGrace) {
  Enroll(1);
  const std::string old_serial = *Host("h1").serial;
  ASSERT_TRUE(renewals_->StartRun(All(), "manual", "t").ok());
  ASSERT_EQ(*renewals_->Pump(), 1);
  const auto r = InState(store::RenewalState::kAwaitingCsr).front();
  Complete(r);
  EXPECT_EQ(Renewal(r.id).old_serial, old_serial);
  auto job = store::Write(*store_, [&](store::Tx& tx) {
    return store::LeaseJob(tx, {std::string(issuance::kRevokeSupersededJob)}, "w", clock_.NowMillis(), 1000);
  });
  ASSERT_TRUE(job.ok());
  EXPECT_FALSE(job->has_value()) << "not before the grace ends";
  clock_.Advance(milliseconds(kDayMs));
  job = store::Write(*store_, [&](store::Tx& tx) {
    return store::LeaseJob(tx, {std::string(issuance::kRevokeSupersededJob)}, "w", clock_.NowMillis(), 1000);
  });
  ASSERT_TRUE(job.ok() && job->has_value());
  EXPECT_NE((*job)->payload.find(old_serial), std::string::npos);
  ASSERT_TRUE(issuer_->Revoke(old_serial, "superseded", false, "certfleet").ok());
  EXPECT_EQ(issuer_->Get(old_serial)->status, store::CertStatus::kRevoked);
  EXPECT_EQ(issuer_->Get(*Host("h1").serial)->status, store::CertStatus::kActive);
}

TEST_P(RenewalTest, AMissedDeadlineIsRetriedWithBackoffThenFailsAndTellsPeople) {
  Enroll(1);
  ASSERT_TRUE(renewals_->StartRun(All(), "manual", "t").ok());
  ASSERT_EQ(*renewals_->Pump(), 1);
  const int64_t id = InState(store::RenewalState::kAwaitingCsr).front().id;

  clock_.Advance(seconds(61));
  EXPECT_EQ(*renewals_->Pump(), 0) << "timed out, then waits for its backoff";
  store::RenewalRecord r = Renewal(id);
  EXPECT_EQ(r.state, store::RenewalState::kQueued);
  EXPECT_EQ(r.due_at, clock_.NowMillis() + 30'000);
  clock_.Advance(seconds(30));
  EXPECT_EQ(*renewals_->Pump(), 1) << "the second attempt";
  EXPECT_EQ(Renewal(id).attempt, 2);

  // The agent got its certificate but never reported: the attempt fails at its deadline.
  ASSERT_TRUE(renewals_->SubmitCsr(Host("h1"), id, Csr("h1")).ok());
  const std::string unused = *Renewal(id).serial;
  clock_.Advance(seconds(61));
  EXPECT_EQ(*renewals_->Pump(), 0);
  r = Renewal(id);
  EXPECT_EQ(r.state, store::RenewalState::kFailed);
  EXPECT_EQ(r.failed_step, "deploy");
  EXPECT_NE(r.error->find("deadline"), std::string::npos);
  EXPECT_TRUE(r.finished_at.has_value());
  const store::HostRecord host = Host("h1");
  EXPECT_EQ(host.status, store::HostStatus::kFailed);
  EXPECT_EQ(host.last_error, "deploy: " + *r.error);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM events WHERE type = 'renewal/failed'"), 1);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM audit_log WHERE action = 'renewal.fail'"), 1);
  EXPECT_EQ(RevocationJobs(unused), 1) << "the certificate of the failed attempt is revoked after the grace";

  ASSERT_TRUE(renewals_->NotifyFailure(id).ok());
  const std::vector<std::string> mails = Mails();
  ASSERT_EQ(mails.size(), 1u);
  EXPECT_NE(mails[0].find("Subject: certfleet: renewal of h1 failed at step deploy"), std::string::npos) << mails[0];
  EXPECT_NE(mails[0].find("To: ops@example.com"), std::string::npos);
}

TEST_P(RenewalTest, AnAgentsFailureIsRetriedAndItsStepKept) {
  Enroll(1);
  ASSERT_TRUE(renewals_->StartRun(All(), "manual", "t").ok());
  ASSERT_EQ(*renewals_->Pump(), 1);
  const int64_t id = InState(store::RenewalState::kAwaitingCsr).front().id;
  const store::HostRecord host = Host("h1");
  EXPECT_EQ(renewals_->Report(host, id, store::RenewalState::kFailed, "dance", "x").error().code,
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(renewals_->Report(host, id, store::RenewalState::kValidated, "", "").error().code,
            ErrorCode::kFailedPrecondition)
      << "nothing was issued yet";
  auto r = renewals_->Report(host, id, store::RenewalState::kFailed, "key", std::string(5000, 'e'));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->state, store::RenewalState::kQueued);
  EXPECT_NE(r->history.find("\"step\":\"key\""), std::string::npos);
  EXPECT_EQ(r->history.find(std::string(RenewalService::kMaxError + 1, 'e')), std::string::npos) << "errors are cut";
  EXPECT_EQ(Host("h1").status, store::HostStatus::kActive) << "a retry is coming";
}

TEST_P(RenewalTest, AgentsActOnlyOnTheirOwnRenewalsAndBeforeTheDeadline) {
  Enroll(2);
  ASSERT_TRUE(renewals_->StartRun(All(), "manual", "t").ok());
  ASSERT_EQ(*renewals_->Pump(), 2);
  const auto r = InState(store::RenewalState::kAwaitingCsr).front();
  const std::string other = r.host_id == "h1" ? "h2" : "h1";
  EXPECT_EQ(renewals_->SubmitCsr(Host(other), r.id, Csr(other)).error().code, ErrorCode::kNotFound);
  EXPECT_EQ(renewals_->Report(Host(other), r.id, store::RenewalState::kDeployed, "", "").error().code,
            ErrorCode::kNotFound);
  clock_.Advance(seconds(61));
  EXPECT_EQ(renewals_->SubmitCsr(Host(r.host_id), r.id, Csr(r.host_id)).error().code, ErrorCode::kFailedPrecondition);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM certificates WHERE fqdn = '" + r.host_id + "'"), 1)
      << "nothing issued after the deadline";
}

TEST_P(RenewalTest, TheSameCsrSentAgainGetsTheCertificateIssuedForItNotASecondOne) {
  Enroll(1);
  ASSERT_TRUE(renewals_->StartRun(All(), "manual", "t").ok());
  ASSERT_EQ(*renewals_->Pump(), 1);
  const auto r = InState(store::RenewalState::kAwaitingCsr).front();
  const std::string csr = Csr(r.host_id);
  auto first = renewals_->SubmitCsr(Host(r.host_id), r.id, csr);
  ASSERT_TRUE(first.ok()) << first.error().message;
  const int64_t issued = Count("SELECT COUNT(*) FROM certificates WHERE fqdn = '" + r.host_id + "'");
  // The answer was lost (the node stopped): the agent sends its CSR again, to any node.
  auto again = renewals_->SubmitCsr(Host(r.host_id), r.id, csr);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again->record.serial, first->record.serial);
  EXPECT_EQ(again->certificate_pem, first->certificate_pem);
  EXPECT_EQ(again->chain_pem, first->chain_pem);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM certificates WHERE fqdn = '" + r.host_id + "'"), issued)
      << "no second certificate for one attempt";
  // Another key's CSR for the same attempt is refused.
  pki::PkeyPtr other = std::move(pki::GenerateKey(pki::KeyType::kEcP256)).value();
  EXPECT_EQ(renewals_->SubmitCsr(Host(r.host_id), r.id, *pki::MakeCsrPem(other.get(), r.host_id, {})).error().code,
            ErrorCode::kFailedPrecondition);
  EXPECT_EQ(Renewal(r.id).state, store::RenewalState::kIssued);
}

TEST_P(RenewalTest, AScheduledRunTakesTheDueHostsAndFailsThoseNeverEnrolled) {
  Enroll(2);
  HostSpec spec;
  spec.host_id = "new-host";
  ASSERT_TRUE(hosts_->Create(spec, "t").ok());
  auto run = renewals_->StartRun({}, "schedule", "certfleet");
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->queued, 1) << "only the host without a certificate is due now";
  EXPECT_EQ(*renewals_->Pump(), 0);
  auto failed = InState(store::RenewalState::kFailed);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].host_id, "new-host");
  EXPECT_EQ(failed[0].failed_step, "enroll");
  EXPECT_EQ(failed[0].attempt, failed[0].max_attempts) << "retrying cannot help";

  clock_.Advance(milliseconds(61 * kDayMs));  // the enrolled hosts' renewal dates passed
  EXPECT_EQ(renewals_->StartRun({}, "schedule", "certfleet")->queued, 3);
  RunScope unknown;
  unknown.hosts = {"h1", "ghost"};
  EXPECT_EQ(renewals_->StartRun(unknown, "manual", "t").error().code, ErrorCode::kInvalidArgument);
}

TEST_P(RenewalTest, ARestartLosesNoRenewal) {
  Enroll(3);
  ASSERT_TRUE(renewals_->StartRun(All(), "manual", "t").ok());
  ASSERT_EQ(*renewals_->Pump(), 2);
  const auto working = InState(store::RenewalState::kAwaitingCsr);
  ASSERT_TRUE(renewals_->SubmitCsr(Host(working[0].host_id), working[0].id, Csr(working[0].host_id)).ok());
  Restart();
  // The issued one goes on; the other, whose agent is gone, times out and is retried; the
  // queued one starts when a slot frees.
  ASSERT_TRUE(renewals_->Report(Host(working[0].host_id), working[0].id, store::RenewalState::kValidated, "", "").ok());
  clock_.Advance(seconds(40));
  EXPECT_EQ(*renewals_->Pump(), 1);
  clock_.Advance(seconds(21));
  EXPECT_EQ(*renewals_->Pump(), 0) << "the one whose agent is gone timed out";
  clock_.Advance(seconds(30));
  EXPECT_EQ(*renewals_->Pump(), 1);
  EXPECT_EQ(Renewal(working[1].id).attempt, 2);
  EXPECT_EQ(InState(store::RenewalState::kAwaitingCsr).size(), 2u);
}

TEST_P(RenewalTest, AWaitingAgentHearsOfItsTaskAtOnce) {
  Enroll(1);
  options_.tick = milliseconds(3'600'000);  // only a local start can answer within the test
  Restart();
  renewals_->Start();
  std::promise<bool> answer;
  renewals_->WaitForTask("h1", 3'600'000, [&](bool has) { answer.set_value(has); });
  ASSERT_TRUE(renewals_->StartRun(All(), "manual", "t").ok());
  auto heard = answer.get_future();
  ASSERT_EQ(heard.wait_for(seconds(60)), std::future_status::ready) << "answered without the clock moving";
  EXPECT_TRUE(heard.get());
  std::atomic<int> stopped{-1};
  renewals_->WaitForTask("h1", 3'600'000, [&](bool has) { stopped = has ? 1 : 0; });
  renewals_->Stop();
  EXPECT_EQ(stopped, 0) << "stopping answers every waiting agent";
}

TEST_P(RenewalTest, AnOperatorChangesAHostAndTheRenewalDateFollows) {
  Enroll(1);
  const store::HostRecord before = Host("h1");
  constexpr int64_t kDay = kDayMs;
  auto change = [](const std::function<void(HostSpec&)>& edit) {
    return [edit](const HostSpec& current) -> Result<HostSpec> {
      HostSpec next = current;
      edit(next);
      return next;
    };
  };
  auto changed = hosts_->Update("h1", change([](HostSpec& s) {
                                  s.renewal_threshold_days = 10;
                                  s.sans = {"h1.example.com", "10.0.0.9"};
                                  s.key_type = "rsa-2048";
                                  s.reload_command = "systemctl reload nginx";
                                }),
                                "token:ops");
  ASSERT_TRUE(changed.ok()) << changed.error().message;
  EXPECT_EQ(changed->renew_at, *before.not_after - 10 * kDay) << "the renewal date moves with the threshold";
  HostSettings settings = hosts_->SettingsOf(Host("h1"));
  EXPECT_EQ(settings.key_type, "rsa-2048");
  EXPECT_EQ(settings.sans, (std::vector<std::string>{"h1.example.com", "10.0.0.9"}));
  ASSERT_TRUE(hosts_->Update("h1", change([](HostSpec& s) { s.key_type.reset(); }), "t").ok());
  EXPECT_EQ(hosts_->SettingsOf(Host("h1")).key_type, "ec-p256") << "unset: the default again";

  auto bad = hosts_->Update("h1", change([](HostSpec& s) { s.cert_path = "../etc"; }), "t");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
  auto renamed = hosts_->Update("h1", change([](HostSpec& s) { s.host_id = "h9"; }), "t");
  ASSERT_FALSE(renamed.ok());
  EXPECT_EQ(renamed.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(hosts_->Update("nope", change([](HostSpec&) {}), "t").error().code, ErrorCode::kNotFound);
  EXPECT_EQ(Host("h1").cert_path, std::nullopt) << "a refused change wrote nothing";
  EXPECT_EQ(Count("SELECT COUNT(*) FROM audit_log WHERE action = 'host.update'"), 2);
}

TEST_P(RenewalTest, ADeletedHostsCertificateIsRevokedAndItsHistoryStays) {
  Enroll(2);
  const store::HostRecord h1 = Host("h1");
  const store::HostRecord h2 = Host("h2");
  ASSERT_TRUE(renewals_->StartRun(All(), "manual", "t").ok());
  ASSERT_EQ(*renewals_->Pump(), 2);
  const auto open = InState(store::RenewalState::kAwaitingCsr);

  ASSERT_TRUE(renewals_->DeleteHost("h2", /*revoke=*/true, "token:ops").ok());
  EXPECT_EQ(hosts_->Get("h2").error().code, ErrorCode::kNotFound);
  EXPECT_EQ(issuer_->Get(*h2.serial)->status, store::CertStatus::kRevoked);
  for (const auto& r : open) {
    if (r.host_id != "h2") continue;
    const store::RenewalRecord closed = Renewal(r.id);
    EXPECT_EQ(closed.state, store::RenewalState::kFailed) << "kept, as history";
    EXPECT_EQ(closed.error, "the host was deleted");
  }
  EXPECT_EQ(renewals_->DeleteHost("h2", true, "t").error().code, ErrorCode::kNotFound);
  HostSpec again;
  again.host_id = "h2";
  EXPECT_TRUE(hosts_->Create(again, "t").ok()) << "its id may be registered again";

  ASSERT_TRUE(renewals_->DeleteHost("h1", /*revoke=*/false, "t").ok());
  EXPECT_EQ(issuer_->Get(*h1.serial)->status, store::CertStatus::kActive) << "told not to revoke";
  EXPECT_EQ(Count("SELECT COUNT(*) FROM audit_log WHERE action = 'host.delete'"), 2);
  // The deleted host's agent does not speak for a host registered later with its id.
  const std::string fingerprint = issuer_->Get(*h1.serial)->fingerprint;
  clock_.Advance(seconds(1));
  HostSpec h1_again;
  h1_again.host_id = "h1";
  ASSERT_TRUE(hosts_->Create(h1_again, "t").ok());
  EXPECT_EQ(renewals_->AuthenticateAgent(*h1.serial, fingerprint).error().code, ErrorCode::kPermissionDenied);
}

// An agent that swapped in its new certificate is seen using it: that validates the renewal
// even when its report never comes, and after the attempt ended the host keeps the
// certificate instead of having it revoked under the agent.
TEST_P(RenewalTest, TheCertificateAnAgentIsSeenUsingIsTheHostsEvenWhenItsReportWasLost) {
  options_.max_attempts = 1;
  Restart();
  Enroll(2);
  const std::string old1 = *Host("h1").serial;
  const std::string old2 = *Host("h2").serial;
  clock_.Advance(seconds(1));  // the renewals' certificates are newer than the enrollments'
  ASSERT_TRUE(renewals_->StartRun(All(), "manual", "t").ok());
  ASSERT_EQ(*renewals_->Pump(), 2);
  std::map<std::string, store::RenewalRecord> open;
  for (const auto& r : InState(store::RenewalState::kAwaitingCsr)) open[r.host_id] = r;
  std::map<std::string, std::string> serial, fingerprint;
  for (const auto& [host, r] : open) {
    auto issued = renewals_->SubmitCsr(Host(host), r.id, Csr(host));
    ASSERT_TRUE(issued.ok()) << issued.error().message;
    serial[host] = issued->record.serial;
    fingerprint[host] = issued->record.fingerprint;
    ASSERT_TRUE(renewals_->Report(Host(host), r.id, store::RenewalState::kDeployed, "", "").ok());
  }
  auto waiting_revocation = [&](const std::string& s) { return RevocationJobs(s, "queued"); };

  // h1's agent polls with its new certificate before its report: validated now.
  auto h1 = renewals_->AuthenticateAgent(serial["h1"], fingerprint["h1"]);
  ASSERT_TRUE(h1.ok()) << h1.error().message;
  EXPECT_EQ(h1->serial, serial["h1"]);
  EXPECT_EQ(Renewal(open["h1"].id).state, store::RenewalState::kValidated);
  EXPECT_EQ(Renewal(open["h1"].id).old_serial, old1);
  EXPECT_EQ(waiting_revocation(old1), 1);
  auto report = renewals_->Report(*h1, open["h1"].id, store::RenewalState::kValidated, "", "");
  ASSERT_TRUE(report.ok()) << "its report, when it comes, is taken";
  EXPECT_EQ(Count("SELECT COUNT(*) FROM audit_log WHERE action = 'renewal.validate'"), 1);

  // h2's agent's report is lost and its only attempt times out: its certificate, in use,
  // would be revoked after the grace.
  clock_.Advance(seconds(61));
  ASSERT_EQ(*renewals_->Pump(), 0);
  EXPECT_EQ(Renewal(open["h2"].id).state, store::RenewalState::kFailed);
  EXPECT_EQ(Host("h2").status, store::HostStatus::kFailed);
  EXPECT_EQ(waiting_revocation(serial["h2"]), 1);
  // Its old certificate still authenticates and changes nothing.
  auto old = renewals_->AuthenticateAgent(old2, issuer_->Get(old2)->fingerprint);
  ASSERT_TRUE(old.ok()) << old.error().message;
  EXPECT_EQ(old->serial, old2);
  // Seen with the new one, the host takes it.
  auto h2 = renewals_->AuthenticateAgent(serial["h2"], fingerprint["h2"]);
  ASSERT_TRUE(h2.ok()) << h2.error().message;
  EXPECT_EQ(h2->serial, serial["h2"]);
  EXPECT_EQ(h2->status, store::HostStatus::kActive);
  EXPECT_EQ(Host("h2").serial, serial["h2"]);
  EXPECT_EQ(waiting_revocation(serial["h2"]), 0) << "its revocation is taken back";
  EXPECT_EQ(waiting_revocation(old2), 1) << "the replaced one goes after the grace";
  EXPECT_EQ(Count("SELECT COUNT(*) FROM audit_log WHERE action = 'renewal.adopt'"), 1);
  ASSERT_TRUE(renewals_->AuthenticateAgent(serial["h2"], fingerprint["h2"]).ok());
  EXPECT_EQ(Count("SELECT COUNT(*) FROM audit_log WHERE action = 'renewal.adopt'"), 1) << "once";
}

// The certificate of an attempt that timed out, seen in use while its renewal waits for a
// retry: the renewal ends validated with it. Seen once the host was revoked and reactivated:
// nothing changes, and it is revoked as queued.
TEST_P(RenewalTest, AnEndedAttemptsCertificateSeenInUseEndsItsRenewalUnlessTheHostWasRevoked) {
  Enroll(2);
  clock_.Advance(seconds(1));
  ASSERT_TRUE(renewals_->StartRun(All(), "manual", "t").ok());
  ASSERT_EQ(*renewals_->Pump(), 2);
  std::map<std::string, store::RenewalRecord> open;
  std::map<std::string, store::CertificateRecord> issued;
  for (const auto& r : InState(store::RenewalState::kAwaitingCsr)) {
    open[r.host_id] = r;
    auto got = renewals_->SubmitCsr(Host(r.host_id), r.id, Csr(r.host_id));
    ASSERT_TRUE(got.ok()) << got.error().message;
    issued[r.host_id] = got->record;
  }
  clock_.Advance(seconds(61));
  ASSERT_EQ(*renewals_->Pump(), 0);
  ASSERT_EQ(Renewal(open["h1"].id).state, store::RenewalState::kQueued) << "waits for its retry";

  auto h1 = renewals_->AuthenticateAgent(issued["h1"].serial, issued["h1"].fingerprint);
  ASSERT_TRUE(h1.ok()) << h1.error().message;
  EXPECT_EQ(h1->serial, issued["h1"].serial);
  const store::RenewalRecord done = Renewal(open["h1"].id);
  EXPECT_EQ(done.state, store::RenewalState::kValidated);
  EXPECT_EQ(done.serial, issued["h1"].serial);
  EXPECT_EQ(*renewals_->Pump(), 0) << "no second attempt";

  const std::string old2 = *Host("h2").serial;
  ASSERT_TRUE(renewals_->RevokeHost("h2", "keyCompromise", "token:ops").ok());
  ASSERT_TRUE(hosts_->Reactivate("h2", "token:ops").ok());
  auto h2 = renewals_->AuthenticateAgent(issued["h2"].serial, issued["h2"].fingerprint);
  ASSERT_TRUE(h2.ok()) << h2.error().message;
  EXPECT_EQ(Host("h2").serial, old2) << "a reactivated host enrolls with its token";
  EXPECT_EQ(Host("h2").status, store::HostStatus::kEnrolling);
  EXPECT_EQ(RevocationJobs(issued["h2"].serial), 1);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM audit_log WHERE action = 'renewal.adopt'"), 1) << "h1's only";
}

TEST_P(RenewalTest, ARevokedHostsOpenRenewalEndsAndWhatItIssuedIsRevokedAtOnce) {
  Enroll(3);
  ASSERT_TRUE(renewals_->StartRun(All(), "manual", "t").ok());
  ASSERT_EQ(*renewals_->Pump(), 2) << "concurrency 2: one host stays queued";
  const auto working = InState(store::RenewalState::kAwaitingCsr);
  const store::RenewalRecord issued = working.at(0);
  auto enrolled = renewals_->SubmitCsr(Host(issued.host_id), issued.id, Csr(issued.host_id));
  ASSERT_TRUE(enrolled.ok()) << enrolled.error().message;
  const auto queued = InState(store::RenewalState::kQueued);
  ASSERT_EQ(queued.size(), 1u);

  for (const auto& id : {issued.host_id, queued.front().host_id}) {
    auto revoked = renewals_->RevokeHost(id, "keyCompromise", "token:ops");
    ASSERT_TRUE(revoked.ok()) << revoked.error().message;
    EXPECT_EQ(revoked->status, store::HostStatus::kRevoked);
  }
  EXPECT_EQ(Renewal(issued.id).state, store::RenewalState::kFailed);
  EXPECT_EQ(Renewal(issued.id).error, "the host was revoked");
  EXPECT_EQ(Renewal(queued.front().id).state, store::RenewalState::kFailed) << "a queued one never starts";
  EXPECT_EQ(*renewals_->Pump(), 0);
  auto job = store::Write(*store_, [&](store::Tx& tx) {
    return store::LeaseJob(tx, {std::string(issuance::kRevokeSupersededJob)}, "w", clock_.NowMillis(), 1000);
  });
  ASSERT_TRUE(job.ok() && job->has_value()) << "what the open attempt issued is revoked now, not after the grace";
  EXPECT_NE((*job)->payload.find(enrolled->record.serial), std::string::npos);
}

// A host revoked while its agent finishes a renewal keeps the certificate it was revoked with.
TEST_P(RenewalTest, AHostRevokedMeanwhileTakesNoRenewedCertificate) {
  Enroll(1);
  const std::string old_serial = *Host("h1").serial;
  ASSERT_TRUE(renewals_->StartRun(All(), "manual", "t").ok());
  ASSERT_EQ(*renewals_->Pump(), 1);
  const auto r = InState(store::RenewalState::kAwaitingCsr).front();
  const store::HostRecord agent_seen = Host("h1");  // as the agent's request authenticated it
  ASSERT_TRUE(renewals_->SubmitCsr(agent_seen, r.id, Csr("h1")).ok());
  EXPECT_EQ(agents_->Revoke("h1", "no-such-reason", "t").error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(Host("h1").status, store::HostStatus::kActive) << "a bad reason changes nothing";
  ASSERT_TRUE(agents_->Revoke("h1", "keyCompromise", "token:ops").ok());
  auto late = renewals_->Report(agent_seen, r.id, store::RenewalState::kValidated, "", "");
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_EQ(Host("h1").serial, old_serial);
  EXPECT_EQ(issuer_->Get(old_serial)->status, store::CertStatus::kRevoked);
}

TEST_P(RenewalTest, ARevokedHostIsReactivatedAndEnrollsAgain) {
  Enroll(1);
  EXPECT_EQ(hosts_->Reactivate("h1", "t").error().code, ErrorCode::kFailedPrecondition) << "active";
  ASSERT_TRUE(agents_->Revoke("h1", "keyCompromise", "t").ok());
  EXPECT_EQ(hosts_->CreateToken("h1", "t").error().code, ErrorCode::kFailedPrecondition);
  auto token = hosts_->Reactivate("h1", "token:ops");
  ASSERT_TRUE(token.ok()) << token.error().message;
  EXPECT_EQ(Host("h1").status, store::HostStatus::kEnrolling);
  EXPECT_EQ(Host("h1").renew_at, clock_.NowMillis()) << "due at once";
  auto enrolled = agents_->Enroll("h1", *token, Csr("h1"));
  ASSERT_TRUE(enrolled.ok()) << enrolled.error().message;
  EXPECT_EQ(Host("h1").status, store::HostStatus::kActive);
  EXPECT_EQ(Host("h1").serial, enrolled->record.serial);
  EXPECT_EQ(hosts_->Reactivate("nope", "t").error().code, ErrorCode::kNotFound);
}

TEST_P(RenewalTest, ARunThatEndsIsOneDigestAndOneEventOnce) {
  options_.notify_mode = NotifyMode::kDigest;
  Restart();
  Enroll(3);
  auto run = renewals_->StartRun(All(), "manual", "t");
  ASSERT_TRUE(run.ok());
  ASSERT_EQ(*renewals_->Pump(), 2);
  auto working = InState(store::RenewalState::kAwaitingCsr);
  Complete(working.at(0));
  const store::HostRecord failing = Host(working.at(1).host_id);
  ASSERT_TRUE(renewals_->Report(failing, working.at(1).id, store::RenewalState::kFailed, "reload", "nginx: bad").ok());
  EXPECT_EQ(*renewals_->EndRuns(), 0) << "not before every renewal has ended";
  clock_.Advance(seconds(31));  // the failed attempt's backoff
  ASSERT_EQ(*renewals_->Pump(), 2);
  for (const auto& r : InState(store::RenewalState::kAwaitingCsr)) {
    if (r.host_id == failing.host_id) {
      ASSERT_TRUE(renewals_->Report(failing, r.id, store::RenewalState::kFailed, "reload", "nginx: bad").ok());
    } else {
      Complete(r);
    }
  }
  EXPECT_EQ(Count("SELECT COUNT(*) FROM jobs WHERE kind = 'renewal.notify'"), 0) << "digest only: no mail per host";
  EXPECT_EQ(*renewals_->EndRuns(), 1);
  EXPECT_EQ(*renewals_->EndRuns(), 0) << "once";
  EXPECT_EQ(Count("SELECT COUNT(*) FROM jobs WHERE kind = 'renewal.digest'"), 1);
  auto event = store_->Query("SELECT payload FROM events WHERE type = 'renewal/run-finished'");
  ASSERT_EQ(event->size(), 1u);
  const std::string data = event->at(0).Text(0);
  EXPECT_NE(data.find("\"renewed\":2"), std::string::npos) << data;
  EXPECT_NE(data.find("\"failed\":1"), std::string::npos) << data;
  EXPECT_NE(data.find("\"step\":\"reload\",\"error\":\"nginx: bad\""), std::string::npos) << data;

  ASSERT_TRUE(renewals_->MailDigest(run->run_id).ok());
  const std::vector<std::string> mails = Mails();
  ASSERT_EQ(mails.size(), 1u);
  EXPECT_NE(mails[0].find("2 renewed, 1 failed"), std::string::npos) << mails[0];
  // The text part, base64 in lines.
  const size_t start = mails[0].find("base64") + 6;
  std::string encoded = mails[0].substr(start, mails[0].find("--certfleet", start) - start);
  std::erase_if(encoded, [](char c) { return c == '\r' || c == '\n'; });
  const std::string text = Base64Decode(encoded).value_or("");
  EXPECT_NE(text.find("Failed (1)"), std::string::npos) << text;
  EXPECT_NE(text.find(failing.host_id + "  step reload: nginx: bad"), std::string::npos) << text;
  EXPECT_NE(text.find("Renewed (2)"), std::string::npos) << text;
  const auto durations = renewals_->EndedRunDurations();
  EXPECT_EQ(durations.count, 1u);
  EXPECT_EQ(durations.sum, 31.0);

  auto figures = renewals_->CurrentFigures();
  ASSERT_TRUE(figures.ok());
  EXPECT_EQ(figures->renewals[store::RenewalState::kValidated], 2);
  EXPECT_EQ(figures->renewals[store::RenewalState::kFailed], 1);
  EXPECT_EQ(figures->hosts[store::HostStatus::kFailed], 1);
  EXPECT_EQ(figures->expiring_30d, 0);
  clock_.Advance(std::chrono::hours(24 * 65));  // the certificates were made 90 days long
  EXPECT_EQ(renewals_->CurrentFigures()->expiring_30d, 3);
  EXPECT_EQ(renewals_->CurrentFigures()->expiring_7d, 0);
}

INSTANTIATE_TEST_SUITE_P(Drivers, RenewalTest, testing::kBothDialects, testing::DialectName);

}  // namespace
}  // namespace certfleet::renewal
