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
  void Put(std::string_view bearer, const Principal& principal, int64_t now_ms);
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
};

}  // namespace certfleet::http
