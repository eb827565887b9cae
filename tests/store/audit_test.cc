#include <gtest/gtest.h>

#include <thread>

#include "store/audit_repo.h"
#include "testing/db.h"

namespace certfleet::store {
namespace {

class AuditTest : public ::testing::TestWithParam<Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam());
    ASSERT_NE(store_, nullptr);
  }
  void Append(int i) {
    Result<void> r = store_->Transact([&](Tx& tx) -> Result<void> {
      CF_RETURN_IF_ERROR(
          AppendAudit(tx, 1000 + i, "token:abc", "thing.create", "thing:" + std::to_string(i), R"({"n":1})"));
      return Ok();
    });
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
  std::unique_ptr<Store> store_;
};

TEST_P(AuditTest, AnIntactChainVerifies) {
  for (int i = 0; i < 5; ++i) Append(i);
  auto report = VerifyAuditChain(*store_);
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->rows_checked, 5);
  EXPECT_FALSE(report->first_broken_seq.has_value()) << report->reason;
}

TEST_P(AuditTest, SeveralAppendsInOneTransactionWithAnyTextChainAsTheVerifierComputesIt) {
  // PostgreSQL computes the hash itself: lengths in bytes, multi-byte text, quotes, colons.
  Result<void> r = store_->Transact([&](Tx& tx) -> Result<void> {
    CF_RETURN_IF_ERROR(AppendAudit(tx, 1, "token:åäö", "thing.create", "thing:Ünïcödé 🚀", R"({"a":"b:c"})"));
    CF_RETURN_IF_ERROR(AppendAudit(tx, 2, "it's", "x", "", ""));
    CF_RETURN_IF_ERROR(AppendAudit(tx, 3, "cli", "token.create", "token:1", R"({"role":"admin"})"));
    return Ok();
  });
  ASSERT_TRUE(r.ok()) << r.error().message;
  Append(4);
  auto report = VerifyAuditChain(*store_);
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->rows_checked, 4);
  EXPECT_FALSE(report->first_broken_seq.has_value()) << report->reason;
  auto rows = store_->Query("SELECT details FROM audit_log WHERE seq = 2");
  EXPECT_EQ(rows->at(0).Text(0), "{}") << "no details are an empty object";
}

TEST_P(AuditTest, EntriesGatheredAfterASavepointGoWithItsRollback) {
  Result<void> r = store_->Transact([&](Tx& tx) -> Result<void> {
    CF_RETURN_IF_ERROR(AppendAudit(tx, 1, "cli", "kept.before", "x:1", "{}"));
    CF_RETURN_IF_ERROR(tx.Savepoint("piece"));
    CF_RETURN_IF_ERROR(AppendAudit(tx, 2, "cli", "rolled.back", "x:2", "{}"));
    CF_RETURN_IF_ERROR(tx.RollbackTo("piece"));
    CF_RETURN_IF_ERROR(tx.Exec("RELEASE SAVEPOINT piece"));
    CF_RETURN_IF_ERROR(AppendAudit(tx, 3, "cli", "kept.after", "x:3", "{}"));
    return Ok();
  });
  ASSERT_TRUE(r.ok()) << r.error().message;
  auto rows = store_->Query("SELECT seq, action FROM audit_log ORDER BY seq");
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ(rows->at(0).Text(1), "kept.before");
  EXPECT_EQ(rows->at(1).Text(1), "kept.after");
  EXPECT_EQ(rows->at(1).Int(0), 2) << "no gap in the chain";
  EXPECT_FALSE(VerifyAuditChain(*store_)->first_broken_seq.has_value());
}

TEST_P(AuditTest, AnAlteredRowIsTheFirstBroken) {
  for (int i = 0; i < 5; ++i) Append(i);
  ASSERT_TRUE(store_->Exec("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 3").ok());
  auto report = VerifyAuditChain(*store_);
  ASSERT_TRUE(report.ok());
  ASSERT_TRUE(report->first_broken_seq.has_value());
  EXPECT_EQ(*report->first_broken_seq, 3);
  EXPECT_EQ(report->rows_checked, 2);
}

TEST_P(AuditTest, RemovedRowsAreFound) {
  for (int i = 0; i < 5; ++i) Append(i);
  ASSERT_TRUE(store_->Exec("DELETE FROM audit_log WHERE seq = 2").ok());
  auto middle = VerifyAuditChain(*store_);
  ASSERT_TRUE(middle->first_broken_seq.has_value());
  EXPECT_EQ(*middle->first_broken_seq, 3);

  auto fresh = testing::FreshStore(GetParam());
  store_ = std::move(fresh);
  for (int i = 0; i < 3; ++i) Append(i);
  ASSERT_TRUE(store_->Exec("DELETE FROM audit_log WHERE seq = 3").ok());
  auto tail = VerifyAuditChain(*store_);
  ASSERT_TRUE(tail->first_broken_seq.has_value());
  EXPECT_EQ(*tail->first_broken_seq, 3);
}

TEST_P(AuditTest, ConcurrentAppendsKeepOneChain) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) Append(t * 100 + i);
    });
  }
  for (auto& th : threads) th.join();
  auto report = VerifyAuditChain(*store_);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->rows_checked, 100);
  EXPECT_FALSE(report->first_broken_seq.has_value()) << report->reason;
}

TEST_P(AuditTest, ListsWithFiltersAndCursor) {
  for (int i = 0; i < 5; ++i) Append(i);
  std::vector<AuditEntry> page;
  ASSERT_TRUE(
      store_
          ->Transact([&](Tx& tx) -> Result<void> {
            CF_ASSIGN_OR_RETURN(page, ListAudit(tx, AuditFilter{std::nullopt, std::string("thing.create"), 2, 2}));
            return Ok();
          })
          .ok());
  ASSERT_EQ(page.size(), 2u);
  EXPECT_EQ(page[0].seq, 3);
  EXPECT_EQ(page[1].object, "thing:3");
}

INSTANTIATE_TEST_SUITE_P(Drivers, AuditTest, testing::kBothDialects, testing::DialectName);

}  // namespace
}  // namespace certfleet::store
