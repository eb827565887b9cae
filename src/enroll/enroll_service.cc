#include "enroll/enroll_service.h"

#include <fmt/format.h>

#include <boost/json.hpp>

#include "core/crypto.h"
#include "core/text.h"
#include "pki/certificate.h"
#include "pki/crl.h"
#include "pki/csr.h"
#include "registry/registry.h"
#include "store/audit_repo.h"
#include "store/certificates_repo.h"
#include "store/devices_repo.h"
#include "store/imports_repo.h"

namespace certfleet::enroll {
namespace {

namespace json = boost::json;

constexpr size_t kSecretIdBytes = 8;     // 16 hex digits: a Basic user name, a CMP senderKID, a CLI argument
constexpr size_t kSecretBytes = 24;      // 192 bits: beyond guessing, and a MAC key as long as CMP's PBM wants
constexpr int kMaxSecretsAtOnce = 1000;  // a batch's worth; more in several calls
constexpr std::chrono::seconds kMaxSecretTtl{std::chrono::hours(24 * 90)};

Error Unauthenticated(std::string message) { return MakeError(ErrorCode::kUnauthenticated, std::move(message)); }
Error Denied(std::string message) { return MakeError(ErrorCode::kPermissionDenied, std::move(message)); }

std::string SealPurpose(std::string_view id) { return fmt::format("enroll-secret:{}", id); }

// The CSR's subject names `device` or no one.
Result<void> CsrNames(const pki::Csr& csr, std::string_view device, std::string_view why) {
  if (!csr.common_name.empty() && csr.common_name != device) {
    return Denied(fmt::format("the CSR is for {} but {} is device {}", Escaped(csr.common_name), why, device));
  }
  return Ok();
}

// The certificate's validity period holds now.
Result<void> ValidNow(X509* cert, std::string_view what) {
  if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0) return Denied(fmt::format("{} is not valid yet", what));
  if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0) return Denied(fmt::format("{} has expired", what));
  return Ok();
}

}  // namespace

// Who the client proved to be.
struct EnrollService::Authorized {
  std::string device_id;
  AuthWay way = AuthWay::kRegisteredKey;
  std::optional<std::string> secret_id;  // used in the issuing transaction
  std::string key_sha256;                // kRegisteredKey: checked again in the issuing transaction
};

EnrollService::EnrollService(store::Store& store, issuance::Issuer& issuer, registry::Registry& registry,
                             const Clock& clock, Options options)
    : store_(store), issuer_(issuer), registry_(registry), clock_(clock), options_(std::move(options)) {}

Result<std::shared_ptr<const EnrollService::Served>> EnrollService::ServedProfile(std::string_view label) {
  const int64_t now = clock_.NowMillis();
  // Read before the store: a change committed after this makes the entry stale at once.
  const uint64_t changes = registry_.TemplateChanges() + profile_changes_.load();
  {
    std::lock_guard lock(mu_);
    if (auto it = cache_.find(label);
        it != cache_.end() && it->second.changes == changes && now - it->second.fetched_at < kCacheMs) {
      return it->second.served;
    }
  }
  auto served = std::make_shared<Served>();
  CF_RETURN_IF_ERROR(store_.Transact(
      [&](store::Tx& tx) -> Result<void> {
        CF_ASSIGN_OR_RETURN(auto record, store::FindEnrollProfile(tx, label));
        if (!record) return MakeError(ErrorCode::kNotFound, fmt::format("no enrollment profile {}", Escaped(label)));
        CF_ASSIGN_OR_RETURN(served->profile, ProfileFromRecord(*record));
        auto tmpl = registry::Registry::TemplateNamed(tx, served->profile.template_name);
        if (!tmpl.ok()) return tmpl.error().Wrap(fmt::format("enrollment profile {}", served->profile.label));
        served->tmpl = std::move(*tmpl);
        return Ok();
      },
      store::TxMode::kReadEach));
  std::lock_guard lock(mu_);
  if (cache_.size() >= kMaxCachedProfiles) cache_.clear();
  cache_[std::string(label)] = Cached{served, now, changes};
  return std::shared_ptr<const Served>(served);
}

