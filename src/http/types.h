#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "store/tokens_repo.h"

namespace certfleet::http {

// A verified TLS client certificate.
struct ClientCert {
  std::string subject;             // RFC 2253
  std::string sha256_fingerprint;  // hex
  std::string serial;              // lowercase hex without leading zeros, as the inventory writes it
};

// What the TLS client sent, unverified: its certificate and the chain it sent with it (DER,
// the client's own first), and the channel binding of the connection (RFC 5929 tls-unique
// on TLS 1.2, RFC 9266 tls-exporter on TLS 1.3), for protocols that check these themselves.
struct PeerTls {
  std::vector<std::string> certificates;
  std::string channel_binding;
  bool tls13 = false;
};

// Who is calling: set by the router before a handler runs.
struct Principal {
  bool authenticated = false;
  std::string token_id;
  std::string token_name;
  store::Role role = store::Role::kReader;
  // How the audit log names this caller.
  std::string Actor() const { return authenticated ? "token:" + token_id : "anonymous"; }
};

// An HTTP request as handlers see it: plain types, no Beast.
struct Request {
  std::string method;
  std::string path;                          // percent-decoded, without the query
  std::string raw_path;                      // as sent (origin-form): routes match its segments, each decoded alone
  std::map<std::string, std::string> query;  // percent-decoded; a repeated key keeps its last value
  std::vector<std::pair<std::string, std::string>> headers;  // names lowercased
  std::string body;
  std::map<std::string, std::string> params;  // from {name} segments of the route
  std::string request_id;
  std::string remote_address;
  std::optional<ClientCert> client_cert;
  std::shared_ptr<const PeerTls> peer;  // the connection's; null on plain connections (tests)
  Principal principal;

  std::optional<std::string_view> Header(std::string_view lowercase_name) const;
  // Sets path, raw_path and query from a request-target in origin-form (`/p?q`) or
  // absolute-form (`https://host/p?q`, RFC 9112 3.2.2: its authority is not the path's).
  void SetTarget(std::string_view target);
  // The token of `Authorization: Bearer <token>`; nullopt when there is none.
  std::optional<std::string_view> BearerToken() const;
  // The user and password of `Authorization: Basic …` (RFC 7617); nullopt when there is none
  // or it is malformed.
  std::optional<std::pair<std::string, std::string>> BasicCredentials() const;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

}  // namespace certfleet::http
