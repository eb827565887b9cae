#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "core/result.h"

namespace certfleet::store {

// A bounded pool of database connections, made on demand. Thread-safe.
template <typename Conn>
class Pool {
 public:
  using Factory = std::function<Result<std::unique_ptr<Conn>>()>;

  // Returns its connection to the pool on destruction.
  class Lease {
   public:
    Lease(Pool* pool, std::unique_ptr<Conn> conn) : pool_(pool), conn_(std::move(conn)) {}
    Lease(Lease&&) noexcept = default;
    ~Lease() {
      if (conn_) pool_->Release(std::move(conn_));
    }
    Conn* operator->() { return conn_.get(); }
    Conn& operator*() { return *conn_; }
    // Drops a connection that is broken instead of returning it.
    void Discard() {
      conn_.reset();
      pool_->Forget();
    }

   private:
    Pool* pool_;
    std::unique_ptr<Conn> conn_;
  };

  Pool(int max_size, Factory factory) : max_size_(max_size), factory_(std::move(factory)) {}

  Result<Lease> Acquire() {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, kAcquireTimeout, [&] { return !idle_.empty() || open_ < max_size_; })) {
      return MakeError(ErrorCode::kUnavailable, "no database connection free within 30 s (raise db_pool_size?)");
    }
    if (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      return Lease(this, std::move(c));
    }
    ++open_;
    lock.unlock();
    auto made = factory_();
    if (!made.ok()) {
      Forget();
      return made.error();
    }
    return Lease(this, std::move(made).value());
  }

  // Closes the idle connections: after one was found broken (the server restarted or failed
  // over), the others opened before are most likely broken too, and trying each in turn
  // would use up a caller's attempts.
  void DropIdle() {
    std::vector<std::unique_ptr<Conn>> dropped;
    {
      std::lock_guard lock(mu_);
      dropped.swap(idle_);
      open_ -= static_cast<int>(dropped.size());
    }
    cv_.notify_all();
  }

 private:
  // Long enough to ride out a burst, short enough that a stuck pool shows up as errors.
  static constexpr std::chrono::seconds kAcquireTimeout{30};

  void Release(std::unique_ptr<Conn> c) {
    {
      std::lock_guard lock(mu_);
      idle_.push_back(std::move(c));
    }
    cv_.notify_one();
  }
  void Forget() {
    {
      std::lock_guard lock(mu_);
      --open_;
    }
    cv_.notify_one();
  }

  const int max_size_;
  Factory factory_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Conn>> idle_;
  int open_ = 0;
};

}  // namespace certfleet::store
