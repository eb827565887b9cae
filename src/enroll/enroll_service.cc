#include "enroll/enroll_service.h"

#include <fmt/format.h>

#include <boost/json.hpp>

#include "core/crypto.h"
#include "core/log.h"
#include "core/text.h"
#include "enroll/errors.h"
#include "pki/certificate.h"
#include "pki/crl.h"
#include "pki/csr.h"
#include "registry/registry.h"
#include "store/audit_repo.h"
#include "store/certificates_repo.h"
#include "store/enroll_repo.h"

namespace certfleet::enroll {
namespace {

namespace json = boost::json;

Error NoProfile(std::string_view label) {
  return MakeError(ErrorCode::kNotFound, fmt::format("no enrollment profile {}", Escaped(label)));
}

constexpr size_t kSecretIdBytes = 8;     // 16 hex digits: a Basic user name, a CMP senderKID, a CLI argument
constexpr size_t kSecretBytes = 24;      // 192 bits: beyond guessing, and a MAC key as long as CMP's PBM wants
constexpr int kMaxSecretsAtOnce = 1000;  // a batch's worth; more in several calls
constexpr std::chrono::seconds kMaxSecretTtl{std::chrono::hours(24 * 90)};

}  // namespace

EnrollService::EnrollService(store::Store& store, issuance::Issuer& issuer, registry::Registry& registry,
                             const Clock& clock, Options options)
    : store_(store), issuer_(issuer), registry_(registry), clock_(clock), options_(std::move(options)) {}

Result<std::shared_ptr<const EnrollService::Served>> EnrollService::ServedProfile(std::string_view label) {
  const int64_t now = clock_.NowMillis();
  // Read before the store: a change committed after this makes the entry stale at once.
  const uint64_t changes = registry_.TemplateChanges() + profile_changes_.load();
  if (auto cached = cache_.Find(label, now, changes)) return *cached;
  auto served = std::make_shared<Served>();
  CF_RETURN_IF_ERROR(store::ReadEach(store_, [&](store::Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(auto record, store::FindEnrollProfile(tx, label));
    if (!record) return NoProfile(label);
    CF_ASSIGN_OR_RETURN(served->profile, ProfileFromRecord(*record));
    auto tmpl = registry::Registry::TemplateNamed(tx, served->profile.template_name);
    if (!tmpl.ok()) return tmpl.error().Wrap(fmt::format("enrollment profile {}", served->profile.label));
    served->tmpl = std::move(*tmpl);
    return Ok();
  }));
  cache_.Put(label, served, now, changes);
  return std::shared_ptr<const Served>(served);
}

Result<Profile> EnrollService::FindProfile(std::string_view label) {
  CF_ASSIGN_OR_RETURN(auto record,
                      store::Read(store_, [&](store::Tx& tx) { return store::FindEnrollProfile(tx, label); }));
  if (!record) return NoProfile(label);
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
                        CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "enroll.profile.put",
                                                              fmt::format("enroll-profile:{}", profile.label),
                                                              json::serialize(ProfileJson(profile))));
                        return is_new;
                      }));
  ++profile_changes_;  // after the commit: a read before it would remember the old row
  return PutAnswer{std::move(profile), created};
}

Result<void> EnrollService::DeleteProfile(std::string_view label, std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  CF_RETURN_IF_ERROR(store::Write(store_, [&](store::Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(bool deleted, store::DeleteEnrollProfile(tx, label));
    if (!deleted) return NoProfile(label);
    // Its unused secrets go with it: a profile made again under the label does not revive them.
    CF_ASSIGN_OR_RETURN(int64_t revoked, store::RevokeEnrollSecretsOf(tx, label, now));
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "enroll.profile.delete",
                                          fmt::format("enroll-profile:{}", label),
                                          json::serialize(json::object{{"secrets_revoked", revoked}})));
    return Ok();
  }));
  ++profile_changes_;
  return Ok();
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
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("ttl_hours is 1 to {}", kMaxSecretTtl.count() / 3600));
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
    m.record.secret_sealed = SealSecret(options_.master_key, detail::SecretPurpose(m.record.id), m.secret);
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
  std::optional<std::string> secret =
      OpenSecret(options_.master_key, detail::SecretPurpose(record->id), record->secret_sealed);
  if (!secret) return MakeError(ErrorCode::kInternal, "an enrollment secret does not open with the master key");
  return secret;
}

