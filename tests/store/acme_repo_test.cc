// ACME's rows: what a new order's `replaces` (RFC 9773) finds already replacing a certificate.
#include "store/acme_repo.h"

#include <gtest/gtest.h>

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

INSTANTIATE_TEST_SUITE_P(Drivers, AcmeRepoTest, testing::kBothDialects, testing::DialectName);

}  // namespace
}  // namespace certfleet::store
