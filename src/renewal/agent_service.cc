#include "renewal/agent_service.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>

#include "core/crypto.h"
#include "core/text.h"
#include "pki/certificate.h"
#include "pki/crl.h"
#include "pki/csr.h"
#include "store/audit_repo.h"
#include "store/certificates_repo.h"
#include "store/hosts_repo.h"

namespace certfleet::renewal {
namespace {

namespace json = boost::json;

// The settings table's name of the renewal CA set while serving.
constexpr std::string_view kCaSetting = "renewal.ca";

Error BadToken() {
  return MakeError(ErrorCode::kPermissionDenied, "the enrollment token is unknown, spent, expired or another host's");
}

}  // namespace

Result<Enrolled> AgentService::Enroll(std::string_view host_id, std::string_view token, const std::string& csr_pem) {
  const std::string token_sha256 = Sha256Hex(token);
  // A look before anything is signed, so that no valid token costs no signature; the
  // token is spent with the certificate below.
  CF_ASSIGN_OR_RETURN(auto owner, store::Read(store_, [&](store::Tx& tx) {
                        return store::HostTokenOwner(tx, token_sha256, clock_.NowMillis());
                      }));
  if (!owner) {
    CF_ASSIGN_OR_RETURN(auto before, EnrolledBefore(host_id, token_sha256, csr_pem));
    if (before) return std::move(*before);
    return EnrollWithCredential(host_id, token_sha256, csr_pem);
  }
  CF_ASSIGN_OR_RETURN(store::HostRecord host, hosts_.Get(host_id));
  if (host.status == store::HostStatus::kRevoked) {
    return MakeError(ErrorCode::kFailedPrecondition, fmt::format("host {} is revoked", host.host_id));
  }
  if (owner != host.host_id) return BadToken();

  // A reactivated host enrolls past the certificate it had, which is revoked after the grace.
  return Issue(
      host, csr_pem, /*renewing=*/host.serial.has_value(), "host.enroll",
      [&](store::Tx& tx, const store::CertificateRecord& cert) -> Result<void> {
        const int64_t now = clock_.NowMillis();
        CF_ASSIGN_OR_RETURN(auto spent, store::SpendHostToken(tx, token_sha256, now));
        if (spent != host.host_id) return BadToken();
        // As a fleet credential's enrollment does: one at the same time is seen, and superseded.
        CF_RETURN_IF_ERROR(HostService::Lock(tx, host.host_id));
        CF_ASSIGN_OR_RETURN(auto h, store::FindHost(tx, host.host_id));
        if (!h || h->status == store::HostStatus::kRevoked) {
          return MakeError(ErrorCode::kFailedPrecondition, fmt::format("host {} is gone or revoked", host.host_id));
        }
        if (h->serial) {
          CF_ASSIGN_OR_RETURN(store::CertStatus status, store::CertificateStatus(tx, *h->serial));
          if (status == store::CertStatus::kActive) {
            CF_RETURN_IF_ERROR(issuance::RevokeSupersededAfter(tx, *h->serial, now + Millis(options_.grace), now));
          }
        }
        hosts_.SetCertificate(*h, cert.serial, cert.not_after, now);
        CF_RETURN_IF_ERROR(store::UpdateHost(tx, *h));
        return Ok();
      });
}

Result<Enrolled> AgentService::EnrollWithCredential(std::string_view host_id, const std::string& token_sha256,
                                                    const std::string& csr_pem) {
  const int64_t now = clock_.NowMillis();
  CF_ASSIGN_OR_RETURN(auto found, store::Read(store_, [&](store::Tx& tx) {
                        return store::FindEnrollmentCredential(tx, token_sha256);
                      }));
  if (!found) return BadToken();
  const store::EnrollmentCredential credential = std::move(*found);
  CF_RETURN_IF_ERROR(CheckCredential(credential, host_id, now));
  const std::string actor = fmt::format("credential:{}", credential.id);
  // Only a host's first enrollment: a fleet secret never takes over an enrolled host.
  auto first_enrollment = [&](const store::HostRecord& h) -> Result<void> {
    if (h.status == store::HostStatus::kEnrolling && !h.serial) return Ok();
    return MakeError(ErrorCode::kFailedPrecondition,
                     fmt::format("host {} is {}: a fleet enrollment credential enrolls a host once; `certfleet host "
                                 "token {}` gives its agent a single-use token",
                                 h.host_id, store::HostStatusName(h.status), h.host_id));
  };
  CF_ASSIGN_OR_RETURN(auto existing, hosts_.Find(host_id));
  store::HostRecord host;
  if (existing) {
    CF_RETURN_IF_ERROR(first_enrollment(*existing));
    host = std::move(*existing);
  } else {
    // Not registered: the credential registers it with the defaults.
    HostSpec spec;
    spec.host_id = std::string(host_id);
    CF_ASSIGN_OR_RETURN(host, HostService::NewRecord(spec, now));
  }
  // Two first enrollments of one host at once (two agents, or one asking twice, on any
  // nodes): the second to commit sees the first's certificate and is refused. The host is
  // looked at before the issuer's check of an active certificate of the name and before the
  // credential's use, so that the refused one hears the host is enrolled in every order.
  std::optional<store::HostRecord> h;
  auto host_first = [&](store::Tx& tx) -> Result<void> {
    CF_RETURN_IF_ERROR(HostService::Lock(tx, host.host_id));
    CF_ASSIGN_OR_RETURN(h, store::FindHost(tx, host.host_id));
    if (h) CF_RETURN_IF_ERROR(first_enrollment(*h));
    return Ok();
  };
  return Issue(
      host, csr_pem, /*renewing=*/false, "host.enroll",
      [&](store::Tx& tx, const store::CertificateRecord& cert) -> Result<void> {
        CF_ASSIGN_OR_RETURN(auto use, store::UseEnrollmentCredential(tx, credential.id, now));
        if (!use) {
          return MakeError(
              ErrorCode::kPermissionDenied,
              fmt::format("enrollment credential {} was spent, revoked or expired meanwhile", credential.id));
        }
        if (!h) {
          CF_RETURN_IF_ERROR(HostService::Insert(tx, host, actor, now));
          h = host;
        }
        hosts_.SetCertificate(*h, cert.serial, cert.not_after, now);
        CF_RETURN_IF_ERROR(store::UpdateHost(tx, *h));
        CF_RETURN_IF_ERROR(store::AppendAudit(
            tx, now, actor, "credential.use", actor,
            json::serialize(json::object{{"host_id", h->host_id}, {"serial", cert.serial}, {"use", *use}})));
        return Ok();
      },
      host_first);
}

Result<std::string> AgentService::RenewalCa() {
  CF_ASSIGN_OR_RETURN(auto set, store::Read(store_, [](store::Tx& tx) { return store::GetSetting(tx, kCaSetting); }));
  return set.value_or(options_.ca_fqdn);
}

Result<void> AgentService::SetRenewalCa(std::string_view fqdn, std::string_view actor) {
  auto ca = issuer_.Get(fqdn);
  if (!ca.ok() || ca->type != pki::CertType::kIntermediate || ca->status != store::CertStatus::kActive) {
    return MakeError(ErrorCode::kInvalidArgument,
                     fmt::format("ca must name an active intermediate CA of this certfleet; {} is not one",
                                 Escaped(fqdn.substr(0, 253))));
  }
  const int64_t now = clock_.NowMillis();
  return store::Write(store_, [&](store::Tx& tx) -> Result<void> {
    CF_RETURN_IF_ERROR(store::PutSetting(tx, kCaSetting, ca->fqdn, actor, now));
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "renewal.settings", "settings:renewal",
                                          json::serialize(json::object{{"ca", ca->fqdn}})));
    return Ok();
  });
}

