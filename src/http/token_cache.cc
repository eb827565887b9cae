#include "http/token_cache.h"

#include "core/crypto.h"

namespace certfleet::http {

std::optional<Principal> TokenCache::Find(std::string_view bearer, int64_t now_ms) {
  if (ttl_ms_ <= 0) return std::nullopt;
  const std::string key = Sha256(bearer);
  std::lock_guard lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  if (now_ms - it->second.verified_at_ms >= ttl_ms_ || now_ms < it->second.verified_at_ms) {
    entries_.erase(it);
    return std::nullopt;
  }
  return it->second.principal;
}

uint64_t TokenCache::Generation() {
  std::lock_guard lock(mu_);
  return generation_;
}

void TokenCache::Put(std::string_view bearer, const Principal& principal, int64_t now_ms, uint64_t generation) {
  if (ttl_ms_ <= 0) return;
  std::string key = Sha256(bearer);
  std::lock_guard lock(mu_);
  if (generation != generation_) return;
  if (entries_.size() >= kMaxEntries) entries_.clear();
  entries_[std::move(key)] = Entry{principal, now_ms};
}

void TokenCache::Clear() {
  std::lock_guard lock(mu_);
  entries_.clear();
  ++generation_;
}

}  // namespace certfleet::http