Result<Profile> EnrollService::FindProfile(std::string_view label) {
  CF_ASSIGN_OR_RETURN(auto record,
                      store::Read(store_, [&](store::Tx& tx) { return store::FindEnrollProfile(tx, label); }));
  if (!record) return MakeError(ErrorCode::kNotFound, fmt::format("no enrollment profile {}", Escaped(label)));
  return ProfileFromRecord(*record);
}

Result<std::vector<Profile>> EnrollService::ListProfiles() {
  CF_ASSIGN_OR_RETURN(auto records, store::Read(store_, store::ListEnrollProfiles));
  std::vector<Profile> out;
  for (const auto& r : records) {
    CF_ASSIGN_OR_RETURN(Profile p, ProfileFromRecord(r));
    out.push_back(std::move(p));
  }
  return out;
}

Result<EnrollService::PutAnswer> EnrollService::PutProfile(std::string_view label, const json::object& body,
                                                           std::string_view actor) {
  CF_ASSIGN_OR_RETURN(Profile profile, ProfileFromJson(label, body));
  const int64_t now = clock_.NowMillis();
  CF_ASSIGN_OR_RETURN(bool created, store::Write(store_, [&](store::Tx& tx) -> Result<bool> {
                        auto tmpl = registry::Registry::TemplateNamed(tx, profile.template_name);
                        if (!tmpl.ok()) {
                          return MakeError(ErrorCode::kInvalidArgument,
                                           fmt::format("template: {}", tmpl.error().message));
                        }
                        CF_ASSIGN_OR_RETURN(bool is_new, store::PutEnrollProfile(tx, ProfileRecord(profile, now)));
                        ++profile_changes_;
                        CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "enroll.profile.put",
                                                              fmt::format("enroll-profile:{}", profile.label),
                                                              json::serialize(ProfileJson(profile))));
                        return is_new;
                      }));
  return PutAnswer{std::move(profile), created};
}

Result<void> EnrollService::DeleteProfile(std::string_view label, std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  return store::Write(store_, [&](store::Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(bool deleted, store::DeleteEnrollProfile(tx, label));
    ++profile_changes_;
    if (!deleted) return MakeError(ErrorCode::kNotFound, fmt::format("no enrollment profile {}", Escaped(label)));
    CF_RETURN_IF_ERROR(
        store::AppendAudit(tx, now, actor, "enroll.profile.delete", fmt::format("enroll-profile:{}", label), "{}"));
    return Ok();
  });
}

