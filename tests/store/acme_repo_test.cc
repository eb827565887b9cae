// ACME's rows: what a new order's `replaces` (RFC 9773) finds already replacing a certificate.
#include "store/acme_repo.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "store/jobs_repo.h"
#include "testing/db.h"

namespace certfleet::store {
namespace {

class AcmeRepoTest : public ::testing::TestWithParam<Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam());
    ASSERT_NE(store_, nullptr);
    auto id = Write(*store_, [](Tx& tx) {
      return InsertAcmeAccount(tx, {0, "default", "thumbprint", "{}", "valid", "[]", 0});
    });
    ASSERT_TRUE(id.ok()) << id.error().message;
    account_ = *id;
  }
  // An order of the account that replaces `cert_id`, expiring at `expires_at`.
  int64_t Order(std::string_view cert_id, std::string status, int64_t expires_at) {
    AcmeOrderRecord order;
    order.account_id = account_;
    order.profile = "default";
    order.status = std::move(status);
    order.identifiers = R"([{"type":"dns","value":"a.example.test"}])";
    order.expires_at = expires_at;
    order.replaces = std::string(cert_id);
    auto id = Write(*store_, [&](Tx& tx) { return InsertAcmeOrder(tx, order); });
    EXPECT_TRUE(id.ok()) << id.error().message;
    return id.ok() ? *id : 0;
  }
  bool Replaced(std::string_view cert_id, int64_t now) {
    auto r = Read(*store_, [&](Tx& tx) { return AcmeOrderReplaces(tx, cert_id, now); });
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() && *r;
  }
  std::unique_ptr<Store> store_;
  int64_t account_ = 0;
};

// A change checked against the account as it was read does not undo a deactivation that
// committed since: the account stays deactivated (RFC 8555 7.3.6: final).
TEST_P(AcmeRepoTest, ADeactivatedAccountIsNotChangedBackByARequestReadBefore) {
  auto write = [&](auto fn) {
    auto r = Write(*store_, fn);
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() && *r;
  };
  EXPECT_TRUE(write([&](Tx& tx) { return UpdateAcmeAccount(tx, account_, "deactivated", "[]"); }));
  EXPECT_FALSE(write([&](Tx& tx) { return UpdateAcmeAccount(tx, account_, "valid", R"(["mailto:x@example.test"])"); }));
  EXPECT_FALSE(write([&](Tx& tx) { return ChangeAcmeAccountKey(tx, account_, "other", "{}"); }));
  auto account = Read(*store_, [&](Tx& tx) { return FindAcmeAccount(tx, account_); });
  ASSERT_TRUE(account.ok() && *account);
  EXPECT_EQ((*account)->status, "deactivated");
  EXPECT_EQ((*account)->thumbprint, "thumbprint");
}

TEST_P(AcmeRepoTest, AnAbandonedReplacementOrderNoLongerHoldsTheCertificate) {
  Order("pending.1", "pending", 5000);
  Order("ready.1", "ready", 5000);
  Order("valid.1", "valid", 5000);
  Order("invalid.1", "invalid", 5000);
  for (const char* id : {"pending.1", "ready.1", "valid.1"}) EXPECT_TRUE(Replaced(id, 4999)) << id;
  EXPECT_FALSE(Replaced("invalid.1", 4999));
  // Past their expiry, the pending and ready orders are abandoned; the valid one replaced it.
  EXPECT_FALSE(Replaced("pending.1", 5000));
  EXPECT_FALSE(Replaced("ready.1", 5000));
  EXPECT_TRUE(Replaced("valid.1", 5000));
  EXPECT_FALSE(Replaced("none.1", 0));
}

// A challenge left processing by a validation job that died is found, with the job's error;
// one whose job still runs, one already decided, and another kind's dead job are not.
TEST_P(AcmeRepoTest, FindsTheChallengesOfDeadValidationJobs) {
  const int64_t order = Order("", "pending", 5000);
  auto ids = Write(*store_, [&](Tx& tx) -> Result<std::vector<int64_t>> {
    CF_ASSIGN_OR_RETURN(int64_t authz,
                        InsertAcmeAuthz(tx, {0, order, account_, "dns", "a.example.test", false, "pending", 5000}));
    std::vector<int64_t> out;
    for (const char* status : {"processing", "processing", "valid", "processing", "processing"}) {
      CF_ASSIGN_OR_RETURN(int64_t id, InsertAcmeChallenge(tx, {0, authz, "http-01", "token", status, {}, {}}));
      out.push_back(id);
    }
    // The first's job died; the second's still runs; the third's died after deciding it; the
    // fourth has a dead job of another kind; the fifth's runs until its lease expires.
    for (size_t i = 0; i < out.size(); ++i) {
      const std::string kind = i == 3 ? "other.job" : "acme.validate";
      const NewJob job{kind, "{}", 0, 1, fmt::format("{}:{}", kind, out[i])};
      CF_ASSIGN_OR_RETURN(auto leased, EnqueueLeasedJob(tx, job, "node", 100, i == 1 ? 100'000 : 1000));
      if (!leased) return MakeError(ErrorCode::kInternal, "not queued");
      if (i == 1 || i == 4) continue;
      CF_ASSIGN_OR_RETURN(bool failed, FailJob(tx, leased->id, "node", 1, "store down", 200, false, 200));
      if (!failed) return MakeError(ErrorCode::kInternal, "not failed");
    }
    return out;
  });
  ASSERT_TRUE(ids.ok()) << ids.error().message;
  // Out of attempts when its lease expires, the fifth's job is dead too.
  ASSERT_TRUE(Write(*store_, [](Tx& tx) { return ReclaimExpiredLeases(tx, 2000); }).ok());
  auto dead = Read(*store_, [](Tx& tx) { return AcmeChallengesOfDeadJobs(tx, "acme.validate"); });
  ASSERT_TRUE(dead.ok()) << dead.error().message;
  ASSERT_EQ(dead->size(), 2U);
  EXPECT_EQ((*dead)[0].first, (*ids)[0]);
  EXPECT_EQ((*dead)[0].second, "store down");
  EXPECT_EQ((*dead)[1].first, (*ids)[4]);
}

INSTANTIATE_TEST_SUITE_P(Drivers, AcmeRepoTest, testing::kBothDialects, testing::DialectName);

}  // namespace
}  // namespace certfleet::store
