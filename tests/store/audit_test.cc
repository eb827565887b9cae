#include <gtest/gtest.h>

#include <future>
#include <set>
#include <thread>

#include "store/audit_repo.h"
#include "store/certificates_repo.h"
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
  AuditPage List(const AuditFilter& filter) {
    auto page = Read(*store_, [&](Tx& tx) { return ListAudit(tx, filter); });
    EXPECT_TRUE(page.ok()) << page.error().message;
    return page.ok() ? *page : AuditPage{};
  }
  // Every entry, following the cursor in pages of `limit`.
  std::vector<AuditEntry> ReadAll(int limit) {
    std::vector<AuditEntry> all;
    AuditFilter filter{std::nullopt, std::nullopt, {}, limit};
    for (int pages = 0; pages < 1000; ++pages) {
      AuditPage page = List(filter);
      all.insert(all.end(), page.entries.begin(), page.entries.end());
      if (page.entries.size() < static_cast<size_t>(limit)) break;
      filter.after = page.next;
    }
    return all;
  }
  std::unique_ptr<Store> store_;
};

TEST_P(AuditTest, AnIntactChainVerifies) {
  for (int i = 0; i < 5; ++i) Append(i);
  auto report = VerifyAuditChain(*store_);
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->rows_checked, 5);
  EXPECT_EQ(report->chains, GetParam() == Dialect::kPostgres ? 8 : 1) << "SQLite has one writer and one chain";
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

// The entries are written last and, on PostgreSQL, sent with the COMMIT: when their write
// fails there (here a row already holds the next number of the chain), the transaction's
// other writes are not stored either, and the caller hears why.
TEST_P(AuditTest, AnEntryThatCannotBeWrittenAtTheCommitFailsTheWholeTransaction) {
  Append(1);
  ASSERT_TRUE(store_
                  ->Exec("INSERT INTO audit_log (seq, at, actor, action, object, details, prev_hash, hash) "
                         "VALUES (2, 0, 'x', 'x', 'x', '{}', 'x', 'x')")
                  .ok());
  Result<void> r = store_->Transact([&](Tx& tx) -> Result<void> {
    CF_RETURN_IF_ERROR(AppendEvent(tx, 2, "tests/never-stored", "{}"));
    CF_RETURN_IF_ERROR(AppendAudit(tx, 2, "cli", "never.stored", "x:2", "{}"));
    return Ok();
  });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kAlreadyExists) << r.error().message;
  // A broken constraint's message may reach a client (a 409): no statement, no values in it.
  EXPECT_EQ(r.error().message.find("INSERT"), std::string::npos) << r.error().message;
  EXPECT_EQ(r.error().message.find("never.stored"), std::string::npos) << r.error().message;
  EXPECT_EQ(store_->Query("SELECT COUNT(*) FROM audit_log WHERE action = 'never.stored'")->at(0).Int(0), 0);
  EXPECT_EQ(store_->Query("SELECT COUNT(*) FROM events WHERE type = 'tests/never-stored'")->at(0).Int(0), 0)
      << "the transaction's other write was rolled back";
  // The store goes on: the next transaction on the same connections commits.
  ASSERT_TRUE(store_->Exec("DELETE FROM audit_log WHERE seq = 2").ok());
  Append(3);
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

TEST_P(AuditTest, AHeadMovedBackOrRemovedAndRowsOutsideEveryChainAreFound) {
  for (int i = 0; i < 5; ++i) Append(i);
  auto third = store_->Query("SELECT hash FROM audit_log WHERE seq = 3");
  ASSERT_TRUE(third.ok());
  // The head set back to row 3, as if rows 4 and 5 were never appended: they could then be
  // altered at will.
  ASSERT_TRUE(store_->Exec("UPDATE audit_head SET seq = 3, hash = ? WHERE id = 1", {third->at(0).Text(0)}).ok());
  auto report = VerifyAuditChain(*store_);
  ASSERT_TRUE(report.ok());
  ASSERT_TRUE(report->first_broken_seq.has_value());
  EXPECT_EQ(*report->first_broken_seq, 4) << report->reason;

  store_ = testing::FreshStore(GetParam());
  Append(0);
  ASSERT_TRUE(store_
                  ->Exec("INSERT INTO audit_log (seq, at, actor, action, object, details, prev_hash, hash) "
                         "VALUES (?, 1, 'x', 'x', 'x', '{}', '', '')",
                         {int64_t{40} * kAuditChainSpan + 1})
                  .ok());
  report = VerifyAuditChain(*store_);
  ASSERT_TRUE(report->first_broken_seq.has_value());
  EXPECT_EQ(*report->first_broken_seq, int64_t{40} * kAuditChainSpan + 1) << "a row outside every chain";

  ASSERT_TRUE(store_->Exec("DELETE FROM audit_head WHERE id = 1").ok());
  report = VerifyAuditChain(*store_);
  ASSERT_TRUE(report->first_broken_seq.has_value());
  EXPECT_EQ(*report->first_broken_seq, 1);
  EXPECT_EQ(report->reason, "chain 1's head row is missing");
}