Result<std::vector<MintedSecret>> EnrollService::CreateSecrets(std::string_view profile,
                                                               const std::optional<std::string>& device_id,
                                                               const std::optional<std::string>& batch, int count,
                                                               std::chrono::seconds ttl, std::string_view actor) {
  if (device_id.has_value() == batch.has_value()) {
    return MakeError(ErrorCode::kInvalidArgument, "a secret is for one device_id or for a batch: give one of them");
  }
  if (device_id && !registry::IsValidDeviceId(*device_id)) {
    return MakeError(ErrorCode::kInvalidArgument, "device_id is not a device id");
  }
  if (batch && !IsValidName(*batch)) return MakeError(ErrorCode::kInvalidArgument, NameRule("batch"));
  if (count < 1 || count > kMaxSecretsAtOnce || (device_id && count != 1)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     fmt::format("count is 1 for a device, 1 to {} for a batch", kMaxSecretsAtOnce));
  }
  if (ttl.count() < 1 || ttl > kMaxSecretTtl) {
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("ttl_hours is at most {}", kMaxSecretTtl.count() / 3600));
  }
  CF_ASSIGN_OR_RETURN(Profile p, FindProfile(profile));
  if (!p.Allows(AuthWay::kSecret)) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     fmt::format("enrollment profile {} does not accept secrets (auth)", p.label));
  }
  const int64_t now = clock_.NowMillis();
  std::vector<MintedSecret> out;
  for (int i = 0; i < count; ++i) {
    MintedSecret m;
    m.secret = RandomToken(kSecretBytes);
    m.record.id = HexEncode(RandomBytes(kSecretIdBytes));
    m.record.profile = p.label;
    m.record.device_id = device_id;
    m.record.batch = batch;
    m.record.secret_sealed = SealSecret(options_.master_key, SealPurpose(m.record.id), m.secret);
    m.record.expires_at = now + ttl.count() * 1000;
    m.record.created_by = std::string(actor);
    m.record.created_at = now;
    out.push_back(std::move(m));
  }
  CF_RETURN_IF_ERROR(store::Write(store_, [&](store::Tx& tx) -> Result<void> {
    for (const auto& m : out) CF_RETURN_IF_ERROR(store::InsertEnrollSecret(tx, m.record));
    json::object details{{"profile", p.label}, {"count", count}};
    if (device_id) details["device_id"] = *device_id;
    if (batch) details["batch"] = *batch;
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "enroll.secret.create",
                                          fmt::format("enroll-profile:{}", p.label), json::serialize(details)));
    return Ok();
  }));
  return out;
}

Result<std::vector<store::EnrollSecretRecord>> EnrollService::ListSecrets(const std::optional<std::string>& profile,
                                                                          std::string_view after, int limit) {
  return store::Read(store_, [&](store::Tx& tx) { return store::ListEnrollSecrets(tx, profile, after, limit); });
}

Result<void> EnrollService::RevokeSecret(std::string_view id, std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  return store::Write(store_, [&](store::Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(bool revoked, store::RevokeEnrollSecret(tx, id, now));
    if (!revoked) return MakeError(ErrorCode::kNotFound, fmt::format("no unused enrollment secret {}", Escaped(id)));
    CF_RETURN_IF_ERROR(
        store::AppendAudit(tx, now, actor, "enroll.secret.revoke", fmt::format("enroll-secret:{}", id), "{}"));
    return Ok();
  });
}

Result<std::optional<std::string>> EnrollService::MacSecret(std::string_view profile, std::string_view id) {
  CF_ASSIGN_OR_RETURN(auto record, store::Read(store_, [&](store::Tx& tx) { return store::FindEnrollSecret(tx, id); }));
  if (!record || record->profile != profile || record->revoked_at || record->expires_at <= clock_.NowMillis()) {
    return std::optional<std::string>();
  }
  std::optional<std::string> secret = OpenSecret(options_.master_key, SealPurpose(record->id), record->secret_sealed);
  if (!secret) return MakeError(ErrorCode::kInternal, "an enrollment secret does not open with the master key");
  return secret;
}

Result<std::string> EnrollService::CaCertificatesPem(std::string_view label) {
  CF_ASSIGN_OR_RETURN(auto served, ServedProfile(label));
  CF_ASSIGN_OR_RETURN(store::CertificateRecord ca, issuer_.Get(served->tmpl.ca_fqdn));
  CF_ASSIGN_OR_RETURN(std::string chain, issuer_.ChainOf(ca));
  return ca.certificate_pem + chain;
}

Result<store::CertificateRecord> EnrollService::PresentedDeviceCertificate(std::string_view der) {
  CF_ASSIGN_OR_RETURN(pki::X509Ptr cert, pki::CertificateFromDer(der));
  const std::string serial = pki::SerialHex(X509_get0_serialNumber(cert.get()));
  CF_ASSIGN_OR_RETURN(auto record,
                      store::Read(store_, [&](store::Tx& tx) { return store::FindCertificate(tx, serial); }));
  if (!record || record->fingerprint != Sha256Hex(der)) {
    return Unauthenticated("the client's certificate is not one certfleet issued");
  }
  if (record->status != store::CertStatus::kActive) return Denied("the client's certificate is revoked");
  if (record->not_after <= clock_.NowMillis()) return Denied("the client's certificate has expired");
  if (record->subject_kind != store::SubjectKind::kDevice) return Denied("the client's certificate is not a device's");
  return std::move(*record);
}

