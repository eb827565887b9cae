// W4 hosts: registration with its checks, defaults, listing by status and due date, the
// renewal scan's order, and the agents' single-use enrollment tokens.
#include "renewal/host_service.h"

#include <gtest/gtest.h>

#include <functional>

#include "core/crypto.h"
#include "testing/db.h"

namespace certfleet::renewal {
namespace {

// A spec of the host id, changed by `change`.
HostSpec Spec(std::string host_id, const std::function<void(HostSpec&)>& change = {}) {
  HostSpec s;
  s.host_id = std::move(host_id);
  if (change) change(s);
  return s;
}

store::HostFilter Filter(const std::function<void(store::HostFilter&)>& change) {
  store::HostFilter f;
  change(f);
  return f;
}

class HostTest : public ::testing::TestWithParam<store::Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam());
    ASSERT_NE(store_, nullptr);
    HostService::Options options;
    options.defaults = {{}, "/etc/pki/certs", "/etc/pki/private", "/etc/pki/ca", "ec-p256", "host", 30, std::nullopt};
    options.token_ttl = std::chrono::hours(1);
    hosts_ = std::make_unique<HostService>(*store_, clock_, options);
  }
  Result<store::HostRecord> Create(HostSpec spec) { return hosts_->Create(spec, "token:ops"); }

  ManualClock clock_{1'795'456'605'000};
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<HostService> hosts_;
};

TEST_P(HostTest, AHostTakesTheDefaultsItDoesNotOverrideAndIsDueAtOnce) {
  HostSpec spec = Spec("web-1.example.com");
  spec.key_path = "/srv/keys";
  spec.sans = {"web-1.example.com", "10.0.0.7", "::1"};
  spec.renewal_threshold_days = 2;
  auto made = Create(spec);
  ASSERT_TRUE(made.ok()) << made.error().message;
  auto h = hosts_->Get("web-1.example.com");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->status, store::HostStatus::kEnrolling);
  EXPECT_EQ(h->renew_at, clock_.NowMillis());
  EXPECT_EQ(h->sans, R"(["web-1.example.com","10.0.0.7","::1"])");
  HostSettings s = hosts_->SettingsOf(*h);
  EXPECT_EQ(s.cert_path, "/etc/pki/certs");
  EXPECT_EQ(s.key_path, "/srv/keys");
  EXPECT_EQ(s.cacert_path, "/etc/pki/ca");
  EXPECT_EQ(s.key_type, "ec-p256");
  EXPECT_EQ(s.threshold_days, 2);
  auto again = Create(spec);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ErrorCode::kAlreadyExists);
  EXPECT_EQ(hosts_->Get("web-2").error().code, ErrorCode::kNotFound);
  auto audit = store_->Query("SELECT action, object, actor FROM audit_log WHERE action = 'host.create'");
  ASSERT_TRUE(audit.ok());
  ASSERT_EQ(audit->size(), 1u);
  EXPECT_EQ(audit->at(0).Text(1), "host:web-1.example.com");
  EXPECT_EQ(audit->at(0).Text(2), "token:ops");
}

