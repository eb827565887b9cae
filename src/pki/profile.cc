#include "pki/profile.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>
#include <ctime>

#include "pki/certificate.h"
#include "pki/csr.h"

namespace certfleet::pki {
namespace {

// RFC 5280 upper bounds (ub-common-name, ub-organization-name, ub-state-name).
constexpr size_t kMaxOrganization = 64;
constexpr size_t kMaxState = 128;
constexpr size_t kMaxDnsName = 253;
constexpr size_t kMaxLabel = 63;
constexpr size_t kMaxSans = 100;  // keeps certificates a sane size

Result<void> CheckText(std::string_view field, const std::string& value, size_t max_len) {
  if (value.size() > max_len) {
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("{} is longer than {} characters", field, max_len));
  }
  for (unsigned char c : value) {
    if (c < 0x20 || c == 0x7f) {
      return MakeError(ErrorCode::kInvalidArgument, fmt::format("{} contains control characters", field));
    }
  }
  return Ok();
}

}  // namespace

bool IsValidDnsName(std::string_view name, bool allow_wildcard) {
  if (name.empty() || name.size() > kMaxDnsName) return false;
  size_t start = 0;
  bool first = true;
  while (start <= name.size()) {
    size_t end = name.find('.', start);
    if (end == std::string_view::npos) end = name.size();
    std::string_view label = name.substr(start, end - start);
    if (label.empty() || label.size() > kMaxLabel) return false;
    if (!(first && allow_wildcard && label == "*")) {
      if (label.front() == '-' || label.back() == '-') return false;
      for (char c : label) {
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-')) return false;
      }
    }
    first = false;
    start = end + 1;
  }
  // A wildcard covers names under a registered domain: never every name (`*`) nor a whole
  // top-level domain (`*.com`).
  if (name.starts_with("*") && std::count(name.begin(), name.end(), '.') < 2) return false;
  return name.back() != '.';
}

bool IsIpAddress(std::string_view text) {
  const std::string s(text);
  unsigned char addr[16];
  return inet_pton(AF_INET, s.c_str(), addr) == 1 || inet_pton(AF_INET6, s.c_str(), addr) == 1;
}

Result<ProfiledSpec> ApplyProfile(const ProfileInput& in, EVP_PKEY* subject_key, X509* issuer) {
  ProfiledSpec out;
  CertificateSpec& s = out.spec;

  if (in.fqdn.empty()) return MakeError(ErrorCode::kInvalidArgument, "fqdn is required");
  if (in.fqdn_is_id && in.type != CertType::kDevice &&
      (in.type != CertType::kServer || in.usage == ServerUsage::kServer)) {
    return MakeError(ErrorCode::kInvalidArgument, "only device and host certificates are named by an id");
  }
  CF_RETURN_IF_ERROR(CheckText("fqdn", in.fqdn, in.fqdn_is_id ? kMaxCommonName : kMaxDnsName));
  // A server may be named by its address (RFC 8738) or a wildcard, as ACME orders name them.
  const bool server = in.type == CertType::kServer;
  const bool named_by_address = !in.fqdn_is_id && server && IsIpAddress(in.fqdn);
  if (!in.fqdn_is_id && !named_by_address && !IsValidDnsName(in.fqdn, /*allow_wildcard=*/server)) {
    return MakeError(
        ErrorCode::kInvalidArgument,
        fmt::format("fqdn '{}' is not a valid DNS name (labels of 1 to 63 letters, digits and hyphens)", in.fqdn));
  }
  if (in.fqdn.size() > kMaxCommonName) {
    return MakeError(
        ErrorCode::kInvalidArgument,
        fmt::format("fqdn '{}' is longer than the {} characters a common name may have", in.fqdn, kMaxCommonName));
  }
  CF_RETURN_IF_ERROR(CheckText("organization", in.organization, kMaxOrganization));
  CF_RETURN_IF_ERROR(CheckText("state", in.state, kMaxState));
  if (!in.country.empty() && (in.country.size() != 2 || !std::isupper(static_cast<unsigned char>(in.country[0])) ||
                              !std::isupper(static_cast<unsigned char>(in.country[1])))) {
    return MakeError(ErrorCode::kInvalidArgument, "country must be two capital letters (ISO 3166), e.g. SE");
  }
  if (in.sans.size() > kMaxSans) {
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("at most {} sans", kMaxSans));
  }
  CF_RETURN_IF_ERROR(LintPublicKey(subject_key));

  s.common_name = in.fqdn;
  s.organization = in.organization;
  s.country = in.country;
  s.state = in.state;
  s.not_before_millis = in.not_before_millis;
  s.not_after_millis = in.not_after_millis;
  if (s.not_after_millis <= s.not_before_millis) {
    return MakeError(ErrorCode::kInvalidArgument, "the validity must be at least one day");
  }

  if (in.type == CertType::kRoot) {
    if (issuer) return MakeError(ErrorCode::kInvalidArgument, "a root has no parent");
    s.is_ca = true;
    return out;
  }
  if (!issuer) return MakeError(ErrorCode::kInvalidArgument, "only a root is self-signed; this type needs a parent");
  if (X509_check_ca(issuer) <= 0) {
    return MakeError(ErrorCode::kInvalidArgument, "the parent is a leaf certificate and cannot sign");
  }
  const long issuer_path_len = X509_get_pathlen(issuer);
  if (in.type == CertType::kIntermediate && issuer_path_len == 0) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "the parent is an intermediate (pathLen 0): it signs server and device certificates only");
  }
  const int64_t issuer_not_before = TimeMillis(X509_get0_notBefore(issuer));
  const int64_t issuer_not_after = TimeMillis(X509_get0_notAfter(issuer));
  if (s.not_before_millis < issuer_not_before) s.not_before_millis = issuer_not_before;
  if (s.not_after_millis > issuer_not_after) {
    s.not_after_millis = issuer_not_after;
    out.validity_clamped = true;
  }
  if (s.not_after_millis <= s.not_before_millis) {
    return MakeError(ErrorCode::kInvalidArgument, "the parent's validity has ended");
  }
  s.crl_url = in.crl_url;
  s.ocsp_url = in.ocsp_url;

  if (in.type == CertType::kIntermediate) {
    s.is_ca = true;
    s.path_len = 0;
    return out;
  }
  if (named_by_address) {
    s.ip_addresses.push_back(in.fqdn);
  } else if (!in.fqdn_is_id) {
    s.dns_names.push_back(in.fqdn);
  }
  for (const auto& san : in.sans) {
    CF_RETURN_IF_ERROR(CheckText("sans", san, kMaxDnsName));
    // A server's address, as an IP name rather than a DNS name that looks like one.
    if (server && IsIpAddress(san)) {
      if (san != in.fqdn) s.ip_addresses.push_back(san);
      continue;
    }
    if (IsIpAddress(san)) {  // `10.0.0.5` reads as a DNS name too, but is none (RFC 1123 2.1)
      return MakeError(ErrorCode::kInvalidArgument,
                       fmt::format("san '{}' is an IP address: only server certificates name addresses", san));
    }
    if (!IsValidDnsName(san, /*allow_wildcard=*/in.type == CertType::kServer)) {
      return MakeError(ErrorCode::kInvalidArgument, fmt::format("san '{}' is not a valid DNS name", san));
    }
    if (in.fqdn_is_id || san != in.fqdn) s.dns_names.push_back(san);
  }
  s.server_auth = server && in.usage != ServerUsage::kClient;
  s.client_auth = in.type == CertType::kDevice || (server && in.usage != ServerUsage::kServer);
  return out;
}

}  // namespace certfleet::pki
