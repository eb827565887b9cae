#include "pki/ocsp.h"

#include <fmt/format.h>
#include <openssl/err.h>

#include "pki/certificate.h"

namespace certfleet::pki {
namespace {

using OcspBasicPtr = std::unique_ptr<OCSP_BASICRESP, Deleter<OCSP_BASICRESP_free>>;
using OcspResponsePtr = std::unique_ptr<OCSP_RESPONSE, Deleter<OCSP_RESPONSE_free>>;

}  // namespace

Result<OcspRequest> ParseOcspRequest(std::string_view der) {
  if (der.empty() || der.size() > kMaxOcspRequestBytes) {
    return MakeError(ErrorCode::kInvalidArgument, "the OCSP request is empty or too large");
  }
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  OcspRequest out;
  out.req.reset(d2i_OCSP_REQUEST(nullptr, &p, static_cast<long>(der.size())));
  if (!out.req) return OpenSslError("not an OCSP request", ErrorCode::kInvalidArgument);
  if (p != reinterpret_cast<const unsigned char*>(der.data() + der.size())) {
    return MakeError(ErrorCode::kInvalidArgument, "bytes follow the OCSP request");
  }
  const int n = OCSP_request_onereq_count(out.req.get());
  if (n <= 0) return MakeError(ErrorCode::kInvalidArgument, "the OCSP request asks about no certificate");
  // A nonce of 1 to 128 octets (RFC 9654 2.1: others are a malformed request). Its extnValue
  // is an OCTET STRING holding the nonce; a client that sent the bare nonce is measured so.
  if (const int at = OCSP_REQUEST_get_ext_by_NID(out.req.get(), NID_id_pkix_OCSP_Nonce, -1); at >= 0) {
    const ASN1_OCTET_STRING* value = X509_EXTENSION_get_data(OCSP_REQUEST_get_ext(out.req.get(), at));
    const unsigned char* inner = ASN1_STRING_get0_data(value);
    std::unique_ptr<ASN1_OCTET_STRING, Deleter<ASN1_OCTET_STRING_free>> nonce(
        d2i_ASN1_OCTET_STRING(nullptr, &inner, ASN1_STRING_length(value)));
    ERR_clear_error();
    const int length = nonce ? ASN1_STRING_length(nonce.get()) : ASN1_STRING_length(value);
    if (length < 1 || length > kMaxOcspNonceBytes) {
      return MakeError(ErrorCode::kInvalidArgument,
                       fmt::format("the OCSP nonce has {} octets, not 1 to {}", length, kMaxOcspNonceBytes));
    }
  }
  for (int i = 0; i < n; ++i) {
    OCSP_CERTID* id = OCSP_onereq_get0_id(OCSP_request_onereq_get0(out.req.get(), i));
    ASN1_OCTET_STRING* name_hash = nullptr;
    ASN1_OBJECT* md = nullptr;
    ASN1_OCTET_STRING* key_hash = nullptr;
    ASN1_INTEGER* serial = nullptr;
    if (OCSP_id_get0_info(&name_hash, &md, &key_hash, &serial, id) != 1) {
      return MakeError(ErrorCode::kInvalidArgument, "unreadable CertID");
    }
    OcspQuestion q;
    q.hash_nid = OBJ_obj2nid(md);
    q.issuer_name_hash.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(name_hash)),
                              static_cast<size_t>(ASN1_STRING_length(name_hash)));
    q.issuer_key_hash.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(key_hash)),
                             static_cast<size_t>(ASN1_STRING_length(key_hash)));
    q.serial_hex = SerialHex(serial);
    out.questions.push_back(std::move(q));
  }
  return out;
}

