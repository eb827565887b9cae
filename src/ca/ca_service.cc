#include "ca/ca_service.h"

#include <fmt/format.h>

#include <algorithm>
#include <future>

#include "ca/fqdn.h"
#include "core/crypto.h"
#include "core/text.h"
#include "pki/certificate.h"
#include "pki/csr.h"
#include "pki/key.h"
#include "pki/profile.h"

namespace certfleet::ca {
namespace {

constexpr std::string_view kRootParent = "root";  // the seed's parent_fqdn of roots, "Root", lowercased

std::string Uuid4() {
  std::string b = RandomBytes(16);
  b[6] = static_cast<char>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<char>((b[8] & 0x3f) | 0x80);
  std::string hex = HexEncode(b);
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" + hex.substr(16, 4) + "-" +
         hex.substr(20);
}

Error Invalid(std::string message) { return MakeError(ErrorCode::kInvalidArgument, std::move(message)); }

// The length of the UUID a device certificate's name starts with.
constexpr size_t kUuidChars = 36;

// The name and parent by the seed's rules: `parent` is the given parent_fqdn, lowercased.
Result<void> ResolveNames(const CreateRequest& r, const std::optional<std::string>& parent,
                          issuance::IssueRequest& out) {
  out.name = AsciiLower(r.fqdn);
  if (r.type == pki::CertType::kDevice) {
    if (!parent || parent->empty()) return Invalid("parent_fqdn is required for a device certificate");
    if (!out.name.empty()) return Invalid("a device's fqdn is made by certfleet");
    out.name = Uuid4() + "." + *parent;
    if (out.name.size() > pki::kMaxCommonName) {
      return Invalid(
          fmt::format("a device certificate is named <uuid>.{} ({} characters), longer than the {} of a "
                      "common name: issue devices under a CA whose name has at most {} characters",
                      *parent, out.name.size(), pki::kMaxCommonName, pki::kMaxCommonName - kUuidChars - 1));
    }
    out.parent = *parent;
    return Ok();
  }
  if (out.name.empty()) return Invalid("fqdn is required");
  if (!pki::IsValidDnsName(out.name)) return Invalid(fmt::format("fqdn '{}' is not a valid DNS name", out.name));
  auto registrable = RegistrableDomain(out.name);
  if (!registrable) return Invalid(fmt::format("fqdn '{}' is a public suffix or under none", out.name));
  switch (r.type) {
    case pki::CertType::kRoot:
      if (*registrable != out.name) {
        return Invalid(fmt::format("a root's fqdn must be a registrable domain such as {}", *registrable));
      }
      if (parent && *parent != kRootParent) return Invalid("a root has no parent");
      return Ok();
    case pki::CertType::kIntermediate:
      if (*registrable == out.name) {
        return Invalid("an intermediate's fqdn must be below a registrable domain (e.g. iot.example.com)");
      }
      out.parent = parent.value_or(*registrable);
      return Ok();
    default:
      out.parent = parent.value_or(DefaultServerParent(out.name, *registrable));
      return Ok();
  }
}

}  // namespace

Result<issuance::IssueRequest> CaService::Resolve(const CreateRequest& request) {
  issuance::IssueRequest out;
  out.type = request.type;
  std::optional<std::string> parent;
  if (request.parent_fqdn) parent = AsciiLower(*request.parent_fqdn);
  CF_RETURN_IF_ERROR(ResolveNames(request, parent, out));
  if (request.csr_pem && pki::IsCa(request.type)) {
    return Invalid("CA keys are always made by certfleet; csr_pem is for leaves");
  }
  if (!request.key_backend.empty() && !pki::IsCa(request.type)) {
    return Invalid("key_backend is for CAs: a leaf's key is the subject's own");
  }
  out.key_backend = request.key_backend;
  if (request.key_type) {
    if (request.csr_pem) return Invalid("key_type and csr_pem exclude each other");
    CF_ASSIGN_OR_RETURN(out.key_type, pki::ParseKeyType(*request.key_type));
  }
  if (request.csr_pem) {
    CF_ASSIGN_OR_RETURN(pki::Csr csr, pki::ParseCsr(*request.csr_pem));
    out.csr = std::make_shared<const pki::Csr>(std::move(csr));
  }
  out.sans = request.sans;
  out.country = request.country;
  out.state = request.state;
  out.organization = request.organization;
  out.validity_days = request.validity_days;
  return out;
}

void CaService::CreateAsync(const CreateRequest& request, std::string_view actor,
                            std::function<void(Result<issuance::Issued>)> done) {
  Result<issuance::IssueRequest> resolved = Resolve(request);
  if (!resolved.ok()) return done(resolved.error());
  issuer_.IssueAsync(std::move(*resolved), actor, std::move(done));
}

Result<issuance::Issued> CaService::Renew(std::string_view serial, const RenewRequest& request,
                                          std::string_view actor) {
  CF_ASSIGN_OR_RETURN(store::CertificateRecord old, issuer_.Get(serial));
  auto refused = [&old](std::string why) {
    return MakeError(ErrorCode::kFailedPrecondition, fmt::format("certificate {} {}", old.serial, why));
  };
  if (pki::IsCa(old.type)) return refused("is a CA: a CA is rotated, not renewed");
  if (old.subject_kind == store::SubjectKind::kHost) {
    return refused("is a W4 host's: its agent renews it (POST /v1/renewals/run)");
  }
  if (old.subject_kind == store::SubjectKind::kDevice) {
    return refused("is a W2 device's: the device rotates it through provisioning");
  }
  if (old.status != store::CertStatus::kActive) {
    return refused(fmt::format("is {}: issue a new certificate instead", store::CertStatusName(old.status)));
  }
  CF_ASSIGN_OR_RETURN(pki::X509Ptr x509, pki::CertificateFromPem(old.certificate_pem));
  issuance::IssueRequest req;
  req.type = old.type;
  req.name = old.fqdn;
  req.subject = old.subject_kind;
  req.parent = old.parent_fqdn;
  req.sans = pki::SubjectAltNames(x509.get());
  const X509_NAME* subject = X509_get_subject_name(x509.get());
  req.country = pki::NameEntry(subject, NID_countryName);
  req.state = pki::NameEntry(subject, NID_stateOrProvinceName);
  req.organization = pki::NameEntry(subject, NID_organizationName);
  constexpr int64_t kDayMs = int64_t{24} * 3600 * 1000;
  req.validity_days = request.validity_days.value_or(std::max<int64_t>(1, (old.not_after - old.not_before) / kDayMs));
  if (request.key_type && request.csr_pem) return Invalid("key_type and csr_pem exclude each other");
  if (request.csr_pem) {
    CF_ASSIGN_OR_RETURN(pki::Csr csr, pki::ParseCsr(*request.csr_pem));
    req.csr = std::make_shared<const pki::Csr>(std::move(csr));
  } else if (request.key_type) {
    CF_ASSIGN_OR_RETURN(req.key_type, pki::ParseKeyType(*request.key_type));
  } else {
    auto old_type = pki::KeyTypeOf(X509_get0_pubkey(x509.get()));
    req.key_type = old_type.ok() ? *old_type : pki::KeyType::kEcP256;
  }
  req.overlap = issuance::Overlap::kAllowed;
  req.audit.action = "certificate.renew";
  req.audit.details = {{"renews", old.serial}, {"keep", request.keep ? "true" : "false"}};
  if (!request.keep) {
    const int64_t revoke_at = clock_.NowMillis() + Millis(options_.renew_grace);
    req.in_transaction = [serial = old.serial, revoke_at, this](store::Tx& tx,
                                                                const store::CertificateRecord&) -> Result<void> {
      CF_ASSIGN_OR_RETURN(bool first, issuance::RevokeSupersededAfter(tx, serial, revoke_at, clock_.NowMillis()));
      if (!first) {
        return MakeError(ErrorCode::kAlreadyExists,
                         fmt::format("certificate {} was renewed already; renew its successor, or renew with "
                                     "\"keep\": true to have another certificate beside it",
                                     serial));
      }
      return Ok();
    };
  }
  return issuer_.Issue(std::move(req), actor);
}

Result<store::PendingCaRecord> CaService::RequestIntermediate(const CaCsrRequest& request, std::string_view actor) {
  CreateRequest as_create;
  as_create.type = pki::CertType::kIntermediate;
  as_create.fqdn = request.fqdn;
  issuance::IssueRequest resolved;
  CF_RETURN_IF_ERROR(ResolveNames(as_create, std::nullopt, resolved));
  pki::KeyType key_type = pki::KeyType::kEcP256;
  if (request.key_type) {
    CF_ASSIGN_OR_RETURN(key_type, pki::ParseKeyType(*request.key_type));
  }
  return issuer_.RequestCa(resolved.name, key_type, request.key_backend, request.parent_hint, actor);
}

Result<issuance::Issued> CaService::Create(const CreateRequest& request, std::string_view actor) {
  CF_ASSIGN_OR_RETURN(issuance::IssueRequest resolved, Resolve(request));
  return issuer_.Issue(std::move(resolved), actor);
}

}  // namespace certfleet::ca
