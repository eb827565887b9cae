#include "store/batched_lookup.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "testing/db.h"

namespace certfleet::store {
namespace {

class BatchedLookupTest : public ::testing::TestWithParam<Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam());
    ASSERT_NE(store_, nullptr);
    ASSERT_TRUE(store_->Exec("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT NOT NULL)").ok());
    for (int i = 0; i < 100; ++i) {
      ASSERT_TRUE(
          store_->Exec("INSERT INTO kv (k, v) VALUES (?, ?)", {"k" + std::to_string(i), "v" + std::to_string(i)}).ok());
    }
  }
  // Reads the keys in one statement, counting statements and the keys asked for.
  BatchedLookup<std::string>::Fetch Fetch() {
    return [this](Tx& tx, const std::vector<std::string>& keys) -> Result<std::map<std::string, std::string>> {
      ++statements_;
      keys_asked_ += static_cast<int>(keys.size());
      if (fail_) return MakeError(ErrorCode::kUnavailable, "the database is away");
      Params params;
      const std::string in = InValues(tx, "k", keys, params);
      CF_ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT k, v FROM kv WHERE " + in, params));
      std::map<std::string, std::string> out;
      for (const auto& r : rows) out[r.Text(0)] = r.Text(1);
      return out;
    };
  }
  static std::future<Result<std::optional<std::string>>> Find(BatchedLookup<std::string>& lookup, std::string key) {
    auto promise = std::make_shared<std::promise<Result<std::optional<std::string>>>>();
    auto future = promise->get_future();
    lookup.Find(std::move(key), [promise](Result<std::optional<std::string>> r) { promise->set_value(std::move(r)); });
    return future;
  }

  std::unique_ptr<Store> store_;
  std::atomic<int> statements_{0};
  std::atomic<int> keys_asked_{0};
  std::atomic<bool> fail_{false};
};

TEST_P(BatchedLookupTest, EachCallerGetsItsKeysValueOrNothing) {
  BatchedLookup<std::string> lookup(*store_, Fetch());
  auto found = Find(lookup, "k7");
  auto missing = Find(lookup, "nobody");
  Result<std::optional<std::string>> f = found.get();
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(f->value_or(""), "v7");
  Result<std::optional<std::string>> m = missing.get();
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(m->has_value());
}

TEST_P(BatchedLookupTest, CallersAtOnceShareStatementsAndAKeyIsAskedOncePerBatch) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  // The first batch's dones wait on the thread (no Post): what is asked meanwhile queues up
  // and is read as one batch.
  BatchedLookup<std::string> lookup(*store_, Fetch());
  std::promise<void> first_done;
  lookup.Find("k0", [&](Result<std::optional<std::string>>) {
    first_done.set_value();
    released.wait();
  });
  first_done.get_future().wait();
  std::vector<std::future<Result<std::optional<std::string>>>> answers;
  for (int i = 0; i < 50; ++i) answers.push_back(Find(lookup, "k" + std::to_string(i % 25)));
  release.set_value();
  for (int i = 0; i < 50; ++i) {
    Result<std::optional<std::string>> r = answers[i].get();
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->value_or(""), "v" + std::to_string(i % 25));
  }
  EXPECT_EQ(statements_, 2) << "one for the first key, one for the fifty that came while it was answered";
  EXPECT_EQ(keys_asked_, 1 + 25) << "each key once per batch";
}

TEST_P(BatchedLookupTest, ABatchsErrorIsEachCallersAndDonesRunWherePostSays) {
  std::atomic<int> posted{0};
  BatchedLookup<std::string> lookup(*store_, Fetch(), [&](std::function<void()> fn) {
    ++posted;
    std::thread(std::move(fn)).detach();
  });
  fail_ = true;
  Result<std::optional<std::string>> r = Find(lookup, "k1").get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  fail_ = false;
  EXPECT_EQ(Find(lookup, "k1").get()->value_or(""), "v1") << "the next batch reads again";
  EXPECT_EQ(posted, 2);
}

TEST_P(BatchedLookupTest, WhatIsQueuedIsAnsweredBeforeItStops) {
  std::vector<std::future<Result<std::optional<std::string>>>> answers;
  {
    BatchedLookup<std::string> lookup(*store_, Fetch());
    for (int i = 0; i < 20; ++i) answers.push_back(Find(lookup, "k" + std::to_string(i)));
  }
  for (auto& a : answers) EXPECT_TRUE(a.get().ok());
}

INSTANTIATE_TEST_SUITE_P(Drivers, BatchedLookupTest, testing::kBothDialects, testing::DialectName);

}  // namespace
}  // namespace certfleet::store
