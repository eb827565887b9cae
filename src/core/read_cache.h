#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace certfleet {

// What a node read from the store (a profile, say), kept by key so that a burst of requests
// reads it once. An entry is fresh for max_age_ms after its read, so that other nodes'
// changes are seen within that, unless the caller's count of the changes made on this node
// moved since the read began (seen at once), or the clock stepped back. Full, it starts again
// empty. Thread-safe.
template <typename V>
class ReadCache {
 public:
  ReadCache(int64_t max_age_ms, size_t max_entries) : max_age_ms_(max_age_ms), max_entries_(max_entries) {}

  std::optional<V> Find(std::string_view key, int64_t now, uint64_t changes) {
    std::lock_guard lock(mu_);
    auto it = entries_.find(key);
    if (it == entries_.end() || it->second.changes != changes || now < it->second.read_at ||
        now - it->second.read_at >= max_age_ms_) {
      return std::nullopt;
    }
    return it->second.value;
  }
  // `changes` as counted before the read began: a change made meanwhile leaves it stale.
  void Put(std::string_view key, V value, int64_t now, uint64_t changes) {
    std::lock_guard lock(mu_);
    if (entries_.size() >= max_entries_ && !entries_.contains(key)) entries_.clear();
    entries_.insert_or_assign(std::string(key), Entry{std::move(value), now, changes});
  }

 private:
  struct Entry {
    V value;
    int64_t read_at = 0;
    uint64_t changes = 0;
  };
  const int64_t max_age_ms_;
  const size_t max_entries_;
  std::mutex mu_;
  std::map<std::string, Entry, std::less<>> entries_;
};

}  // namespace certfleet