Result<std::string> EnrollService::CaCertificatesPem(std::string_view label) {
  CF_ASSIGN_OR_RETURN(auto served, ServedProfile(label));
  CF_ASSIGN_OR_RETURN(store::CertificateRecord ca, issuer_.Get(served->tmpl.ca_fqdn));
  CF_ASSIGN_OR_RETURN(std::string chain, issuer_.ChainOf(ca));
  return ca.certificate_pem + chain;
}

Result<void> EnrollService::RevokePresented(std::string_view certificate_der, std::string_view serial, int reason) {
  CF_ASSIGN_OR_RETURN(store::CertificateRecord record,
                      PresentedDeviceCertificate(certificate_der, /*for_revocation=*/true));
  if (record.serial != serial) return detail::Denied("a device revokes its own certificate only");
  CF_RETURN_IF_ERROR(issuer_.Revoke(record.serial, pki::RevocationReasonName(reason), /*cascade=*/false,
                                    fmt::format("device:{}", record.fqdn)));
  return Ok();
}

void EnrollService::EnrollAsync(EnrollRequest request, std::function<void(Result<Enrolled>)> done) {
  auto fail = [&done](const Error& e) { done(e); };
  Result<std::shared_ptr<const Served>> served = ServedProfile(request.label);
  if (!served.ok()) return fail(served.error());
  const Profile* profile = &(*served)->profile;
  // Shares the cache entry's life.
  const std::shared_ptr<const registry::ProvisioningTemplate> tmpl(*served, &(*served)->tmpl);
  const bool template_request = request.checked.has_value();
  Result<pki::Csr> csr = template_request ? Result<pki::Csr>(std::move(*request.checked)) : pki::ParseCsr(request.csr);
  if (!csr.ok()) return fail(csr.error());
  if (request.operation == Operation::kServerKeygen) {
    if (Result<void> plain = KeyGoesOverTls(*csr); !plain.ok()) return fail(plain.error());
  }

  const int64_t now = clock_.NowMillis();
  Authorized who;
  if (profile->approval) {
    // The key certfleet would make could be collected by whoever sends the approved request
    // again: serverkeygen needs a profile without approval.
    if (request.operation == Operation::kServerKeygen) {
      return fail(MakeError(
          ErrorCode::kFailedPrecondition,
          fmt::format("enrollment profile {} needs approval: serverkeygen is not served on it", profile->label)));
    }
    const std::string csr_sha256 = Sha256Hex(csr->der);
    auto existing = store::Read(
        store_, [&](store::Tx& tx) { return store::FindEnrollRequestByCsr(tx, profile->label, csr_sha256); });
    if (!existing.ok()) return fail(existing.error());
    if (!*existing) {
      Result<Authorized> asked = Authenticate(**served, request, *csr);
      if (!asked.ok()) return fail(asked.error());
      if (Result<void> bound = CheckBinding(request, *csr); !bound.ok()) return fail(bound.error());
      return Hold(*profile, request.protocol, template_request, *csr, *asked, done);
    }
    // Asked again with the request an operator decides: the CSR (signed by the key it
    // certifies, or a template whose possession the protocol proved) is the one
    // authenticated when it came; the channel binding was that connection's.
    const store::EnrollRequestRecord& r = **existing;
    if (r.state == "pending") return done(Enrolled{{}, {}, std::nullopt, r.id});
    if (r.state == "rejected") return fail(detail::Denied(fmt::format("enrollment request {} was rejected", r.id)));
    if (r.state == "issued" && r.serial) {
      auto record = issuer_.Get(*r.serial);
      if (!record.ok()) return fail(record.error());
      if (record->status != store::CertStatus::kActive) {
        return fail(detail::Denied(fmt::format(
            "the certificate issued for enrollment request {} was revoked (unconfirmed, or refused): send a new "
            "request",
            r.id)));
      }
      auto chain = issuer_.ChainOf(*record);
      if (!chain.ok()) return fail(chain.error());
      return done(Enrolled{std::move(*record), std::move(*chain), std::nullopt, std::nullopt, /*handed_back=*/true});
    }
    if (r.state != "approved") {
      return fail(detail::Denied(fmt::format("enrollment request {} was answered already", r.id)));
    }
    who = Authorized{r.device_id, AuthWay::kRegisteredKey};
    who.approved_request = r.id;
    // What was true when it asked is checked again as it is issued: a thing made since for a
    // new device, or a certificate replaced or revoked since the re-enrollment asked, refuses it.
    who.new_device = r.new_device;
    who.presented_serial = r.presented_serial;
  } else {
    Result<Authorized> auth = Authenticate(**served, request, *csr);
    if (!auth.ok()) return fail(auth.error());
    if (Result<void> bound = CheckBinding(request, *csr); !bound.ok()) return fail(bound.error());
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
                  {"auth", std::string(who.approved_request ? "approved" : AuthWayName(who.way))},
                  {"protocol", request.protocol}}};
  const int64_t revoke_at = now + Millis(options_.supersede_grace);
  issue.in_transaction = [tmpl, who, now, revoke_at](store::Tx& tx,
                                                     const store::CertificateRecord& rec) -> Result<void> {
    CF_RETURN_IF_ERROR(CheckAgain(tx, who, now));
    if (who.approved_request) {
      CF_ASSIGN_OR_RETURN(bool issued, store::SetEnrollRequestState(tx, *who.approved_request, "approved", "issued",
                                                                    std::nullopt, rec.serial, now));
      if (!issued) return detail::Denied("the enrollment request was answered already");
    }
    return registry::Registry::RecordProvisioning(tx, *tmpl, who.device_id, rec.serial, now, revoke_at, who.new_device);
  };
  issuer_.IssueAsync(std::move(issue), kActor, [done = std::move(done)](Result<issuance::Issued> created) {
    if (!created.ok()) return done(created.error());
    done(Enrolled{std::move(created->record), std::move(created->chain_pem), std::move(created->private_key_pem),
                  std::nullopt});
  });
}

