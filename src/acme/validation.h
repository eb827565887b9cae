#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "acme/resolver.h"
#include "core/result.h"

namespace certfleet::acme {

// What a challenge proves control of: an identifier of an order (RFC 8555 9.7.7, RFC 8738).
struct Identifier {
  std::string type;   // "dns" or "ip"
  std::string value;  // a DNS name (a wildcard's without "*."), or an address as text
};

// Checks one challenge against the identifier's server or DNS: http-01 (RFC 8555 8.3),
// dns-01 (8.4) and tls-alpn-01 (RFC 8737). Thread-safe.
class Validator {
 public:
  struct Options {
    int http01_port = 80;      // acme.http01_port
    int tlsalpn01_port = 443;  // acme.tlsalpn01_port
    std::string resolver;      // acme.resolver: IPv4:port, empty for the system's
    // How long one attempt may wait on a connection or an answer: a client that does not answer
    // in ten seconds is retried by the validation job rather than held.
    std::chrono::seconds timeout{10};
  };
  static Result<Validator> Make(Options options);

  // Ok when the challenge is met. Otherwise a problem (Error::reason): kUnavailable when the
  // attempt could not complete (no connection, no DNS answer yet) and may be retried; any other
  // code when the answer was wrong (incorrectResponse, unauthorized, tls).
  // `may_reach` says which hosts an http-01 redirect may lead to (the order's profile allows
  // them); unset: the identifier's own only.
  using MayReach = std::function<bool(const Identifier&)>;
  Result<void> Validate(std::string_view type, const Identifier& identifier, std::string_view token,
                        std::string_view key_authorization, const MayReach& may_reach = nullptr) const;

 private:
  Validator(Options options, Resolver resolver) : options_(std::move(options)), resolver_(resolver) {}
  // The address to connect to: the identifier's own, or its first DNS address.
  Result<std::string> AddressOf(const Identifier& identifier) const;
  // Follows up to ten redirects (RFC 8555 8.3: SHOULD), as Let's Encrypt does: to http on
  // http01_port or https on tlsalpn01_port (80 and 443 in production; the certificate is not
  // checked, the key authorization is the proof), to hosts `may_reach` allows.
  Result<void> Http01(const Identifier& identifier, std::string_view token, std::string_view key_authorization,
                      const MayReach& may_reach) const;
  // One GET of an http-01 URL on `host`, connected to through the configured resolver.
  struct Fetched {
    long status = 0;
    std::string body;
    std::string location;  // of a redirect, absolute
  };
  Result<Fetched> Fetch(const std::string& url, const Identifier& host, int port) const;
  Result<void> Dns01(const Identifier& identifier, std::string_view key_authorization) const;
  Result<void> TlsAlpn01(const Identifier& identifier, std::string_view key_authorization) const;

  Options options_;
  Resolver resolver_;
};

// The challenge types offered for an identifier: dns-01 only for a wildcard (RFC 8555 7.1.3),
// no dns-01 for an address (RFC 8738 7).
std::vector<std::string_view> ChallengeTypesFor(const Identifier& identifier, bool wildcard);

// Canonical text of an address (RFC 8738 3: as inet_ntop writes it), nullopt if not one.
std::optional<std::string> CanonicalAddress(std::string_view text);

// The name a tls-alpn-01 client sends as SNI for an address (RFC 8738 6): its reverse-DNS name.
std::string ReverseName(std::string_view address);

}  // namespace certfleet::acme