Result<std::string> BuildOcspResponse(const OcspRequest& request, X509* ca, EVP_PKEY* ca_key,
                                      const std::vector<OcspAnswer>& answers, int64_t this_update_millis,
                                      int64_t next_update_millis) {
  OcspBasicPtr basic(OCSP_BASICRESP_new());
  if (!basic) return OpenSslError("OCSP response");
  Asn1TimePtr this_update(ASN1_TIME_set(nullptr, static_cast<time_t>(this_update_millis / 1000)));
  Asn1TimePtr next_update(ASN1_TIME_set(nullptr, static_cast<time_t>(next_update_millis / 1000)));
  for (size_t i = 0; i < answers.size(); ++i) {
    OCSP_CERTID* id = OCSP_onereq_get0_id(OCSP_request_onereq_get0(request.req.get(), static_cast<int>(i)));
    const OcspAnswer& a = answers[i];
    const int status = a.status == OcspStatus::kGood      ? V_OCSP_CERTSTATUS_GOOD
                       : a.status == OcspStatus::kRevoked ? V_OCSP_CERTSTATUS_REVOKED
                                                          : V_OCSP_CERTSTATUS_UNKNOWN;
    Asn1TimePtr revoked(a.status == OcspStatus::kRevoked
                            ? ASN1_TIME_set(nullptr, static_cast<time_t>(a.revoked_at_millis / 1000))
                            : nullptr);
    // unspecified (0): no revocationReason, as in the CRL.
    const int reason = a.reason == 0 ? OCSP_REVOKED_STATUS_NOSTATUS : a.reason;
    if (!OCSP_basic_add1_status(basic.get(), id, status, reason, revoked.get(), this_update.get(), next_update.get())) {
      return OpenSslError("OCSP status");
    }
  }
  if (OCSP_copy_nonce(basic.get(), request.req.get()) <= 0) return OpenSslError("OCSP nonce");
  if (OCSP_basic_sign(basic.get(), ca, ca_key, SigningDigest(ca_key), nullptr, OCSP_NOCERTS) != 1) {
    return OpenSslError("signing OCSP");
  }
  OcspResponsePtr resp(OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, basic.get()));
  if (!resp) return OpenSslError("OCSP response");
  return I2d<i2d_OCSP_RESPONSE>(resp.get(), "the OCSP response");
}

std::optional<OcspTimes> OcspResponseTimes(std::string_view der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  OcspResponsePtr resp(d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(der.size())));
  if (!resp || OCSP_response_status(resp.get()) != OCSP_RESPONSE_STATUS_SUCCESSFUL) return std::nullopt;
  OcspBasicPtr basic(OCSP_response_get1_basic(resp.get()));
  OCSP_SINGLERESP* single = basic ? OCSP_resp_get0(basic.get(), 0) : nullptr;
  ASN1_GENERALIZEDTIME* this_update = nullptr;
  ASN1_GENERALIZEDTIME* next_update = nullptr;
  if (!single || OCSP_single_get0_status(single, nullptr, nullptr, &this_update, &next_update) < 0 || !this_update ||
      !next_update) {
    return std::nullopt;
  }
  OcspTimes out;
  out.this_update_millis = TimeMillis(this_update);
  out.next_update_millis = TimeMillis(next_update);
  out.has_nonce = OCSP_BASICRESP_get_ext_by_NID(basic.get(), NID_id_pkix_OCSP_Nonce, -1) >= 0;
  return out;
}

std::string OcspErrorResponse(int status) {
  OcspResponsePtr resp(OCSP_response_create(status, nullptr));
  if (!resp) return "";
  Result<std::string> der = I2d<i2d_OCSP_RESPONSE>(resp.get(), "the OCSP response");
  return der.ok() ? *der : "";
}

std::string IssuerKeyHash(X509* ca, int hash_nid) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  const EVP_MD* digest = EVP_get_digestbynid(hash_nid);
  if (!digest || X509_pubkey_digest(ca, digest, md, &len) != 1) return "";
  return std::string(reinterpret_cast<char*>(md), len);
}

std::string IssuerNameHash(X509* ca, int hash_nid) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  const EVP_MD* digest = EVP_get_digestbynid(hash_nid);
  if (!digest || X509_NAME_digest(X509_get_subject_name(ca), digest, md, &len) != 1) return "";
  return std::string(reinterpret_cast<char*>(md), len);
}

}  // namespace certfleet::pki
