// Webhook delivery moves a cursor past each event it sends: it must not pass an event whose id
// was taken but whose transaction has not committed yet (PostgreSQL takes ids at insert).
#include "events/webhooks.h"

#include <gtest/gtest.h>

#include "store/events_repo.h"
#include "testing/db.h"

namespace certfleet::events {
namespace {

constexpr int64_t kNow = 1'800'000'000'000;

class WebhookCursorTest : public ::testing::TestWithParam<store::Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam());
    ASSERT_NE(store_, nullptr);
  }
  void Event(int64_t id, int64_t at) {
    auto inserted = store::Write(*store_, [&](store::Tx& tx) -> Result<void> {
      CF_RETURN_IF_ERROR(
          tx.Exec("INSERT INTO events (id, at, type, payload) VALUES (?, ?, 'crl/published', '{}')", {id, at}));
      return Ok();
    });
    ASSERT_TRUE(inserted.ok()) << inserted.error().message;
  }
  // The ids delivery would send after `after` at `now`.
  std::vector<int64_t> Deliverable(int64_t after, int64_t now) {
    auto ids = store::Read(*store_, [&](store::Tx& tx) -> Result<std::vector<int64_t>> {
      CF_ASSIGN_OR_RETURN(auto events, store::EventsAfter(tx, after, {"crl/published"}, WebhookDispatcher::kBatch));
      CF_RETURN_IF_ERROR(WebhookDispatcher::StopAtUncommitted(tx, after, now, events));
      std::vector<int64_t> out;
      for (const auto& e : events) out.push_back(e.id);
      return out;
    });
    EXPECT_TRUE(ids.ok()) << ids.error().message;
    return ids.ok() ? *ids : std::vector<int64_t>{};
  }

  std::unique_ptr<store::Store> store_;
};

TEST_P(WebhookCursorTest, DeliveryStopsBeforeAnIdNotCommittedYetUntilItCanOnlyHaveRolledBack) {
  for (int64_t id : {1, 2, 4, 5}) Event(id, kNow - 1000);
  EXPECT_EQ(Deliverable(0, kNow), (std::vector<int64_t>{1, 2})) << "3 may still commit";
  EXPECT_EQ(Deliverable(2, kNow), (std::vector<int64_t>{})) << "nothing past it";
  Event(3, kNow - 900);  // it commits
  EXPECT_EQ(Deliverable(2, kNow), (std::vector<int64_t>{3, 4, 5}));
  Event(7, kNow - 2 * WebhookDispatcher::kGapWaitMs);
  Event(8, kNow - 1000);
  EXPECT_EQ(Deliverable(5, kNow), (std::vector<int64_t>{7, 8}))
      << "6 is missing behind events older than any transaction: rolled back, passed";
  EXPECT_EQ(Deliverable(0, kNow + 2 * WebhookDispatcher::kGapWaitMs), (std::vector<int64_t>{1, 2, 3, 4, 5, 7, 8}));
}

INSTANTIATE_TEST_SUITE_P(Drivers, WebhookCursorTest, testing::kBothDialects, testing::DialectName);

}  // namespace
}  // namespace certfleet::events
