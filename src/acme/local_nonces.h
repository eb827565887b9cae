#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace certfleet::acme {

// The nonces of a certfleet on the embedded store, which is one node: each is a counter and its
// expiry, MACed with a key made when the process starts (so nonces die with it, and none can
// be replayed after a restart), used at most once. Used counters are remembered in a bitmap of
// the last kWindow counters made; an older nonce is badNonce and the client takes a fresh one.
// Nothing is written to the store. Thread-safe.
class LocalNonces {
 public:
  // Counters remembered: 4 Mi (512 KiB) covers over half an hour of nonces at 2,000 answers a
  // second, far longer than a client holds one.
  static constexpr uint64_t kWindow = uint64_t{1} << 22;

  LocalNonces();
  std::string Make(int64_t expires_at);
  // True the first time a nonce made here and unexpired at `now` is used.
  bool Use(std::string_view nonce, int64_t now);

 private:
  const std::string key_;
  std::mutex mu_;
  uint64_t next_ = 1;           // the next counter
  std::vector<uint64_t> used_;  // bit (counter % kWindow) set once the counter is used
};

}  // namespace certfleet::acme
