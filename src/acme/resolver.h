#pragma once

#include <netinet/in.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace certfleet::acme {

// Looks names up in the DNS for validation: through one server (acme.resolver), so that tests
// and split-horizon sites validate against the DNS they choose, or through the system's
// resolvers (/etc/resolv.conf). Thread-safe: every lookup has its own resolver state.
class Resolver {
 public:
  // `server`: "IPv4:port" (a port-53 server may omit ":53"); empty: the system's resolvers.
  static Result<Resolver> Make(std::string_view server);

  // The TXT records of `name`, each one's strings joined. kNotFound when the name or its TXT
  // records do not exist, kUnavailable when the DNS does not answer.
  Result<std::vector<std::string>> Txt(const std::string& name) const;
  // The IPv4 then IPv6 addresses of `name`, as text; errors as for Txt.
  Result<std::vector<std::string>> Addresses(const std::string& name) const;

 private:
  explicit Resolver(std::optional<sockaddr_in> server) : server_(server) {}
  // The answers of type `type` (ns_t_txt, ns_t_a, ns_t_aaaa) as their RDATA.
  Result<std::vector<std::string>> Query(const std::string& name, int type) const;

  std::optional<sockaddr_in> server_;
};

}  // namespace certfleet::acme