TEST_P(HostTest, BadSettingsAreRefusedNamingTheField) {
  auto refused = [&](HostSpec spec, std::string_view field) {
    auto r = Create(spec);
    ASSERT_FALSE(r.ok()) << field;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << field;
    EXPECT_NE(r.error().message.find(field), std::string::npos) << r.error().message;
  };
  refused(Spec(""), "host_id");
  refused(Spec("web_1"), "host_id");
  refused(Spec("web/1"), "host_id");
  refused(Spec(std::string(254, 'a')), "host_id");
  // The certificate's common name: 64 characters at most, a host name's labels.
  refused(Spec(std::string(61, 'a') + ".com"), "host_id");
  EXPECT_TRUE(Create(Spec(std::string(60, 'a') + ".com")).ok());
  refused(Spec("-a.com"), "host_id");
  refused(Spec("a-.com"), "host_id");
  refused(Spec(std::string(64, 'b')), "host_id");
  refused(Spec("h", [](HostSpec& s) { s.cert_path = "certs"; }), "cert_path");
  refused(Spec("h", [](HostSpec& s) { s.key_path = "/etc/../root"; }), "key_path");
  refused(Spec("h", [](HostSpec& s) { s.cacert_path = "/etc/pki/.."; }), "cacert_path");
  refused(Spec("h", [](HostSpec& s) { s.cert_path = "/etc/\npki"; }), "cert_path");
  refused(Spec("h", [](HostSpec& s) { s.sans = {"not a name"}; }), "san");
  refused(Spec("h", [](HostSpec& s) { s.sans = std::vector<std::string>(101, "a.example.com"); }), "sans");
  refused(Spec("h", [](HostSpec& s) { s.key_type = "dsa-1024"; }), "key_type");
  refused(Spec("h", [](HostSpec& s) { s.profile = "root"; }), "profile");
  refused(Spec("h", [](HostSpec& s) { s.renewal_threshold_days = 0; }), "renewal_threshold_days");
  refused(Spec("h", [](HostSpec& s) { s.renewal_threshold_days = 366; }), "renewal_threshold_days");
  refused(Spec("h", [](HostSpec& s) { s.reload_command = "systemctl reload nginx\nrm -rf /"; }), "reload_command");
  EXPECT_TRUE(Create(Spec("h", [](HostSpec& s) { s.cert_path = "/etc/pki..d/x"; })).ok())
      << "'..' inside a name is a name";
  EXPECT_EQ(store_->Query("SELECT COUNT(*) FROM hosts")->at(0).Int(0), 2) << "h and the 64-character one";
}

TEST_P(HostTest, HostsListByStatusAndDueDateAndARunTakesTheEarliestFirst) {
  for (const char* id : {"c", "a", "b"}) {
    ASSERT_TRUE(Create(Spec(id)).ok());
    clock_.Advance(std::chrono::minutes(1));
  }
  // b has a certificate renewed in 10 days, a was revoked.
  ASSERT_TRUE(store_
                  ->Transact([&](store::Tx& tx) -> Result<void> {
                    CF_ASSIGN_OR_RETURN(auto b, store::FindHost(tx, "b"));
                    b->status = store::HostStatus::kActive;
                    b->serial = "0a";
                    b->renew_at = clock_.NowMillis() + int64_t{10} * 24 * 3600 * 1000;
                    CF_RETURN_IF_ERROR(store::UpdateHost(tx, *b));
                    CF_ASSIGN_OR_RETURN(auto a, store::FindHost(tx, "a"));
                    a->status = store::HostStatus::kRevoked;
                    return store::UpdateHost(tx, *a).ok() ? Ok() : MakeError(ErrorCode::kInternal, "update");
                  })
                  .ok());
  auto ids = [](const std::vector<store::HostRecord>& hosts) {
    std::vector<std::string> out;
    for (const auto& h : hosts) out.push_back(h.host_id);
    return out;
  };
  EXPECT_EQ(ids(*hosts_->List(store::HostFilter{})), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(ids(*hosts_->List(Filter([](store::HostFilter& f) { f.status = store::HostStatus::kActive; }))),
            (std::vector<std::string>{"b"}));
  EXPECT_EQ(ids(*hosts_->List(Filter([&](store::HostFilter& f) { f.due_before = clock_.NowMillis(); }))),
            (std::vector<std::string>{"a", "c"}));
  EXPECT_EQ(ids(*hosts_->List(Filter([](store::HostFilter& f) {
              f.after = "a";
              f.limit = 1;
            }))),
            (std::vector<std::string>{"b"}));
  auto due = store::Read(*store_, [&](store::Tx& tx) { return store::DueHosts(tx, clock_.NowMillis(), 10); });
  ASSERT_TRUE(due.ok());
  EXPECT_EQ(ids(*due), (std::vector<std::string>{"c"})) << "b is not due, a is revoked";
}

TEST_P(HostTest, AnEnrollmentTokenWorksOnceAndUntilItExpires) {
  ASSERT_TRUE(Create(Spec("h1")).ok());
  EXPECT_EQ(hosts_->CreateToken("nope", "t").error().code, ErrorCode::kNotFound);
  auto token = hosts_->CreateToken("h1", "token:ops");
  ASSERT_TRUE(token.ok()) << token.error().message;
  EXPECT_GE(token->size(), 40u);
  auto spend = [&](const std::string& t) {
    return store::Write(*store_,
                        [&](store::Tx& tx) { return store::SpendHostToken(tx, Sha256Hex(t), clock_.NowMillis()); });
  };
  EXPECT_EQ(store_->Query("SELECT COUNT(*) FROM host_tokens WHERE token_sha256 = '" + *token + "'")->at(0).Int(0), 0)
      << "only its hash is kept";
  auto first = spend(*token);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first, std::optional<std::string>("h1"));
  EXPECT_EQ(*spend(*token), std::nullopt) << "single use";
  auto late = hosts_->CreateToken("h1", "token:ops");
  clock_.Advance(std::chrono::hours(1));
  EXPECT_EQ(*spend(*late), std::nullopt) << "expired";
  EXPECT_EQ(*spend("made-up"), std::nullopt);
}

