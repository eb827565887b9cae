#include "pki/tls_identity.h"

#include <arpa/inet.h>

#include "pki/certificate.h"
#include "pki/key.h"

namespace certfleet::pki {
namespace {

bool IsIpAddress(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

bool IsDnsName(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  for (char c : s) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '*')) return false;
  }
  return true;
}

constexpr int64_t kDayMillis = 86'400'000;
constexpr int64_t kBackdateMillis = int64_t{5} * 60 * 1000;  // tolerate clients whose clock runs a little late

}  // namespace

Result<TlsIdentity> MakeTlsIdentity(const std::vector<std::string>& names, int64_t now_millis, int validity_days) {
  if (names.empty()) return MakeError(ErrorCode::kInvalidArgument, "the server certificate needs at least one name");
  CertificateSpec server;
  for (const auto& n : names) {
    if (IsIpAddress(n)) {
      server.ip_addresses.push_back(n);
    } else if (IsDnsName(n)) {
      server.dns_names.push_back(n);
    } else {
      return MakeError(ErrorCode::kInvalidArgument, "'" + n + "' is neither a DNS name nor an IP address");
    }
  }
  const int64_t not_before = now_millis - kBackdateMillis;
  const int64_t not_after = now_millis + validity_days * kDayMillis;

  CF_ASSIGN_OR_RETURN(PkeyPtr ca_key, GenerateKey(KeyType::kEcP256));
  CertificateSpec ca;
  ca.common_name = "certfleet local TLS CA";
  ca.organization = "certfleet";
  ca.is_ca = true;
  ca.path_len = 0;
  ca.not_before_millis = not_before;
  ca.not_after_millis = not_after;
  CF_ASSIGN_OR_RETURN(X509Ptr ca_cert, SignCertificate(ca, ca_key.get(), nullptr, ca_key.get()));

  CF_ASSIGN_OR_RETURN(PkeyPtr server_key, GenerateKey(KeyType::kEcP256));
  server.common_name = names.front();
  server.organization = "certfleet";
  server.server_auth = true;
  server.not_before_millis = not_before;
  server.not_after_millis = not_after;
  CF_ASSIGN_OR_RETURN(X509Ptr server_cert, SignCertificate(server, server_key.get(), ca_cert.get(), ca_key.get()));

  TlsIdentity out;
  CF_ASSIGN_OR_RETURN(out.ca_pem, CertificateToPem(ca_cert.get()));
  CF_ASSIGN_OR_RETURN(std::string server_pem, CertificateToPem(server_cert.get()));
  out.server_chain_pem = server_pem + out.ca_pem;
  CF_ASSIGN_OR_RETURN(out.server_key_pem, PrivateKeyToPem(server_key.get()));
  return out;
}

}  // namespace certfleet::pki
