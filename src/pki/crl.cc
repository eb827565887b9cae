#include "pki/crl.h"

#include <fmt/format.h>
#include <openssl/x509v3.h>

#include "pki/certificate.h"

namespace certfleet::pki {
namespace {

constexpr std::string_view kReasons[] = {
    "unspecified",   "keyCompromise",        "cACompromise",    "affiliationChanged",
    "superseded",    "cessationOfOperation", "certificateHold", "",
    "removeFromCRL", "privilegeWithdrawn",   "aACompromise"};

Result<Asn1IntegerPtr> SerialFromHex(const std::string& hex) {
  BIGNUM* raw = nullptr;
  if (BN_hex2bn(&raw, hex.c_str()) == 0) return MakeError(ErrorCode::kInvalidArgument, "bad serial " + hex);
  BignumPtr bn(raw);
  Asn1IntegerPtr out(BN_to_ASN1_INTEGER(bn.get(), nullptr));
  if (!out) return OpenSslError("serial");
  return out;
}

}  // namespace

Result<int> ParseRevocationReason(std::string_view name) {
  if (name == kReasons[CRL_REASON_REMOVE_FROM_CRL]) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "removeFromCRL belongs in delta CRLs only (RFC 5280 5.3.1); certfleet publishes full CRLs, "
                     "and a certificate left off them is valid again");
  }
  if (name == kReasons[CRL_REASON_CERTIFICATE_HOLD]) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "certificateHold is not supported: revocations are final (revoke, then issue a new "
                     "certificate when the subject is trusted again)");
  }
  for (int i = 0; i < static_cast<int>(std::size(kReasons)); ++i) {
    if (!kReasons[i].empty() && kReasons[i] == name) return i;
  }
  return MakeError(ErrorCode::kInvalidArgument,
                   fmt::format("unknown reason '{}' (use an RFC 5280 name such as keyCompromise, superseded, "
                               "cessationOfOperation, affiliationChanged, unspecified)",
                               name));
}

std::string_view RevocationReasonName(int code) {
  return code >= 0 && code < static_cast<int>(std::size(kReasons)) ? kReasons[code] : "unspecified";
}

Result<std::string> BuildCrl(X509* ca, EVP_PKEY* ca_key, const std::vector<RevokedEntry>& entries, int64_t crl_number,
                             int64_t this_update_millis, int64_t next_update_millis) {
  X509CrlPtr crl(X509_CRL_new());
  if (!crl || X509_CRL_set_version(crl.get(), X509_CRL_VERSION_2) != 1 ||
      X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(ca)) != 1) {
    return OpenSslError("CRL");
  }
  Asn1TimePtr last(ASN1_TIME_set(nullptr, static_cast<time_t>(this_update_millis / 1000)));
  Asn1TimePtr next(ASN1_TIME_set(nullptr, static_cast<time_t>(next_update_millis / 1000)));
  if (!last || !next || X509_CRL_set1_lastUpdate(crl.get(), last.get()) != 1 ||
      X509_CRL_set1_nextUpdate(crl.get(), next.get()) != 1) {
    return OpenSslError("CRL times");
  }
  for (const auto& e : entries) {
    X509_REVOKED* rev = X509_REVOKED_new();
    CF_ASSIGN_OR_RETURN(Asn1IntegerPtr serial, SerialFromHex(e.serial_hex));
    Asn1TimePtr when(ASN1_TIME_set(nullptr, static_cast<time_t>(e.revoked_at_millis / 1000)));
    ASN1_ENUMERATED* reason = ASN1_ENUMERATED_new();
    // unspecified (0) is said by leaving the reasonCode out (RFC 5280 5.3.1).
    bool ok = rev && when && reason && X509_REVOKED_set_serialNumber(rev, serial.get()) == 1 &&
              X509_REVOKED_set_revocationDate(rev, when.get()) == 1 &&
              (e.reason == 0 || (ASN1_ENUMERATED_set(reason, e.reason) == 1 &&
                                 X509_REVOKED_add1_ext_i2d(rev, NID_crl_reason, reason, 0, 0) == 1));
    ASN1_ENUMERATED_free(reason);
    if (!ok || X509_CRL_add0_revoked(crl.get(), rev) != 1) {
      X509_REVOKED_free(rev);
      return OpenSslError("CRL entry " + e.serial_hex);
    }
  }
  X509_CRL_sort(crl.get());

  Asn1IntegerPtr number(ASN1_INTEGER_new());
  if (!number || ASN1_INTEGER_set_int64(number.get(), crl_number) != 1 ||
      X509_CRL_add1_ext_i2d(crl.get(), NID_crl_number, number.get(), 0, 0) != 1) {
    return OpenSslError("CRL number");
  }
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, ca, nullptr, nullptr, crl.get(), 0);
  X509ExtPtr aki(X509V3_EXT_conf_nid(nullptr, &ctx, NID_authority_key_identifier, "keyid:always"));
  if (!aki || X509_CRL_add_ext(crl.get(), aki.get(), -1) != 1) return OpenSslError("CRL AKI");

  if (X509_CRL_sign(crl.get(), ca_key, SigningDigest(ca_key)) <= 0) return OpenSslError("signing CRL");
  return I2d<i2d_X509_CRL>(crl.get(), "the CRL");
}

}  // namespace certfleet::pki