TEST_P(AuditTest, ConcurrentAppendsKeepEveryChainIntactAndTheCursorMissesNone) {
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
  std::set<std::string> seen;
  for (const AuditEntry& e : ReadAll(7)) EXPECT_TRUE(seen.insert(e.object).second) << e.object << " listed twice";
  EXPECT_EQ(seen.size(), 100u);
}

TEST_P(AuditTest, ListsWithFiltersAndCursor) {
  for (int i = 0; i < 5; ++i) Append(i);
  auto page = List(AuditFilter{std::nullopt, std::string("thing.create"), {2}, 2});
  ASSERT_EQ(page.entries.size(), 2u);
  EXPECT_EQ(page.entries[0].seq, 3);
  EXPECT_EQ(page.entries[1].object, "thing:3");
  EXPECT_EQ(page.next, std::vector<int64_t>{4});
  EXPECT_EQ(List(AuditFilter{std::nullopt, std::string("other.action"), {}, 2}).entries.size(), 0u);
}

// PostgreSQL only: SQLite has one writer, and one chain.
class AuditChainsTest : public AuditTest {};

// A transaction appending while another holds chain 1 (until its commit) appends to chain 2 at
// once, and readers and the verifier see both chains.
TEST_P(AuditChainsTest, AnAppendWhileAnotherIsUncommittedTakesTheNextChain) {
  Append(0);
  std::promise<void> holding, appended;
  std::thread holder([&] {
    Result<void> r = store_->Transact([&](Tx& tx) -> Result<void> {
      CF_RETURN_IF_ERROR(AppendAudit(tx, 2000, "cli", "held.open", "x:1", "{}"));
      CF_RETURN_IF_ERROR(tx.FlushGathered("audit"));  // chain 1's head is locked from here
      holding.set_value();
      appended.get_future().wait();
      return Ok();
    });
    EXPECT_TRUE(r.ok()) << r.error().message;
  });
  holding.get_future().wait();
  Append(1);  // does not wait for the holder: it would never commit
  appended.set_value();
  holder.join();
  Append(2);
  auto rows = store_->Query("SELECT seq, object FROM audit_log ORDER BY seq");
  ASSERT_EQ(rows->size(), 4u);
  EXPECT_EQ(rows->at(0).Int(0), 1);
  EXPECT_EQ(rows->at(1).Int(0), 2);
  EXPECT_EQ(rows->at(2).Int(0), 3) << "chain 1 is free again";
  EXPECT_EQ(rows->at(3).Int(0), kAuditChainSpan + 1);
  EXPECT_EQ(rows->at(3).Text(1), "thing:1");
  EXPECT_EQ(AuditChainOf(rows->at(3).Int(0)), 2);
  auto report = VerifyAuditChain(*store_);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->rows_checked, 4);
  EXPECT_FALSE(report->first_broken_seq.has_value()) << report->reason;

  // Pages of one across both chains, oldest first; a cursor from before the chains (one
  // number) still reads chain 1 from there and the others from their start.
  std::vector<std::string> objects;
  for (const AuditEntry& e : ReadAll(1)) objects.push_back(e.object);
  EXPECT_EQ(objects, (std::vector<std::string>{"thing:0", "thing:1", "x:1", "thing:2"}));
  auto page = List(AuditFilter{std::nullopt, std::nullopt, {1}, 10});
  ASSERT_EQ(page.entries.size(), 3u);
  EXPECT_EQ(page.next, (std::vector<int64_t>{3, kAuditChainSpan + 1}));

  ASSERT_TRUE(store_->Exec("UPDATE audit_log SET object = 'thing:9' WHERE seq = ?", {kAuditChainSpan + 1}).ok());
  report = VerifyAuditChain(*store_);
  ASSERT_TRUE(report->first_broken_seq.has_value());
  EXPECT_EQ(*report->first_broken_seq, kAuditChainSpan + 1);

  // A chain removed whole, with its head, is missed no more than a row.
  ASSERT_TRUE(store_->Exec("DELETE FROM audit_log WHERE seq > ?", {kAuditChainSpan}).ok());
  ASSERT_TRUE(store_->Exec("DELETE FROM audit_head WHERE id = 2").ok());
  report = VerifyAuditChain(*store_);
  ASSERT_TRUE(report->first_broken_seq.has_value());
  EXPECT_EQ(report->reason, "chain 2's head row is missing");
}

INSTANTIATE_TEST_SUITE_P(Drivers, AuditTest, testing::kBothDialects, testing::DialectName);
INSTANTIATE_TEST_SUITE_P(Drivers, AuditChainsTest, ::testing::Values(Dialect::kPostgres), testing::DialectName);

}  // namespace
}  // namespace certfleet::store
