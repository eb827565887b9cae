#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace certfleet::ca {

// The registrable domain of `fqdn` by the public suffix list (libpsl, the system's
// list, else libpsl's built-in one): "bbq.example.co.uk" -> "example.co.uk". nullopt if
// `fqdn` is a public suffix or has none. Thread-safe.
std::optional<std::string> RegistrableDomain(std::string_view fqdn);

// How many labels `fqdn` has below `domain` ("a.b.example.com" below "example.com": 2).
int LabelsBelow(std::string_view fqdn, std::string_view domain);

// The seed's default parent of a server certificate: the fqdn minus its first label when
// it has two or more labels below its registrable domain, else the registrable domain.
std::string DefaultServerParent(std::string_view fqdn, std::string_view registrable);

}  // namespace certfleet::ca