Result<void> EnrollService::KeyGoesOverTls(const pki::Csr& csr) {
  // RFC 7030 4.4.1.1 and 4.4.1.2: a client that names a key to encrypt the private key to
  // must get it encrypted, or no key; certfleet sends it as PKCS#8 inside the TLS connection.
  constexpr std::string_view kDecryptKeyId = "1.2.840.113549.1.9.16.2.37";       // id-aa-decryptKeyID
  constexpr std::string_view kAsymmDecryptKeyId = "1.2.840.113549.1.9.16.2.54";  // id-aa-asymmDecryptKeyID
  for (const auto& oid : csr.other_attributes) {
    if (oid == kDecryptKeyId || oid == kAsymmDecryptKeyId) {
      return MakeError(ErrorCode::kInvalidArgument,
                       fmt::format("the CSR asks for the generated key encrypted ({} attribute): certfleet sends it "
                                   "unencrypted inside this TLS connection only; send the CSR without the attribute",
                                   oid == kDecryptKeyId ? "DecryptKeyIdentifier" : "AsymmetricDecryptKeyIdentifier"));
    }
  }
  return Ok();
}

Result<void> EnrollService::CheckBinding(const EnrollRequest& request, const pki::Csr& csr) {
  // RFC 7030 3.5: a challengePassword that carries the channel binding ties the CSR to this
  // TLS connection.
  if (!csr.challenge_password || request.protocol != "est") return Ok();
  // A connection without one (TLS 1.2 without the extended master secret) cannot vouch for
  // it: a CSR relayed from another connection would pass.
  if (request.credentials.channel_binding.empty()) {
    return detail::Denied(
        "the CSR has a challengePassword, but this TLS connection has no channel binding to check it against "
        "(TLS 1.3, or TLS 1.2 with the extended master secret, has one)");
  }
  if (!ConstantTimeEquals(*csr.challenge_password, Base64Encode(request.credentials.channel_binding))) {
    return detail::Denied("the CSR's challengePassword is not this TLS connection's channel binding (RFC 7030 3.5)");
  }
  return Ok();
}