Result<void> EnrollService::RevokePresented(std::string_view certificate_der, std::string_view serial, int reason) {
  CF_ASSIGN_OR_RETURN(store::CertificateRecord record, PresentedDeviceCertificate(certificate_der));
  if (record.serial != serial) return Denied("a device revokes its own certificate only");
  CF_RETURN_IF_ERROR(issuer_.Revoke(record.serial, pki::RevocationReasonName(reason), /*cascade=*/false,
                                    fmt::format("device:{}", record.fqdn)));
  return Ok();
}

Result<EnrollService::Authorized> EnrollService::Authenticate(const Profile& profile, const EnrollRequest& request,
                                                              const pki::Csr& csr) {
  const Credentials& c = request.credentials;
  const int64_t now = clock_.NowMillis();
  if (request.operation == Operation::kReenroll) {
    if (!profile.Allows(AuthWay::kReenroll)) {
      return Denied(fmt::format("enrollment profile {} does not allow re-enrollment", profile.label));
    }
    if (c.tls_certificates.empty()) {
      return Unauthenticated("re-enrollment needs the current certificate as the TLS client certificate");
    }
    CF_ASSIGN_OR_RETURN(store::CertificateRecord record, PresentedDeviceCertificate(c.tls_certificates.front()));
    if (csr.common_name != record.fqdn) {
      return Denied(fmt::format("re-enrollment keeps the subject: the CSR's CN must be {}", record.fqdn));
    }
    return Authorized{record.fqdn, AuthWay::kReenroll, std::nullopt, {}};
  }

  const std::optional<std::string> secret_id =
      c.secret ? std::optional<std::string>(c.secret->first) : c.verified_secret_id;
  if (secret_id && profile.Allows(AuthWay::kSecret)) {
    CF_ASSIGN_OR_RETURN(auto record,
                        store::Read(store_, [&](store::Tx& tx) { return store::FindEnrollSecret(tx, *secret_id); }));
    bool usable = record && record->profile == profile.label && !record->used_at && !record->revoked_at &&
                  record->expires_at > now;
    if (usable && c.secret) {
      std::optional<std::string> secret =
          OpenSecret(options_.master_key, SealPurpose(record->id), record->secret_sealed);
      usable = secret && ConstantTimeEquals(*secret, c.secret->second);
    }
    if (!usable) return Unauthenticated("the enrollment secret is unknown, wrong, used or expired");
    const std::string device = record->device_id.value_or(csr.common_name);
    if (record->device_id) {
      CF_RETURN_IF_ERROR(CsrNames(csr, device, "the secret's"));
    } else {
      if (!registry::IsValidDeviceId(device)) {
        return MakeError(ErrorCode::kInvalidArgument, "the CSR's common name must be the new device's id");
      }
      // A batch's secret enrolls a new device: never one enrolled already or another batch's.
      CF_ASSIGN_OR_RETURN(auto existing, store::Read(store_, [&](store::Tx& tx) -> Result<bool> {
                            CF_ASSIGN_OR_RETURN(auto active, store::ActiveSerialForFqdn(tx, device));
                            CF_ASSIGN_OR_RETURN(auto registered, store::FindDeviceForAuth(tx, device));
                            return active.has_value() || (registered && registered->batch != *record->batch);
                          }));
      if (existing) {
        return Denied(
            fmt::format("device {} is enrolled already or in another batch; a batch secret enrolls a new "
                        "device of its batch",
                        device));
      }
    }
    return Authorized{device, AuthWay::kSecret, record->id, {}};
  }

  if (!c.tls_certificates.empty() && profile.Allows(AuthWay::kFactory)) {
    CF_ASSIGN_OR_RETURN(pki::X509Ptr leaf, pki::CertificateFromDer(c.tls_certificates.front()));
    const std::string fingerprint = Sha256Hex(c.tls_certificates.front());
    CF_ASSIGN_OR_RETURN(auto owners, store::Read(store_, [&](store::Tx& tx) {
                          return store::ImportedCertificateThings(tx, {fingerprint});
                        }));
    std::optional<std::string> thing;
    if (auto it = owners.find(fingerprint); it != owners.end()) {
      CF_RETURN_IF_ERROR(ValidNow(leaf.get(), "the factory certificate"));
      thing = it->second;
    } else if (!profile.factory_anchors.empty()) {
      CF_ASSIGN_OR_RETURN(auto anchors, pki::CertificatesFromPem(profile.factory_anchors));
      std::vector<pki::X509Ptr> sent;
      for (size_t i = 1; i < c.tls_certificates.size(); ++i) {
        CF_ASSIGN_OR_RETURN(pki::X509Ptr cert, pki::CertificateFromDer(c.tls_certificates[i]));
        sent.push_back(std::move(cert));
      }
      std::vector<X509*> untrusted;
      std::vector<X509*> trusted;
      untrusted.reserve(sent.size());
      trusted.reserve(anchors.size());
      for (const auto& s : sent) untrusted.push_back(s.get());
      for (const auto& a : anchors) trusted.push_back(a.get());
      if (pki::VerifyToAnchors(leaf.get(), untrusted, trusted, X509_PURPOSE_SSL_CLIENT).ok()) {
        thing = pki::NameEntry(X509_get_subject_name(leaf.get()), NID_commonName);
        if (!registry::IsValidDeviceId(*thing)) return Denied("the factory certificate's CN is not a device id");
      }
    }
    if (thing) {
      CF_RETURN_IF_ERROR(CsrNames(csr, *thing, "the factory certificate's"));
      return Authorized{*thing, AuthWay::kFactory, std::nullopt, {}};
    }
  }

  if (request.operation == Operation::kEnroll && profile.Allows(AuthWay::kRegisteredKey)) {
    const std::string key_sha256 = Sha256Hex(csr.spki_der);
    // One round trip on PostgreSQL: the issuing transaction checks the device again.
    std::optional<store::DeviceRecord> device;
    CF_RETURN_IF_ERROR(store_.Transact(
        [&](store::Tx& tx) -> Result<void> {
          CF_ASSIGN_OR_RETURN(device, store::FindDeviceForAuth(tx, csr.common_name));
          return Ok();
        },
        store::TxMode::kReadEach));
    CF_RETURN_IF_ERROR(registry::Registry::AuthorizeDeviceKey(device, csr.common_name, key_sha256));
    return Authorized{csr.common_name, AuthWay::kRegisteredKey, std::nullopt, key_sha256};
  }

  std::string ways;
  for (AuthWay w : profile.auth) {
    if (w == AuthWay::kReenroll || (w == AuthWay::kRegisteredKey && request.operation != Operation::kEnroll)) continue;
    ways += fmt::format("{}{}", ways.empty() ? "" : ", ", AuthWayName(w));
  }
  return Unauthenticated(fmt::format("enrollment profile {} takes: {}", profile.label, ways.empty() ? "none" : ways));
}

