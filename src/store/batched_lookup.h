#pragma once

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/result.h"
#include "core/thread_name.h"
#include "store/store.h"

namespace certfleet::store {

// Point lookups by key that many callers make at once, answered by one query per batch on a
// thread of the lookup's own: a caller is not held while the database answers (a request
// thread that waits for a round trip serves no one meanwhile), and N callers cost one round
// trip and one statement instead of N. The keys that come while a batch is being read form
// the next one, so a caller alone waits for no one. Thread-safe.
template <typename V>
class BatchedLookup {
 public:
  // Reads the rows of `keys` (distinct, at most max_batch) in one statement: what it finds,
  // by key. It runs with TxMode::kReadEach.
  using Fetch = std::function<Result<std::map<std::string, V>>(Tx&, const std::vector<std::string>&)>;
  // The key's value, nullopt when it has none; or the batch's error.
  using Done = std::function<void(Result<std::optional<V>>)>;
  // Runs each `done`: by default on the lookup's thread, which reads the next batch only once
  // they returned; an executor (the HTTP server's threads) for dones that do more than a little.
  // Dones posted to an executor that stopped (a server shut down) are dropped, unanswered.
  using Post = std::function<void(std::function<void()>)>;

  BatchedLookup(Store& store, Fetch fetch, Post post = nullptr, size_t max_batch = 256)
      : store_(store), fetch_(std::move(fetch)), post_(std::move(post)), max_batch_(max_batch) {
    thread_ = std::thread([this] {
      NameThisThread("cf-lookup");
      Loop();
    });
  }
  // Answers what is queued, then stops.
  ~BatchedLookup() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    work_.notify_one();
    thread_.join();
  }
  BatchedLookup(const BatchedLookup&) = delete;
  BatchedLookup& operator=(const BatchedLookup&) = delete;

  void Find(std::string key, Done done) {
    bool wake = false;
    {
      std::lock_guard lock(mu_);
      wake = queue_.empty();
      queue_.emplace_back(std::move(key), std::move(done));
    }
    if (wake) work_.notify_one();
  }

 private:
  void Loop() {
    std::unique_lock lock(mu_);
    for (;;) {
      work_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and nothing left
      std::vector<std::pair<std::string, Done>> batch;
      std::vector<std::string> keys;
      while (!queue_.empty() && keys.size() < max_batch_) {
        auto& [key, done] = queue_.front();
        if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(key);
        batch.emplace_back(std::move(key), std::move(done));
        queue_.pop_front();
      }
      lock.unlock();
      std::map<std::string, V> found;
      Result<void> read = store_.Transact(
          [&](Tx& tx) -> Result<void> {
            CF_ASSIGN_OR_RETURN(found, fetch_(tx, keys));
            return Ok();
          },
          TxMode::kReadEach);
      for (auto& [key, done] : batch) {
        Result<std::optional<V>> answer =
            read.ok() ? Result<std::optional<V>>(std::optional<V>()) : Result<std::optional<V>>(read.error());
        if (auto it = found.find(key); read.ok() && it != found.end()) answer = std::optional<V>(it->second);
        if (!post_) {
          done(std::move(answer));
          continue;
        }
        post_([done = std::move(done), answer = std::move(answer)]() mutable { done(std::move(answer)); });
      }
      lock.lock();
    }
  }

  Store& store_;
  const Fetch fetch_;
  const Post post_;
  const size_t max_batch_;
  std::mutex mu_;
  std::condition_variable work_;
  std::deque<std::pair<std::string, Done>> queue_;  // guarded by mu_
  bool stopping_ = false;                           // guarded by mu_
  std::thread thread_;
};

}  // namespace certfleet::store