Result<std::string> AgentService::TrustBundle() {
  CF_ASSIGN_OR_RETURN(std::string current, RenewalCa());
  CF_ASSIGN_OR_RETURN(std::vector<std::string> cas, store::Read(store_, store::HostCertificateIssuers));
  if (!current.empty()) cas.push_back(current);
  std::sort(cas.begin(), cas.end());
  cas.erase(std::unique(cas.begin(), cas.end()), cas.end());
  std::string pem;
  for (const auto& fqdn : cas) {
    auto ca = issuer_.Get(fqdn);
    if (!ca.ok() && ca.error().code == ErrorCode::kNotFound) continue;  // renewal.ca not made yet
    if (!ca.ok()) return ca.error();
    CF_ASSIGN_OR_RETURN(std::string above, issuer_.ChainOf(*ca));
    pem += ca->certificate_pem + above;
  }
  return pem;
}

Result<Enrolled> AgentService::Issue(const store::HostRecord& host, const std::string& csr_pem, bool renewing,
                                     std::string audit_action, issuance::InTransaction in_transaction,
                                     issuance::BeforeChecks before_checks) {
  CF_ASSIGN_OR_RETURN(std::string ca_fqdn, RenewalCa());
  if (ca_fqdn.empty()) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     "no CA issues host certificates: set renewal.ca or PUT /v1/renewal/settings {\"ca\": ...}");
  }
  Enrolled out;
  out.settings = hosts_.SettingsOf(host);
  CF_ASSIGN_OR_RETURN(pki::Csr csr, pki::ParseCsr(csr_pem));
  issuance::IssueRequest req;
  req.type = pki::CertType::kServer;
  req.name = host.host_id;
  req.subject = store::SubjectKind::kHost;
  req.parent = ca_fqdn;
  req.sans = out.settings.sans;
  req.csr = std::make_shared<const pki::Csr>(std::move(csr));
  req.validity_days = options_.validity_days;
  req.usage = out.settings.profile == "client" ? pki::ServerUsage::kClient : pki::ServerUsage::kHost;
  req.audit.action = std::move(audit_action);
  req.overlap = renewing ? issuance::Overlap::kAllowed : issuance::Overlap::kRefused;
  req.before_checks = std::move(before_checks);
  req.in_transaction = std::move(in_transaction);
  CF_ASSIGN_OR_RETURN(issuance::Issued created, issuer_.Issue(std::move(req), "host:" + host.host_id));
  out.record = std::move(created.record);
  out.certificate_pem = out.record.certificate_pem;
  out.chain_pem = std::move(created.chain_pem);
  return out;
}