void EnrollService::EnrollAsync(EnrollRequest request, std::function<void(Result<Enrolled>)> done) {
  auto fail = [&done](const Error& e) { done(e); };
  Result<std::shared_ptr<const Served>> served = ServedProfile(request.label);
  if (!served.ok()) return fail(served.error());
  const Profile* profile = &(*served)->profile;
  // Shares the cache entry's life.
  const std::shared_ptr<const registry::ProvisioningTemplate> tmpl(*served, &(*served)->tmpl);
  Result<pki::Csr> csr = request.checked ? Result<pki::Csr>(std::move(*request.checked)) : pki::ParseCsr(request.csr);
  if (!csr.ok()) return fail(csr.error());
  // RFC 7030 3.5: a challengePassword that carries the channel binding ties the CSR to this
  // TLS connection.
  if (csr->challenge_password && !request.credentials.channel_binding.empty() &&
      !ConstantTimeEquals(*csr->challenge_password, Base64Encode(request.credentials.channel_binding))) {
    return fail(Denied("the CSR's challengePassword is not this TLS connection's channel binding (RFC 7030 3.5)"));
  }

  const int64_t now = clock_.NowMillis();
  std::optional<int64_t> approved_request;
  Authorized who;
  if (profile->approval) {
    const std::string csr_sha256 = Sha256Hex(csr->der);
    auto existing = store::Read(
        store_, [&](store::Tx& tx) { return store::FindEnrollRequestByCsr(tx, profile->label, csr_sha256); });
    if (!existing.ok()) return fail(existing.error());
    if (*existing) {
      const store::EnrollRequestRecord& r = **existing;
      if (r.state == "pending") return done(Enrolled{{}, {}, std::nullopt, r.id});
      if (r.state == "rejected") return fail(Denied(fmt::format("enrollment request {} was rejected", r.id)));
      if (r.state == "issued" && r.serial && request.operation != Operation::kServerKeygen) {
        auto record = issuer_.Get(*r.serial);
        if (!record.ok()) return fail(record.error());
        auto chain = issuer_.ChainOf(*record);
        if (!chain.ok()) return fail(chain.error());
        return done(Enrolled{std::move(*record), std::move(*chain), std::nullopt, std::nullopt});
      }
      if (r.state != "approved") return fail(Denied(fmt::format("enrollment request {} was answered already", r.id)));
      // Approved: the CSR, signed by the key it certifies, is the one authenticated when it came.
      approved_request = r.id;
      who = Authorized{r.device_id, AuthWay::kRegisteredKey, std::nullopt, {}};
    } else {
      Result<Authorized> auth = Authenticate(*profile, request, *csr);
      if (!auth.ok()) return fail(auth.error());
      store::EnrollRequestRecord pending{
          0,         profile->label, csr_sha256, auth->device_id, pki::PemEncode("CERTIFICATE REQUEST", csr->der),
          "pending", std::nullopt,   now,        std::nullopt,    std::nullopt};
      auto id = store::Write(store_, [&](store::Tx& tx) -> Result<int64_t> {
        if (auth->secret_id) {
          CF_ASSIGN_OR_RETURN(bool used, store::UseEnrollSecret(tx, *auth->secret_id, auth->device_id, now));
          if (!used) return Unauthenticated("the enrollment secret is unknown, wrong, used or expired");
        }
        CF_ASSIGN_OR_RETURN(int64_t id, store::InsertEnrollRequest(tx, pending));
        CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, kActor, "enroll.request", fmt::format("enroll-request:{}", id),
                                              json::serialize(json::object{{"profile", profile->label},
                                                                           {"device_id", auth->device_id},
                                                                           {"auth", AuthWayName(auth->way)},
                                                                           {"protocol", request.protocol}})));
        return id;
      });
      if (!id.ok()) return fail(id.error());
      return done(Enrolled{{}, {}, std::nullopt, *id});
    }
  } else {
    Result<Authorized> auth = Authenticate(*profile, request, *csr);
    if (!auth.ok()) return fail(auth.error());
    who = std::move(*auth);
  }

  issuance::IssueRequest issue;
  issue.type = pki::CertType::kDevice;
  issue.name = who.device_id;
  issue.subject = store::SubjectKind::kDevice;
  issue.parent = tmpl->ca_fqdn;
  issue.validity_days = tmpl->validity_days;
  if (request.operation == Operation::kServerKeygen) {
    issue.key_type = profile->key_type;
  } else {
    issue.csr = std::make_shared<const pki::Csr>(std::move(*csr));
  }
  issue.audit = {"device.enroll",
                 {{"device_id", who.device_id},
                  {"profile", profile->label},
                  {"auth", std::string(approved_request ? "approved" : AuthWayName(who.way))},
                  {"protocol", request.protocol}}};
  const int64_t revoke_at = now + Millis(options_.supersede_grace);
  issue.in_transaction = [tmpl, who, approved_request, now, revoke_at](
                             store::Tx& tx, const store::CertificateRecord& rec) -> Result<void> {
    if (who.way == AuthWay::kRegisteredKey && !approved_request) {
      // Checked again where it counts: the device may have been disabled or re-keyed meanwhile.
      CF_ASSIGN_OR_RETURN(auto device, store::FindDeviceForAuth(tx, who.device_id, /*hold=*/true));
      CF_RETURN_IF_ERROR(registry::Registry::AuthorizeDeviceKey(device, who.device_id, who.key_sha256));
      CF_RETURN_IF_ERROR(store::MarkDeviceProvisioned(tx, who.device_id, now));
    }
    if (who.secret_id) {
      CF_ASSIGN_OR_RETURN(bool used, store::UseEnrollSecret(tx, *who.secret_id, who.device_id, now));
      if (!used) return Unauthenticated("the enrollment secret is unknown, wrong, used or expired");
    }
    if (approved_request) {
      CF_ASSIGN_OR_RETURN(bool issued, store::SetEnrollRequestState(tx, *approved_request, "approved", "issued",
                                                                    std::nullopt, rec.serial, now));
      if (!issued) return Denied("the enrollment request was answered already");
    }
    return registry::Registry::RecordProvisioning(tx, *tmpl, who.device_id, rec.serial, now, revoke_at);
  };
  issuer_.IssueAsync(std::move(issue), kActor, [done = std::move(done)](Result<issuance::Issued> created) {
    if (!created.ok()) return done(created.error());
    done(Enrolled{std::move(created->record), std::move(created->chain_pem), std::move(created->private_key_pem),
                  std::nullopt});
  });
}

