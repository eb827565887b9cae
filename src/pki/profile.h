#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/cert_type.h"
#include "core/result.h"
#include "pki/certificate.h"

namespace certfleet::pki {

using certfleet::CertType;
using certfleet::CertTypeName;
using certfleet::IsCa;
using certfleet::ParseCertType;

// What a server certificate authenticates: a TLS server (the server profile), a W4 host,
// which is also the TLS client of its agent's mutual TLS and of IAM Roles Anywhere, or a
// client only.
enum class ServerUsage { kServer, kHost, kClient };

// What the caller asks for; the profile decides the rest.
struct ProfileInput {
  CertType type = CertType::kServer;
  std::string fqdn;  // the subject CN (the device id's fqdn for devices), also a SAN for leaves
  // For devices provisioned under W2 and W4 hosts: `fqdn` is the device's or host's id (any
  // printable text up to 64 characters), its CN only; the DNS names are the sans.
  bool fqdn_is_id = false;
  std::vector<std::string> sans;
  std::string country;
  std::string state;
  std::string organization;
  int64_t not_before_millis = 0;
  int64_t not_after_millis = 0;
  ServerUsage usage = ServerUsage::kServer;  // server certificates only
  std::string crl_url;                       // for intermediates and leaves: the parent's CRL
  std::string ocsp_url;                      // for intermediates and leaves
};

struct ProfiledSpec {
  CertificateSpec spec;
  bool validity_clamped = false;  // notAfter was cut to the issuer's
};

// Builds the certificate spec of the type's profile and lints it before anything is
// signed: names (RFC 5280 lengths, DNS syntax, no control characters), country code,
// validity (positive, clamped to the issuer's), the subject key, and the issuer (a CA;
// an intermediate, whose pathLen is 0, signs leaves only). Refusals are kInvalidArgument
// with a message that names the field. `issuer` is null for a root.
Result<ProfiledSpec> ApplyProfile(const ProfileInput& input, EVP_PKEY* subject_key, X509* issuer);

// True if `name` is a DNS name certfleet issues for: 1 to 253 characters, labels of 1 to 63
// letters, digits and hyphens not at either end; a leftmost "*" label if `allow_wildcard`.
bool IsValidDnsName(std::string_view name, bool allow_wildcard = false);
// RFC 5280's ub-common-name: the most characters a certificate's CN may have.
inline constexpr size_t kMaxCommonName = 64;
// An IPv4 or IPv6 address in text form.
bool IsIpAddress(std::string_view text);

}  // namespace certfleet::pki
