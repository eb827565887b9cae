// CMP's rows: transaction IDs seen, and certificates waiting for their certConf.
#include "store/enroll_repo.h"

#include <gtest/gtest.h>

#include "testing/db.h"

namespace certfleet::store {
namespace {

class EnrollRepoTest : public ::testing::TestWithParam<Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam());
    ASSERT_NE(store_, nullptr);
  }
  std::vector<UnconfirmedCmpCertificate> Overdue(int64_t now) {
    auto r = Read(*store_, [&](Tx& tx) { return UnconfirmedCmpCertificates(tx, now, 10); });
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? *r : std::vector<UnconfirmedCmpCertificate>{};
  }
  bool End(std::string_view serial) {
    auto r = Write(*store_, [&](Tx& tx) { return EndCmpConfirmation(tx, serial); });
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() && *r;
  }
  std::unique_ptr<Store> store_;
};

// A certificate waits until its confirm_by, is ended once (by its certConf or by the sweep that
// takes it first), and outlives the forgetting of old transaction IDs while it waits.
TEST_P(EnrollRepoTest, ACertificateWaitsForItsCertConfUntilEndedOnce) {
  ASSERT_TRUE(Write(*store_, [](Tx& tx) -> Result<void> {
                CF_ASSIGN_OR_RETURN(bool a, BeginCmpTransaction(tx, "aa", 0, 0));
                CF_ASSIGN_OR_RETURN(bool b, BeginCmpTransaction(tx, "bb", 0, 0));
                if (!a || !b) return MakeError(ErrorCode::kInternal, "not new");
                return AwaitCmpConfirmation(tx, "aa", "01", 100);
              }).ok());
  auto unknown = Write(*store_, [](Tx& tx) { return AwaitCmpConfirmation(tx, "cc", "02", 100); });
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, ErrorCode::kNotFound);
  EXPECT_TRUE(Overdue(100).empty()) << "not before its confirm_by";
  // A week later, a new transaction forgets the old IDs, but not the one still waiting.
  ASSERT_TRUE(Write(*store_, [](Tx& tx) { return BeginCmpTransaction(tx, "dd", 1000, 500); }).ok());
  auto overdue = Overdue(101);
  ASSERT_EQ(overdue.size(), 1U);
  EXPECT_EQ(overdue[0].transaction_id, "aa");
  EXPECT_EQ(overdue[0].serial, "01");
  EXPECT_EQ(overdue[0].confirm_by, 100);
  auto replayed = Write(*store_, [](Tx& tx) { return BeginCmpTransaction(tx, "bb", 1000, 500); });
  ASSERT_TRUE(replayed.ok());
  EXPECT_TRUE(*replayed) << "a forgotten ID that did not wait";
  EXPECT_FALSE(End("02")) << "another certificate";
  EXPECT_TRUE(End("01"));
  EXPECT_FALSE(End("01")) << "once";
  EXPECT_TRUE(Overdue(101).empty());
}

INSTANTIATE_TEST_SUITE_P(Drivers, EnrollRepoTest, testing::kBothDialects, testing::DialectName);

}  // namespace
}  // namespace certfleet::store
