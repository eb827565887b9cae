// AcmeService's ACME Renewal Information (RFC 9773): renewalInfo windows and the `replaces`
// field of new orders.
#include <fmt/format.h>
#include <openssl/bn.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <boost/json.hpp>

#include "acme/acme_service.h"
#include "acme/problem.h"
#include "core/crypto.h"
#include "pki/certificate.h"
#include "pki/ossl.h"

namespace certfleet::acme {
namespace {

namespace json = boost::json;

// How often a client should ask again (the Retry-After of renewalInfo): six hours, as RFC 9773
// suggests, so that a revocation or a CA rotation is seen well before the window.
constexpr int kRetryAfterSeconds = 6 * 3600;
// A certificate that should go now gets a window that began this long ago and ends now.
constexpr int64_t kUrgentWindowMillis = int64_t{3600} * 1000;

Error NotFound() { return Problem(ErrorCode::kNotFound, "malformed", "no certificate with this identifier here"); }

}  // namespace

Result<AcmeService::Identified> AcmeService::IdentifyCertificate(std::string_view profile, std::string_view cert_id) {
  // base64url(AKI keyIdentifier) "." base64url(serial's DER content octets) (RFC 9773 4.1).
  const size_t dot = cert_id.find('.');
  if (dot == std::string_view::npos) return Problem(ErrorCode::kInvalidArgument, "malformed", "not a certificate id");
  const std::optional<std::string> aki = Base64UrlDecode(cert_id.substr(0, dot));
  const std::optional<std::string> serial_bytes = Base64UrlDecode(cert_id.substr(dot + 1));
  if (!aki || !serial_bytes || aki->empty() || serial_bytes->empty()) {
    return Problem(ErrorCode::kInvalidArgument, "malformed", "not a certificate id (RFC 9773 4.1)");
  }
  const std::optional<std::string> serial = pki::CanonicalSerial(HexEncode(*serial_bytes));
  if (!serial) return NotFound();
  CF_ASSIGN_OR_RETURN(auto order,
                      store::Read(store_, [&](store::Tx& tx) { return store::FindAcmeOrderBySerial(tx, *serial); }));
  if (!order || order->profile != profile) return NotFound();
  auto record = issuer_.Get(*serial);
  if (!record.ok()) return NotFound();
  CF_ASSIGN_OR_RETURN(pki::X509Ptr cert, pki::CertificateFromPem(record->certificate_pem));
  const ASN1_OCTET_STRING* key_id = X509_get0_authority_key_id(cert.get());
  if (key_id == nullptr || std::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(key_id)),
                                            static_cast<size_t>(ASN1_STRING_length(key_id))) != *aki) {
    return NotFound();
  }
  // The id as the certificate spells it: a client may write the serial with leading zero
  // octets, and every spelling of one certificate must count as one (an order replaces it once).
  pki::BignumPtr serial_bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert.get()), nullptr));
  if (!serial_bn) return pki::OpenSslError("reading a serial");
  std::string content(static_cast<size_t>(BN_num_bytes(serial_bn.get())), '\0');
  BN_bn2bin(serial_bn.get(), reinterpret_cast<unsigned char*>(content.data()));
  if (content.empty() || (static_cast<unsigned char>(content.front()) & 0x80) != 0) content.insert(0, 1, '\0');
  std::string id = Base64UrlEncode(*aki) + "." + Base64UrlEncode(content);
  return Identified{std::move(*order), std::move(*record), std::move(id)};
}

Result<AcmeAnswer> AcmeService::RenewalInfo(std::string_view profile, std::string_view cert_id) {
  CF_ASSIGN_OR_RETURN(Identified found, IdentifyCertificate(profile, cert_id));
  const store::CertificateRecord& cert = found.certificate;
  CF_ASSIGN_OR_RETURN(Profile current, FindProfile(profile));
  // Renew now when the certificate is revoked, its CA is, or the profile issues from another
  // CA (rotated); else in the last third of its life, ending a sixth before it expires.
  bool urgent = cert.status == store::CertStatus::kRevoked || current.ca != cert.parent_fqdn;
  if (!urgent && cert.issuer_serial) {
    auto parent = issuer_.Get(*cert.issuer_serial);
    urgent = !parent.ok() || parent->status == store::CertStatus::kRevoked;
  }
  const int64_t now = clock_.NowMillis();
  const int64_t life = cert.not_after - cert.not_before;
  const int64_t start = urgent ? now - kUrgentWindowMillis : cert.not_after - life / 3;
  const int64_t end = urgent ? now : cert.not_after - life / 6;
  AcmeAnswer answer;
  answer.body = {{"suggestedWindow", json::object{{"start", FormatRfc3339(start)}, {"end", FormatRfc3339(end)}}}};
  answer.retry_after = kRetryAfterSeconds;
  return answer;
}

Result<std::string> AcmeService::CheckReplaces(std::string_view profile, int64_t account_id, std::string_view cert_id,
                                               const json::array& identifiers) {
  auto found = IdentifyCertificate(profile, cert_id);
  if (!found.ok()) {
    return Problem(ErrorCode::kInvalidArgument, "malformed", fmt::format("replaces: {}", found.error().message));
  }
  if (found->order.account_id != account_id) {
    return Problem(ErrorCode::kPermissionDenied, "unauthorized", "replaces names another account's certificate");
  }
  // RFC 9773 section 5: a renewal shares at least one identifier with what it replaces.
  boost::system::error_code ec;
  const json::value before = json::parse(found->order.identifiers, ec);
  const bool shared =
      !ec && before.is_array() && std::any_of(identifiers.begin(), identifiers.end(), [&](const auto& id) {
        return std::find(before.as_array().begin(), before.as_array().end(), id) != before.as_array().end();
      });
  if (!shared) {
    return Problem(ErrorCode::kInvalidArgument, "malformed",
                   "replaces names a certificate that shares no identifier with this order");
  }
  CF_ASSIGN_OR_RETURN(bool replaced, store::Read(store_, [&](store::Tx& tx) {
                        return store::AcmeOrderReplaces(tx, found->id, clock_.NowMillis());
                      }));
  if (replaced) return AlreadyReplaced();
  return found->id;
}

}  // namespace certfleet::acme
