#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "http/types.h"

namespace certfleet::http {

// Bearer tokens verified against the store in the last `ttl_ms`, so that a busy client does
// not cost a read of the token table per request. Entries are keyed by the SHA-256 of the
// whole bearer string: a wrong secret never matches. Revoking a token on this node clears
// the cache at once; another node stops accepting it within `ttl_ms`. Thread-safe.
class TokenCache {
 public:
  explicit TokenCache(int64_t ttl_ms) : ttl_ms_(ttl_ms) {}

  std::optional<Principal> Find(std::string_view bearer, int64_t now_ms);
  // How many times the cache was cleared: a lookup takes it before it reads the store and
  // hands it to Put, which keeps nothing if a Clear came in between (the token read as valid
  // may be the one just revoked).
  uint64_t Generation();
  void Put(std::string_view bearer, const Principal& principal, int64_t now_ms, uint64_t generation);
  void Clear();

 private:
  // Bounds memory when many distinct tokens are used at once; a full cache starts over.
  static constexpr size_t kMaxEntries = 10'000;

  struct Entry {
    Principal principal;
    int64_t verified_at_ms = 0;
  };
  const int64_t ttl_ms_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;  // by SHA-256 of the bearer
  uint64_t generation_ = 0;
};

}  // namespace certfleet::http