TEST_P(HostTest, ABulkRegistrationAnswersEachRowAndKeepsGoingPastRejectedOnes) {
  ASSERT_TRUE(Create(Spec("same", [](HostSpec& s) { s.sans = {"same.example.com"}; })).ok());
  ASSERT_TRUE(Create(Spec("other")).ok());
  std::vector<Result<HostSpec>> rows{
      Spec("new-1"),
      Spec("same", [](HostSpec& s) { s.sans = {"same.example.com"}; }),
      Spec("other", [](HostSpec& s) { s.key_type = "rsa-2048"; }),
      Spec("bad", [](HostSpec& s) { s.key_type = "dsa"; }),
      MakeError(ErrorCode::kInvalidArgument, "host_id is missing"),
      Spec("new-1"),
  };
  auto results = hosts_->CreateMany(rows, "token:ops");
  ASSERT_TRUE(results.ok()) << results.error().message;
  ASSERT_EQ(results->size(), rows.size());
  auto outcome = [&](size_t i) { return std::string(EnumName(results->at(i).outcome, kRowOutcomeNames)); };
  EXPECT_EQ(outcome(0), "created");
  EXPECT_EQ(outcome(1), "unchanged");
  EXPECT_EQ(outcome(2), "rejected");
  EXPECT_NE(results->at(2).error.find("exists with other settings"), std::string::npos) << results->at(2).error;
  EXPECT_EQ(outcome(3), "rejected");
  EXPECT_NE(results->at(3).error.find("key_type"), std::string::npos);
  EXPECT_EQ(outcome(4), "rejected");
  EXPECT_EQ(results->at(4).error, "host_id is missing");
  EXPECT_EQ(outcome(5), "unchanged") << "the same host twice in one list";
  EXPECT_EQ(hosts_->Get("new-1")->status, store::HostStatus::kEnrolling);
  EXPECT_FALSE(hosts_->Get("other")->key_type.has_value()) << "a rejected row changes nothing";
  EXPECT_FALSE(hosts_->Get("bad").ok());
  auto audited = store_->Query("SELECT COUNT(*) FROM audit_log WHERE action = 'host.create'");
  EXPECT_EQ(audited->at(0).Int(0), 3) << "two before, one created by the list";

  std::vector<Result<HostSpec>> too_many(HostService::kMaxBulkHosts + 1, Result<HostSpec>(Spec("x")));
  EXPECT_EQ(hosts_->CreateMany(too_many, "t").error().code, ErrorCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Drivers, HostTest, testing::kBothDialects, testing::DialectName);

}  // namespace
}  // namespace certfleet::renewal
