// Who an enrolling client is, and the same checked again in the transaction that issues.
#include <fmt/format.h>

#include "core/crypto.h"
#include "core/text.h"
#include "enroll/enroll_service.h"
#include "enroll/errors.h"
#include "pki/certificate.h"
#include "registry/registry.h"
#include "store/certificates_repo.h"
#include "store/devices_repo.h"
#include "store/imports_repo.h"
#include "store/registry_repo.h"

namespace certfleet::enroll {
namespace {

using detail::Denied;
using detail::Unauthenticated;

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

// A new device's id is not a thing yet: a batch's secret or a manufacturer CA's certificate
// enrolls new devices, never one the registry knows (and whose groups and policies it would take).
// Both look at registry rows that an earlier enrollment of the same group commit may have
// gathered for the transaction's end: written first.
Result<void> NewThing(store::Tx& tx, std::string_view device, std::string_view why) {
  CF_RETURN_IF_ERROR(store::FlushProvisioningWrites(tx));
  CF_ASSIGN_OR_RETURN(auto thing, store::FindObject(tx, store::kObjectThing, device));
  if (thing) return Denied(fmt::format("thing {} exists already; {} enrolls a new device only", device, why));
  return Ok();
}

// The certificate is still the thing's current one: a superseded certificate (whose key the
// device rotated away from) renews nothing, nor does one under a CA revoked without its
// certificates. `for_revocation`: a device revoking its own certificate may, whatever its CA,
// and a superseded one in its grace period too (its key may be why it rotated).
Result<void> CurrentCertificate(store::Tx& tx, std::string_view serial, bool for_revocation = false) {
  CF_RETURN_IF_ERROR(store::FlushProvisioningWrites(tx));
  CF_ASSIGN_OR_RETURN(store::CertStatus status,
                      for_revocation ? store::CertificateStatus(tx, serial) : store::ChainStatus(tx, serial));
  if (status != store::CertStatus::kActive) return Denied("the client's certificate or a CA above it is revoked");
  CF_ASSIGN_OR_RETURN(auto links, store::LinksTo(tx, store::kThingCertificate, serial, 1));
  const bool usable = !links.empty() && (links.front().state == store::kAttachmentActive ||
                                         (for_revocation && links.front().state == store::kAttachmentSuperseded));
  if (!usable) {
    return Denied("the client's certificate was replaced; re-enroll with the current one");
  }
  return Ok();
}

// A device whose batch chose its template (as W2 provisions it), or a new thing that enrolled
// through a template, enrolls only through a profile of that template: another template would
// give it other groups, policies and CA.
Result<void> SameTemplate(store::Tx& tx, std::string_view device_id, const Profile& profile) {
  CF_ASSIGN_OR_RETURN(auto device, store::FindDeviceForAuth(tx, device_id));
  std::optional<std::string> its_template;
  if (device) {
    CF_ASSIGN_OR_RETURN(its_template, registry::Registry::TemplateNameFor(tx, device->batch));
  } else {
    CF_ASSIGN_OR_RETURN(its_template, registry::Registry::EnrolledThrough(tx, device_id));
  }
  if (its_template && *its_template != profile.template_name) {
    return Denied(fmt::format("device {} is provisioned by template {}, not by this profile's {}", device_id,
                              *its_template, profile.template_name));
  }
  return Ok();
}

// Whether `leaf`, the first of `chain` (DER, the leaf first), chains to one of the profile's
// factory_anchors through the others.
Result<bool> FactoryAnchorsVouch(const Profile& profile, X509* leaf, const std::vector<std::string>& chain) {
  if (profile.factory_anchors.empty()) return false;
  CF_ASSIGN_OR_RETURN(auto anchors, pki::CertificatesFromPem(profile.factory_anchors));
  std::vector<pki::X509Ptr> sent;
  for (size_t i = 1; i < chain.size(); ++i) {
    CF_ASSIGN_OR_RETURN(pki::X509Ptr cert, pki::CertificateFromDer(chain[i]));
    sent.push_back(std::move(cert));
  }
  std::vector<X509*> untrusted;
  std::vector<X509*> trusted;
  untrusted.reserve(sent.size());
  trusted.reserve(anchors.size());
  for (const auto& s : sent) untrusted.push_back(s.get());
  for (const auto& a : anchors) trusted.push_back(a.get());
  return pki::VerifyToAnchors(leaf, untrusted, trusted, X509_PURPOSE_SSL_CLIENT).ok();
}

}  // namespace

Result<bool> EnrollService::KnownSigner(std::string_view label, const std::vector<std::string>& chain) {
  if (chain.empty()) return false;
  CF_ASSIGN_OR_RETURN(pki::X509Ptr leaf, pki::CertificateFromDer(chain.front()));
  const std::string serial = pki::SerialHex(X509_get0_serialNumber(leaf.get()));
  const std::string fingerprint = Sha256Hex(chain.front());
  CF_ASSIGN_OR_RETURN(bool known, store::Read(store_, [&](store::Tx& tx) -> Result<bool> {
                        CF_ASSIGN_OR_RETURN(auto issued, store::FindCertificate(tx, serial));
                        if (issued && issued->fingerprint == fingerprint) return true;
                        CF_ASSIGN_OR_RETURN(auto imported, store::ImportedCertificateThings(tx, {fingerprint}));
                        return !imported.empty();
                      }));
  if (known) return true;
  CF_ASSIGN_OR_RETURN(Profile profile, FindProfile(label));
  if (!profile.Allows(AuthWay::kFactory)) return false;
  return FactoryAnchorsVouch(profile, leaf.get(), chain);
}

Result<store::CertificateRecord> EnrollService::PresentedDeviceCertificate(std::string_view der, bool for_revocation) {
  CF_ASSIGN_OR_RETURN(pki::X509Ptr cert, pki::CertificateFromDer(der));
  const std::string serial = pki::SerialHex(X509_get0_serialNumber(cert.get()));
  std::optional<store::CertificateRecord> record;
  CF_RETURN_IF_ERROR(store::Read(store_, [&](store::Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(record, store::FindCertificate(tx, serial));
    if (!record || record->fingerprint != Sha256Hex(der)) {
      return Unauthenticated("the client's certificate is not one certfleet issued");
    }
    if (record->subject_kind != store::SubjectKind::kDevice)
      return Denied("the client's certificate is not a device's");
    return CurrentCertificate(tx, record->serial, for_revocation);
  }));
  if (record->not_after <= clock_.NowMillis()) return Denied("the client's certificate has expired");
  return std::move(*record);
}

Result<EnrollService::Authorized> EnrollService::Authenticate(const Served& served, const EnrollRequest& request,
                                                              const pki::Csr& csr) {
  const Profile& profile = served.profile;
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
    // It renews the device's enrollment, not a new one: through a profile that issues from the
    // same CA, and of the device's template.
    if (record.parent_fqdn != served.tmpl.ca_fqdn) {
      return Denied(
          fmt::format("re-enrollment renews under the CA that issued the certificate ({}); this profile "
                      "issues from {}",
                      record.parent_fqdn, served.tmpl.ca_fqdn));
    }
    CF_RETURN_IF_ERROR(store::Read(store_, [&](store::Tx& tx) { return SameTemplate(tx, record.fqdn, profile); }));
    Authorized who{record.fqdn, AuthWay::kReenroll};
    who.presented_serial = record.serial;
    return who;
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
          OpenSecret(options_.master_key, detail::SecretPurpose(record->id), record->secret_sealed);
      usable = secret && ConstantTimeEquals(*secret, c.secret->second);
    }
    if (!usable) return Unauthenticated(std::string(detail::kSecretRefused));
    Authorized who{record->device_id.value_or(csr.common_name), AuthWay::kSecret};
    who.secret_id = record->id;
    if (record->device_id) {
      CF_RETURN_IF_ERROR(CsrNames(csr, who.device_id, "the secret's"));
      return who;
    }
    if (!registry::IsValidDeviceId(who.device_id)) {
      return MakeError(ErrorCode::kInvalidArgument, "the CSR's common name must be the new device's id");
    }
    who.new_device = true;
    CF_RETURN_IF_ERROR(store::Read(store_, [&](store::Tx& tx) -> Result<void> {
      CF_RETURN_IF_ERROR(NewThing(tx, who.device_id, "a batch's secret"));
      CF_ASSIGN_OR_RETURN(auto registered, store::FindDeviceForAuth(tx, who.device_id));
      if (registered && registered->batch != *record->batch) {
        return Denied(fmt::format("device {} is registered in another batch", who.device_id));
      }
      return Ok();
    }));
    return who;
  }

  if (!c.tls_certificates.empty() && profile.Allows(AuthWay::kFactory)) {
    CF_ASSIGN_OR_RETURN(pki::X509Ptr leaf, pki::CertificateFromDer(c.tls_certificates.front()));
    const std::string fingerprint = Sha256Hex(c.tls_certificates.front());
    CF_ASSIGN_OR_RETURN(auto owners, store::Read(store_, [&](store::Tx& tx) {
                          return store::ImportedCertificateThings(tx, {fingerprint});
                        }));
    if (auto it = owners.find(fingerprint); it != owners.end()) {
      // A supplier's manifest bound this certificate to its thing, unless it was retired since.
      CF_RETURN_IF_ERROR(ValidNow(leaf.get(), "the factory certificate"));
      CF_ASSIGN_OR_RETURN(auto attachment, store::Read(store_, [&](store::Tx& tx) {
                            return store::ImportedCertificateAttachment(tx, fingerprint);
                          }));
      if (attachment == store::kAttachmentRetired) {
        return Denied(
            "the factory certificate was retired (its device deleted while disabled, or replaced past its "
            "grace period)");
      }
      CF_RETURN_IF_ERROR(CsrNames(csr, it->second, "the factory certificate's"));
      CF_RETURN_IF_ERROR(store::Read(store_, [&](store::Tx& tx) { return SameTemplate(tx, it->second, profile); }));
      return Authorized{it->second, AuthWay::kFactory};
    }
    if (!profile.factory_anchors.empty()) {
      CF_ASSIGN_OR_RETURN(bool vouched, FactoryAnchorsVouch(profile, leaf.get(), c.tls_certificates));
      if (vouched) {
        // Only the manufacturer vouches for this one, and for every other device of its CA:
        // it enrolls a new thing, never one the registry knows.
        Authorized who{pki::NameEntry(X509_get_subject_name(leaf.get()), NID_commonName), AuthWay::kFactory};
        if (!registry::IsValidDeviceId(who.device_id)) return Denied("the factory certificate's CN is not a device id");
        CF_RETURN_IF_ERROR(CsrNames(csr, who.device_id, "the factory certificate's"));
        CF_RETURN_IF_ERROR(store::Read(store_, [&](store::Tx& tx) -> Result<void> {
          CF_RETURN_IF_ERROR(NewThing(tx, who.device_id, "a manufacturer CA's certificate"));
          // Nor a device registered with its key (W2), thing or not: it enrolls with that key.
          CF_ASSIGN_OR_RETURN(auto registered, store::FindDeviceForAuth(tx, who.device_id));
          if (registered) {
            return Denied(
                fmt::format("device {} is registered with its key: it enrolls with that key, not a "
                            "manufacturer CA's certificate",
                            who.device_id));
          }
          return Ok();
        }));
        who.new_device = true;
        return who;
      }
    }
  }

  if (request.operation == Operation::kEnroll && profile.Allows(AuthWay::kRegisteredKey)) {
    Authorized who{csr.common_name, AuthWay::kRegisteredKey};
    who.key_sha256 = Sha256Hex(csr.spki_der);
    // One round trip on PostgreSQL: the issuing transaction checks the device again.
    CF_RETURN_IF_ERROR(store::ReadEach(store_, [&](store::Tx& tx) -> Result<void> {
      CF_ASSIGN_OR_RETURN(auto device, store::FindDeviceForAuth(tx, csr.common_name));
      CF_RETURN_IF_ERROR(registry::Registry::AuthorizeDeviceKey(device, csr.common_name, who.key_sha256));
      return SameTemplate(tx, csr.common_name, profile);
    }));
    return who;
  }

  std::string ways;
  for (AuthWay w : profile.auth) {
    if (w == AuthWay::kReenroll || (w == AuthWay::kRegisteredKey && request.operation != Operation::kEnroll)) continue;
    ways += fmt::format("{}{}", ways.empty() ? "" : ", ", AuthWayName(w));
  }
  return Unauthenticated(fmt::format("enrollment profile {} takes: {}", profile.label, ways.empty() ? "none" : ways));
}