Result<bool> EnrollService::IsPending(std::string_view label, std::string_view request_der) {
  CF_ASSIGN_OR_RETURN(auto request, store::Read(store_, [&](store::Tx& tx) {
                        return store::FindEnrollRequestByCsr(tx, label, Sha256Hex(request_der));
                      }));
  return request && request->state == "pending";
}

Result<std::vector<store::EnrollRequestRecord>> EnrollService::ListRequests(const std::optional<std::string>& state,
                                                                            std::optional<int64_t> before_id,
                                                                            int limit) {
  return store::Read(store_, [&](store::Tx& tx) { return store::ListEnrollRequests(tx, state, before_id, limit); });
}

Result<store::EnrollRequestRecord> EnrollService::Decide(int64_t id, bool approve, std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  const std::string to = approve ? "approved" : "rejected";
  return store::Write(store_, [&](store::Tx& tx) -> Result<store::EnrollRequestRecord> {
    CF_ASSIGN_OR_RETURN(bool changed,
                        store::SetEnrollRequestState(tx, id, "pending", to, std::string(actor), std::nullopt, now));
    CF_ASSIGN_OR_RETURN(auto record, store::FindEnrollRequest(tx, id));
    if (!record) return MakeError(ErrorCode::kNotFound, fmt::format("no enrollment request {}", id));
    if (!changed) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       fmt::format("enrollment request {} is {}, not pending", id, record->state));
    }
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, approve ? "enroll.request.approve" : "enroll.request.reject",
                                          fmt::format("enroll-request:{}", id),
                                          json::serialize(json::object{{"device_id", record->device_id}})));
    return std::move(*record);
  });
}

}  // namespace certfleet::enroll
