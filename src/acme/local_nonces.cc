#include "acme/local_nonces.h"

#include "acme/jws.h"
#include "core/crypto.h"

namespace certfleet::acme {
namespace {

constexpr size_t kKeyBytes = 32;
constexpr size_t kMacBytes = 16;   // a truncated HMAC-SHA256: 128 bits cannot be forged
constexpr size_t kBodyBytes = 16;  // the counter and the expiry, 8 bytes each

void PutInt(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

uint64_t GetInt(std::string_view in) {
  uint64_t v = 0;
  for (char c : in.substr(0, 8)) v = (v << 8) | static_cast<uint8_t>(c);
  return v;
}

}  // namespace

LocalNonces::LocalNonces() : key_(RandomBytes(kKeyBytes)), used_(kWindow / 64, 0) {}

std::string LocalNonces::Make(int64_t expires_at) {
  uint64_t counter = 0;
  {
    std::lock_guard lock(mu_);
    counter = next_++;
    used_[(counter % kWindow) / 64] &= ~(uint64_t{1} << (counter % 64));  // the slot's previous counter is out
  }
  std::string body;
  PutInt(body, counter);
  PutInt(body, static_cast<uint64_t>(expires_at));
  return Base64UrlEncode(body + HmacSha256(key_, body).substr(0, kMacBytes));
}

bool LocalNonces::Use(std::string_view nonce, int64_t now) {
  const std::optional<std::string> raw = Base64UrlDecode(nonce);
  if (!raw || raw->size() != kBodyBytes + kMacBytes) return false;
  const std::string_view body = std::string_view(*raw).substr(0, kBodyBytes);
  if (!ConstantTimeEquals(raw->substr(kBodyBytes), HmacSha256(key_, body).substr(0, kMacBytes))) return false;
  const uint64_t counter = GetInt(body);
  if (static_cast<int64_t>(GetInt(body.substr(8))) <= now) return false;
  std::lock_guard lock(mu_);
  if (counter >= next_ || next_ - counter > kWindow) return false;  // not made yet, or out of the window
  uint64_t& word = used_[(counter % kWindow) / 64];
  const uint64_t bit = uint64_t{1} << (counter % 64);
  if ((word & bit) != 0) return false;
  word |= bit;
  return true;
}

}  // namespace certfleet::acme
