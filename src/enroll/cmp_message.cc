#include "enroll/cmp_message.h"

#include <fmt/format.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include "pki/certificate.h"
#include "pki/der.h"
#include "pki/ossl.h"

namespace certfleet::enroll::cmp {
namespace {

using pki::DerElement;
using pki::DerReader;

constexpr uint8_t kContext(int n) { return static_cast<uint8_t>(0xa0 + n); }  // [n] constructed

Error Invalid(std::string message) { return MakeError(ErrorCode::kInvalidArgument, std::move(message)); }

// The NID of the OID an AlgorithmIdentifier starts with.
int AlgorithmNid(const DerElement& algorithm) {
  DerReader reader(algorithm.contents);
  Result<DerElement> oid = reader.Next(pki::kDerOid, "algorithm");
  if (!oid.ok()) return NID_undef;
  const auto* p = reinterpret_cast<const unsigned char*>(oid->encoding.data());
  ASN1_OBJECT* obj = d2i_ASN1_OBJECT(nullptr, &p, static_cast<long>(oid->encoding.size()));
  const int nid = obj ? OBJ_obj2nid(obj) : NID_undef;
  ASN1_OBJECT_free(obj);
  return nid;
}

// The iterationCount of a PasswordBasedMac AlgorithmIdentifier's PBMParameter (RFC 4211 4.4:
// salt, owf, iterationCount, mac); INT64_MAX for one too long to hold.
Result<int64_t> PbmIterations(const DerElement& algorithm) {
  DerReader reader(algorithm.contents);
  CF_RETURN_IF_ERROR(reader.Next(pki::kDerOid, "algorithm"));
  CF_ASSIGN_OR_RETURN(DerElement params, reader.Next(pki::kDerSequence, "PBMParameter"));
  DerReader fields(params.contents);
  CF_RETURN_IF_ERROR(fields.Next(pki::kDerOctetString, "salt"));
  CF_RETURN_IF_ERROR(fields.Next(pki::kDerSequence, "owf"));
  CF_ASSIGN_OR_RETURN(DerElement count, fields.Next(pki::kDerInteger, "iterationCount"));
  std::string_view magnitude = count.contents;
  while (magnitude.size() > 1 && magnitude.front() == '\0') magnitude.remove_prefix(1);
  if (magnitude.empty() || (static_cast<uint8_t>(magnitude.front()) & 0x80) != 0) {
    return Invalid("the PasswordBasedMac's iterationCount is not a positive INTEGER");
  }
  if (magnitude.size() > sizeof(int64_t) - 1) return INT64_MAX;
  int64_t value = 0;
  for (const char byte : magnitude) value = (value << 8) | static_cast<uint8_t>(byte);
  return value;
}

Result<void> ReadHeader(std::string_view header, Request& out) {
  DerReader fields(header);
  CF_RETURN_IF_ERROR(fields.Next(pki::kDerInteger, "pvno"));
  CF_RETURN_IF_ERROR(fields.NextAny("sender"));
  CF_RETURN_IF_ERROR(fields.NextAny("recipient"));
  while (!fields.done()) {
    CF_ASSIGN_OR_RETURN(DerElement field, fields.NextAny("header field"));
    DerReader inner(field.contents);
    if (field.tag == kContext(0)) {
      CF_ASSIGN_OR_RETURN(DerElement time, inner.Next(pki::kDerGeneralizedTime, "messageTime"));
      const auto* p = reinterpret_cast<const unsigned char*>(time.encoding.data());
      ASN1_GENERALIZEDTIME* parsed = d2i_ASN1_GENERALIZEDTIME(nullptr, &p, static_cast<long>(time.encoding.size()));
      const int64_t millis = parsed ? pki::TimeMillis(parsed) : 0;
      ASN1_GENERALIZEDTIME_free(parsed);
      if (millis == 0) return Invalid("the messageTime is not a GeneralizedTime");
      out.message_time = millis;
    } else if (field.tag == kContext(1)) {
      CF_ASSIGN_OR_RETURN(DerElement alg, inner.Next(pki::kDerSequence, "protectionAlg"));
      const int nid = AlgorithmNid(alg);
      out.mac_protected = nid == NID_id_PasswordBasedMAC || nid == NID_pbmac1;
      if (nid == NID_id_PasswordBasedMAC) {
        CF_ASSIGN_OR_RETURN(out.pbm_iterations, PbmIterations(alg));
        if (out.pbm_iterations > kMaxPbmIterations && !out.refusal) {
          out.refusal = fmt::format(
              "the PasswordBasedMac's iterationCount is above {}: the secrets certfleet hands out are random "
              "keys, which more iterations do not strengthen",
              kMaxPbmIterations);
        }
      }
    } else if (field.tag == kContext(2)) {
      CF_ASSIGN_OR_RETURN(DerElement kid, inner.Next(pki::kDerOctetString, "senderKID"));
      if (kid.contents.size() > kMaxIdBytes) {
        out.refusal = fmt::format("the senderKID is longer than {} bytes", kMaxIdBytes);
      } else {
        out.sender_kid = std::string(kid.contents);
      }
    } else if (field.tag == kContext(4)) {
      CF_ASSIGN_OR_RETURN(DerElement id, inner.Next(pki::kDerOctetString, "transactionID"));
      if (id.contents.size() > kMaxIdBytes) {
        out.refusal = fmt::format("the transactionID is longer than {} bytes", kMaxIdBytes);
      } else {
        out.transaction_id = std::string(id.contents);
      }
    } else if (field.tag == kContext(8)) {
      // generalInfo: SEQUENCE OF InfoTypeAndValue; id-it-implicitConfirm (1.3.6.1.5.5.7.4.13).
      constexpr std::string_view kImplicitConfirm = "\x2b\x06\x01\x05\x05\x07\x04\x0d";
      CF_ASSIGN_OR_RETURN(DerElement all, inner.Next(pki::kDerSequence, "generalInfo"));
      DerReader items(all.contents);
      while (!items.done()) {
        CF_ASSIGN_OR_RETURN(DerElement item, items.Next(pki::kDerSequence, "InfoTypeAndValue"));
        DerReader parts(item.contents);
        CF_ASSIGN_OR_RETURN(DerElement type, parts.Next(pki::kDerOid, "infoType"));
        out.implicit_confirm = out.implicit_confirm || type.contents == kImplicitConfirm;
      }
    }
  }
  return Ok();
}

Result<Template> ReadTemplate(const DerElement& tmpl) {
  Template t;
  t.encoding = std::string(tmpl.encoding);
  DerReader fields(tmpl.contents);
  while (!fields.done()) {
    CF_ASSIGN_OR_RETURN(DerElement field, fields.NextAny("certificate template field"));
    if (field.tag == kContext(5)) {  // a Name is a CHOICE: tagged explicitly
      DerReader inner(field.contents);
      CF_ASSIGN_OR_RETURN(DerElement name, inner.Next(pki::kDerSequence, "subject"));
      t.subject = std::string(name.encoding);
    } else if (field.tag == kContext(6)) {  // IMPLICIT SubjectPublicKeyInfo
      t.public_key = pki::Der(pki::kDerSequence, field.contents);
    } else if (field.tag == kContext(9)) {  // IMPLICIT Extensions
      t.extensions = pki::Der(pki::kDerSequence, field.contents);
    }
  }
  return t;
}

// The first CertReqMsg's template of CertReqMessages.
Result<Template> FirstTemplate(std::string_view messages) {
  DerReader list(messages);
  CF_ASSIGN_OR_RETURN(DerElement messages_seq, list.Next(pki::kDerSequence, "CertReqMessages"));
  DerReader msgs(messages_seq.contents);
  CF_ASSIGN_OR_RETURN(DerElement msg, msgs.Next(pki::kDerSequence, "CertReqMsg"));
  if (!msgs.done()) return Invalid("lightweight CMP takes one certificate request a message (RFC 9483 4.1)");
  DerReader parts(msg.contents);
  CF_ASSIGN_OR_RETURN(DerElement request, parts.Next(pki::kDerSequence, "CertRequest"));
  DerReader req(request.contents);
  CF_RETURN_IF_ERROR(req.Next(pki::kDerInteger, "certReqId"));
  CF_ASSIGN_OR_RETURN(DerElement tmpl, req.Next(pki::kDerSequence, "CertTemplate"));
  return ReadTemplate(tmpl);
}

// The reasonCode of the first RevDetails' crlEntryDetails; 0 (unspecified) when absent.
Result<int> RevocationReason(std::string_view content) {
  DerReader list(content);
  CF_ASSIGN_OR_RETURN(DerElement all, list.Next(pki::kDerSequence, "RevReqContent"));
  DerReader details(all.contents);
  CF_ASSIGN_OR_RETURN(DerElement first, details.Next(pki::kDerSequence, "RevDetails"));
  DerReader parts(first.contents);
  CF_RETURN_IF_ERROR(parts.Next(pki::kDerSequence, "certDetails"));
  CF_ASSIGN_OR_RETURN(auto extensions, parts.NextIf(pki::kDerSequence, "crlEntryDetails"));
  if (!extensions) return 0;
  const auto* p = reinterpret_cast<const unsigned char*>(extensions->encoding.data());
  STACK_OF(X509_EXTENSION)* exts = d2i_X509_EXTENSIONS(nullptr, &p, static_cast<long>(extensions->encoding.size()));
  if (exts == nullptr) return Invalid("crlEntryDetails are not extensions");
  auto* reason = static_cast<ASN1_ENUMERATED*>(X509V3_get_d2i(exts, NID_crl_reason, nullptr, nullptr));
  const long code = reason ? ASN1_ENUMERATED_get(reason) : 0;
  ASN1_ENUMERATED_free(reason);
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  return static_cast<int>(code);
}

// The first CertStatus of a CertConfirmContent: its certHash and whether it accepts.
Result<void> ReadConfirmation(std::string_view content, Request& out) {
  DerReader list(content);
  CF_ASSIGN_OR_RETURN(DerElement all, list.Next(pki::kDerSequence, "CertConfirmContent"));
  DerReader statuses(all.contents);
  if (statuses.done()) return Ok();  // confirms nothing: rejects (RFC 4210 5.3.18)
  CF_ASSIGN_OR_RETURN(DerElement first, statuses.Next(pki::kDerSequence, "CertStatus"));
  for (out.cert_statuses = 1; !statuses.done(); ++out.cert_statuses) {
    CF_RETURN_IF_ERROR(statuses.Next(pki::kDerSequence, "CertStatus"));
  }
  DerReader parts(first.contents);
  CF_ASSIGN_OR_RETURN(DerElement hash, parts.Next(pki::kDerOctetString, "certHash"));
  out.cert_hash = std::string(hash.contents);
  out.cert_accepted = true;  // an absent statusInfo accepts
  CF_RETURN_IF_ERROR(parts.Next(pki::kDerInteger, "certReqId"));
  CF_ASSIGN_OR_RETURN(auto status_info, parts.NextIf(pki::kDerSequence, "statusInfo"));
  if (status_info) {
    DerReader info(status_info->contents);
    CF_ASSIGN_OR_RETURN(DerElement status, info.Next(pki::kDerInteger, "status"));
    // accepted (0) or grantedWithMods (1) accept the certificate.
    out.cert_accepted = status.contents.size() == 1 && (status.contents[0] == 0 || status.contents[0] == 1);
  }
  return Ok();
}

}  // namespace

Result<Request> ReadRequest(std::string_view der) {
  Request out;
  DerReader top(der);
  CF_ASSIGN_OR_RETURN(DerElement message, top.Next(pki::kDerSequence, "PKIMessage"));
  if (!top.done()) return Invalid("trailing data after the PKIMessage");
  DerReader parts(message.contents);
  CF_ASSIGN_OR_RETURN(DerElement header, parts.Next(pki::kDerSequence, "PKIHeader"));
  CF_RETURN_IF_ERROR(ReadHeader(header.contents, out));
  CF_ASSIGN_OR_RETURN(DerElement body, parts.NextAny("PKIBody"));
  if (body.tag < kContext(0) || body.tag > kContext(26)) return Invalid("the PKIBody is not one RFC 4210 knows");
  out.body = body.tag - kContext(0);
  if (out.body == kIr || out.body == kCr || out.body == kKur) {
    CF_ASSIGN_OR_RETURN(out.cert_template, FirstTemplate(body.contents));
  } else if (out.body == kP10cr) {
    out.p10cr = std::string(body.contents);
  } else if (out.body == kRr) {
    CF_ASSIGN_OR_RETURN(out.revocation_reason, RevocationReason(body.contents));
  } else if (out.body == kCertConf) {
    out.cert_accepted = false;  // until a CertStatus accepts
    CF_RETURN_IF_ERROR(ReadConfirmation(body.contents, out));
  }
  CF_RETURN_IF_ERROR(parts.NextIf(kContext(0), "protection"));
  CF_ASSIGN_OR_RETURN(auto extra, parts.NextIf(kContext(1), "extraCerts"));
  if (extra) {
    DerReader wrapper(extra->contents);
    CF_ASSIGN_OR_RETURN(DerElement certs, wrapper.Next(pki::kDerSequence, "extraCerts"));
    DerReader list(certs.contents);
    while (!list.done()) {
      CF_ASSIGN_OR_RETURN(DerElement cert, list.Next(pki::kDerSequence, "extra certificate"));
      out.extra_certs.emplace_back(cert.encoding);
    }
  }
  return out;
}

}  // namespace certfleet::enroll::cmp
