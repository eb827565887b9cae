#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace certfleet {

// Small cryptographic helpers on OpenSSL's libcrypto. Thread-safe.

// `n` bytes from a cryptographically secure generator. Aborts if the generator fails:
// without randomness no token or serial may be made.
std::string RandomBytes(size_t n);
// `n` random bytes as base64url without padding.
std::string RandomToken(size_t n);
std::string HexEncode(std::string_view bytes);
std::string Base64UrlEncode(std::string_view bytes);
// Standard base64 with padding (RFC 4648 section 4).
std::string Base64Encode(std::string_view bytes);
// Decodes standard or URL-safe base64, padded or not; nullopt if `text` is not base64.
std::optional<std::string> Base64Decode(std::string_view text);
std::string Sha256(std::string_view data);     // 32 raw bytes
std::string Sha256Hex(std::string_view data);  // 64 lowercase hex chars
std::string Sha384(std::string_view data);     // 48 raw bytes
// 32 raw bytes. Aborts if OpenSSL fails, as RandomBytes does.
std::string HmacSha256(std::string_view key, std::string_view data);
// Compares in time that depends only on the lengths.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

// Seals a small secret the service must use again later (a ZIP password) with AES-256-GCM
// under a key derived from the master key and `purpose`, so that the database alone does
// not reveal it. The result is text: "v1." and base64url of nonce, ciphertext and tag.
std::string SealSecret(std::string_view master_key, std::string_view purpose, std::string_view plaintext);
// The plaintext, or nullopt if `sealed` was not sealed with this master key and purpose
// or was changed.
std::optional<std::string> OpenSecret(std::string_view master_key, std::string_view purpose, std::string_view sealed);

}  // namespace certfleet