Result<std::optional<Enrolled>> AgentService::IssuedFor(const store::HostRecord& host, std::string_view serial,
                                                        const std::string& csr_pem) {
  CF_ASSIGN_OR_RETURN(pki::Csr csr, pki::ParseCsr(csr_pem));
  CF_ASSIGN_OR_RETURN(store::CertificateRecord record, issuer_.Get(serial));
  CF_ASSIGN_OR_RETURN(pki::X509Ptr cert, pki::CertificateFromPem(record.certificate_pem));
  if (record.fqdn != host.host_id || EVP_PKEY_eq(X509_get0_pubkey(cert.get()), csr.public_key.get()) != 1) {
    return std::optional<Enrolled>();
  }
  Enrolled out;
  out.settings = hosts_.SettingsOf(host);
  CF_ASSIGN_OR_RETURN(out.chain_pem, issuer_.ChainOf(record));
  out.certificate_pem = record.certificate_pem;
  out.record = std::move(record);
  return std::optional<Enrolled>(std::move(out));
}

Result<Enrolled> AgentService::IssuedBefore(const store::HostRecord& host, std::string_view serial,
                                            const std::string& csr_pem) {
  CF_ASSIGN_OR_RETURN(auto issued, IssuedFor(host, serial, csr_pem));
  if (!issued) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     "a certificate was issued for this renewal already, for another key");
  }
  return std::move(*issued);
}

Result<std::optional<Enrolled>> AgentService::EnrolledBefore(std::string_view host_id, const std::string& token_sha256,
                                                             const std::string& csr_pem) {
  // An enrolled host, and a token that enrolled it (spent on it) or a fleet credential not
  // revoked. The certificate is public; the key check below keeps it to its key's holder.
  CF_ASSIGN_OR_RETURN(auto host, store::Read(store_, [&](store::Tx& tx) -> Result<std::optional<store::HostRecord>> {
                        CF_ASSIGN_OR_RETURN(auto h, store::FindHost(tx, host_id));
                        const std::optional<store::HostRecord> none;
                        if (!h || !h->serial || h->status == store::HostStatus::kRevoked) return none;
                        CF_ASSIGN_OR_RETURN(auto spent_on, store::SpentHostTokenOwner(tx, token_sha256));
                        if (spent_on) return *spent_on == h->host_id ? h : none;
                        CF_ASSIGN_OR_RETURN(auto credential, store::FindEnrollmentCredential(tx, token_sha256));
                        return credential && !credential->revoked_at ? h : none;
                      }));
  if (!host) return std::optional<Enrolled>();
  CF_ASSIGN_OR_RETURN(auto issued, IssuedFor(*host, *host->serial, csr_pem));
  if (issued && issued->record.status != store::CertStatus::kActive) return std::optional<Enrolled>();
  return issued;
}