void EnrollService::Hold(const Profile& profile, const std::string& protocol, bool template_request,
                         const pki::Csr& csr, const Authorized& who,
                         const std::function<void(Result<Enrolled>)>& done) {
  const int64_t now = clock_.NowMillis();
  // A CMP certificate template is kept under its own label: it is no PKCS#10 request.
  store::EnrollRequestRecord pending{
      0,
      profile.label,
      Sha256Hex(csr.der),
      who.device_id,
      pki::PemEncode(template_request ? "CERTIFICATE TEMPLATE" : "CERTIFICATE REQUEST", csr.der),
      "pending",
      std::nullopt,
      now,
      std::nullopt,
      std::nullopt,
      who.new_device,
      who.presented_serial};
  auto id = store::Write(store_, [&](store::Tx& tx) -> Result<int64_t> {
    // One waiting request a device, whatever the profile and node: a device cannot fill the
    // queue with fresh CSRs.
    CF_RETURN_IF_ERROR(LockDevice(tx, who.device_id));
    CF_ASSIGN_OR_RETURN(auto waiting, store::PendingEnrollRequestOf(tx, who.device_id));
    if (waiting) {
      return MakeError(
          ErrorCode::kAlreadyExists,
          fmt::format("device {} has request {} waiting for approval; send that one again", who.device_id, *waiting));
    }
    if (who.secret_id) {
      CF_ASSIGN_OR_RETURN(bool used, store::UseEnrollSecret(tx, *who.secret_id, who.device_id, now));
      if (!used) return detail::Unauthenticated(std::string(detail::kSecretRefused));
    }
    CF_ASSIGN_OR_RETURN(int64_t id, store::InsertEnrollRequest(tx, pending));
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, kActor, "enroll.request", fmt::format("enroll-request:{}", id),
                                          json::serialize(json::object{{"profile", profile.label},
                                                                       {"device_id", who.device_id},
                                                                       {"auth", AuthWayName(who.way)},
                                                                       {"protocol", protocol}})));
    return id;
  });
  if (!id.ok()) return done(id.error());
  done(Enrolled{{}, {}, std::nullopt, *id});
}

Result<void> EnrollService::Serves(std::string_view label) {
  CF_RETURN_IF_ERROR(ServedProfile(label));
  return Ok();
}

Result<void> EnrollService::RevokeRejected(std::string_view serial) {
  // The device keeps the certificate it had: the one the refused certificate superseded is its
  // current one again, and no longer due for revocation (RFC 4210 5.3.18: a rejected
  // certificate is not taken into use).
  const int64_t now = clock_.NowMillis();
  Result<void> restored_old = store::Write(store_, [&](store::Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(auto links, store::LinksTo(tx, store::kThingCertificate, serial, 1));
    if (links.empty()) return Ok();
    const std::string& device = links.front().from_name;
    CF_ASSIGN_OR_RETURN(auto restored, registry::Registry::TakeBackProvisioning(tx, device, serial, now));
    return store::AppendAudit(
        tx, now, kActor, "device.enroll.refused", fmt::format("certificate:{}", serial),
        json::serialize(json::object{{"device_id", device},
                                     {"restored", restored ? json::value(*restored) : json::value(nullptr)}}));
  });
  // Revoked whatever became of the restoring: the client refused it.
  CF_RETURN_IF_ERROR(issuer_.Revoke(serial, "unspecified", /*cascade=*/false, kActor));
  return restored_old;
}

Result<int> EnrollService::RevokeUnconfirmed() {
  constexpr int kBatch = 100;           // a run's; the next run goes on
  constexpr int64_t kRetryMs = 60'000;  // a failed revocation's next try
  CF_ASSIGN_OR_RETURN(auto overdue, store::Read(store_, [now = clock_.NowMillis()](store::Tx& tx) {
                        return store::UnconfirmedCmpCertificates(tx, now, kBatch);
                      }));
  int revoked = 0;
  std::optional<Error> failed;
  for (const auto& u : overdue) {
    CF_ASSIGN_OR_RETURN(bool taken,
                        store::Write(store_, [&](store::Tx& tx) { return store::EndCmpConfirmation(tx, u.serial); }));
    if (!taken) continue;  // confirmed or rejected meanwhile
    if (Result<void> r = RevokeRejected(u.serial); !r.ok()) {
      // Waits again, tried after the others (a minute on), so that one that keeps failing holds
      // none of them back.
      log::Error("revoking a CMP certificate never confirmed", {{"serial", u.serial}, {"error", r.error().message}});
      (void)store::Write(store_, [&](store::Tx& tx) {
        return store::AwaitCmpConfirmation(tx, u.transaction_id, u.serial, clock_.NowMillis() + kRetryMs);
      });
      failed = r.error();
      continue;
    }
    log::Warn("revoked a CMP certificate its client never confirmed", {{"serial", u.serial}});
    ++revoked;
  }
  if (failed) return *failed;
  return revoked;
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