Result<void> EnrollService::LockDevice(store::Tx& tx, std::string_view device_id) {
  return store::LockForTransaction(tx, "enroll device:" + std::string(device_id));
}

Result<void> EnrollService::CheckAgain(store::Tx& tx, const Authorized& who, int64_t now) {
  // One enrollment of the device at a time, on any node, where no device row (locked below)
  // stands for it or its certificate is checked again: a new device, a factory certificate's
  // thing (two at once would both become its active certificate), a re-enrollment (the second
  // waits for the first to commit, then finds the certificate replaced).
  if (who.new_device || who.way == AuthWay::kFactory || who.presented_serial) {
    CF_RETURN_IF_ERROR(LockDevice(tx, who.device_id));
  }
  if (who.new_device) CF_RETURN_IF_ERROR(NewThing(tx, who.device_id, "this credential"));
  // The device may have been disabled or re-keyed meanwhile; held until the commit.
  const bool key_registered = who.way == AuthWay::kRegisteredKey && !who.approved_request;
  // A manufacturer CA vouches for new devices only: not one registered since (an approval's wait).
  const bool anchor_vouched = who.way == AuthWay::kFactory && who.new_device;
  CF_RETURN_IF_ERROR(store::CheckDeviceForAuth(
      tx, who.device_id,
      [key_registered, anchor_vouched, id = who.device_id, key = who.key_sha256](const auto& device) -> Result<void> {
        if (key_registered) return registry::Registry::AuthorizeDeviceKey(device, id, key);
        if (device && anchor_vouched) {
          return Denied(fmt::format("device {} is registered with its key: it enrolls with that key", id));
        }
        if (device && device->status == store::kDeviceDisabled) return Denied(fmt::format("device {} is disabled", id));
        return Ok();
      }));
  CF_RETURN_IF_ERROR(store::MarkDeviceProvisioned(tx, who.device_id, now));  // a device registered before
  if (who.presented_serial) CF_RETURN_IF_ERROR(CurrentCertificate(tx, *who.presented_serial));
  if (who.secret_id) {
    CF_ASSIGN_OR_RETURN(bool used, store::UseEnrollSecret(tx, *who.secret_id, who.device_id, now));
    if (!used) return Unauthenticated(std::string(detail::kSecretRefused));
  }
  return Ok();
}

}  // namespace certfleet::enroll