Result<store::HostRecord> AgentService::Authenticate(std::string_view serial, std::string_view fingerprint) {
  auto refused = [] {
    return MakeError(ErrorCode::kPermissionDenied,
                     "the client certificate is not a current certificate of a host (it or its CA revoked, or not a "
                     "host's)");
  };
  CF_ASSIGN_OR_RETURN(auto found, store::Read(store_, [&](store::Tx& tx) -> Result<std::optional<store::HostRecord>> {
                        CF_ASSIGN_OR_RETURN(auto cert, store::FindCertificate(tx, serial));
                        // Only certificates issued to the host itself (enrollment, renewal):
                        // a W1 server certificate with the same name is not an agent's.
                        if (!cert || cert->fingerprint != fingerprint || cert->status != store::CertStatus::kActive ||
                            cert->subject_kind != store::SubjectKind::kHost) {
                          return std::optional<store::HostRecord>();
                        }
                        // Nor one whose CA is revoked (without its certificates): TLS took it.
                        CF_ASSIGN_OR_RETURN(store::CertStatus chain, store::ChainStatus(tx, cert->serial));
                        if (chain != store::CertStatus::kActive) return std::optional<store::HostRecord>();
                        CF_ASSIGN_OR_RETURN(auto host, store::FindHost(tx, cert->fqdn));
                        // Nor one issued before the host was registered: a deleted host's,
                        // whose id was registered again.
                        if (host && cert->serial != host->serial && cert->created_at < host->created_at) {
                          return std::optional<store::HostRecord>();
                        }
                        return host;
                      }));
  if (!found || found->status == store::HostStatus::kRevoked) return refused();
  return std::move(*found);
}

Result<store::HostRecord> AgentService::Revoke(std::string_view host_id, std::string_view reason,
                                               std::string_view actor) {
  CF_RETURN_IF_ERROR(pki::ParseRevocationReason(reason.empty() ? "unspecified" : reason));
  CF_ASSIGN_OR_RETURN(store::HostRecord host, hosts_.Get(host_id));
  if (!host.serial) {
    return MakeError(ErrorCode::kFailedPrecondition, fmt::format("host {} has no certificate", host.host_id));
  }
  // The host first, under its lock: from then on it takes no other certificate (a renewal's
  // report, one its agent is seen using), so the one revoked next is its last.
  const int64_t now = clock_.NowMillis();
  CF_ASSIGN_OR_RETURN(store::HostRecord marked, store::Write(store_, [&](store::Tx& tx) -> Result<store::HostRecord> {
                        CF_RETURN_IF_ERROR(HostService::Lock(tx, host.host_id));
                        CF_ASSIGN_OR_RETURN(auto h, store::FindHost(tx, host.host_id));
                        if (!h) return NoSuchHost(host.host_id);
                        if (h->status == store::HostStatus::kRevoked) return std::move(*h);
                        h->status = store::HostStatus::kRevoked;
                        h->updated_at = now;
                        CF_RETURN_IF_ERROR(store::UpdateHost(tx, *h));
                        CF_RETURN_IF_ERROR(store::AppendAudit(
                            tx, now, actor, "host.revoke", "host:" + h->host_id,
                            json::serialize(json::object{{"serial", *h->serial}, {"reason", reason}})));
                        return std::move(*h);
                      }));
  // Idempotent: a certificate revoked before stays as it was; run again, this completes.
  CF_RETURN_IF_ERROR(issuer_.Revoke(*marked.serial, reason, /*cascade=*/false, actor));
  return marked;
}

}  // namespace certfleet::renewal
