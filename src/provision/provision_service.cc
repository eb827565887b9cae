#include "provision/provision_service.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <charconv>
#include <future>

#include "core/crypto.h"
#include "core/log.h"
#include "provision/device_upload.h"
#include "registry/registry.h"
#include "store/audit_repo.h"
#include "store/devices_repo.h"
#include "store/imports_repo.h"

namespace certfleet::provision {
namespace {

// Superseded certificates revoked per run of the job; the next run takes the rest.
constexpr int kRevokeBatch = 1000;

}  // namespace

ProvisionService::ProvisionService(store::Store& store, issuance::Issuer& issuer, registry::Registry& registry,
                                   const Clock& clock, Options options)
    : store_(store),
      issuer_(issuer),
      registry_(registry),
      clock_(clock),
      options_(std::move(options)),
      by_address_(clock, options_.address_rate_per_minute),
      by_device_(clock, options_.device_rate_per_minute),
      devices_(store, store::FindDevicesForAuth, options_.post) {}

Result<pki::Csr> ProvisionService::ReadCsr(std::string_view data) {
  CF_ASSIGN_OR_RETURN(pki::Csr csr, pki::ParseCsr(data));
  if (csr.common_names != 1) {
    return MakeError(
        ErrorCode::kInvalidArgument,
        fmt::format("the CSR's subject must have exactly one common name, the device id; it has {}", csr.common_names));
  }
  if (!IsValidDeviceId(csr.common_name)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     fmt::format("the CSR's common name is not a device id (1 to {} of A-Z a-z 0-9 . _ : - starting "
                                 "with a letter or digit)",
                                 kMaxDeviceIdBytes));
  }
  return csr;
}

void ProvisionService::ProvisionAsync(pki::Csr csr, std::function<void(Result<Provisioned>)> done) {
  auto shared = std::make_shared<const pki::Csr>(std::move(csr));
  devices_.Find(shared->common_name,
                [this, shared, done = std::move(done)](Result<std::optional<store::DeviceRecord>> device) {
                  Authorized(shared, std::move(device), done);
                });
}

void ProvisionService::Authorized(const std::shared_ptr<const pki::Csr>& csr,
                                  Result<std::optional<store::DeviceRecord>> device,
                                  const std::function<void(Result<Provisioned>)>& done) {
  const std::string device_id = csr->common_name;
  const std::string key_sha256 = Sha256Hex(csr->spki_der);
  std::shared_ptr<const registry::ProvisioningTemplate> tmpl;
  Result<void> authorized = [&]() -> Result<void> {
    if (!device.ok()) return device.error();
    CF_RETURN_IF_ERROR(registry::Registry::AuthorizeDeviceKey(*device, device_id, key_sha256));
    CF_ASSIGN_OR_RETURN(tmpl, TemplateFor((*device)->batch));
    if (!tmpl) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       fmt::format("no provisioning template for device {} (batch '{}') and no default template",
                                   device_id, (*device)->batch));
    }
    return Ok();
  }();
  if (!authorized.ok()) return done(authorized.error());

  issuance::IssueRequest request;
  request.type = pki::CertType::kDevice;
  request.name = device_id;
  request.subject = store::SubjectKind::kDevice;
  request.parent = tmpl->ca_fqdn;
  request.validity_days = tmpl->validity_days;
  request.csr = csr;
  // One audit entry for the certificate and what provisioning wrote with it.
  request.audit = {"device.provision", {{"device_id", device_id}, {"template", tmpl->name}}};
  const int64_t now = clock_.NowMillis();
  const int64_t revoke_at = now + Millis(options_.supersede_grace);
  request.in_transaction = [tmpl, device_id, key_sha256, now, revoke_at](
                               store::Tx& tx, const store::CertificateRecord& rec) -> Result<void> {
    // Checked again where it counts: the device may have been disabled or re-keyed meanwhile.
    CF_RETURN_IF_ERROR(store::CheckDeviceForAuth(tx, device_id, [device_id, key_sha256](const auto& device) {
      return registry::Registry::AuthorizeDeviceKey(device, device_id, key_sha256);
    }));
    CF_RETURN_IF_ERROR(store::MarkDeviceProvisioned(tx, device_id, now));
    return registry::Registry::RecordProvisioning(tx, *tmpl, device_id, rec.serial, now, revoke_at);
  };
  issuer_.IssueAsync(
      std::move(request), kActor, [done, device_id, endpoint = tmpl->endpoint](Result<issuance::Issued> created) {
        if (!created.ok()) return done(created.error());
        done(Provisioned{std::move(created->record), std::move(created->chain_pem), device_id, endpoint});
      });
}

Result<std::shared_ptr<const registry::ProvisioningTemplate>> ProvisionService::TemplateFor(const std::string& batch) {
  const int64_t now = clock_.NowMillis();
  // Read before the store: a change committed after this makes the entry stale at once.
  const uint64_t changes = registry_.TemplateChanges();
  {
    std::lock_guard lock(mu_);
    if (auto it = templates_.find(batch);
        it != templates_.end() && it->second.changes == changes && now - it->second.fetched_at < kTemplateCacheMs) {
      return it->second.tmpl;
    }
  }
  CF_ASSIGN_OR_RETURN(auto found,
                      store::Read(store_, [&](store::Tx& tx) { return registry::Registry::TemplateFor(tx, batch); }));
  std::shared_ptr<const registry::ProvisioningTemplate> tmpl;
  if (found) tmpl = std::make_shared<const registry::ProvisioningTemplate>(std::move(*found));
  std::lock_guard lock(mu_);
  // Bounded: batches are few, but a device table could name many; start over past the bound.
  if (templates_.size() >= kMaxCachedBatches) templates_.clear();
  templates_[batch] = CachedTemplate{tmpl, now, changes};
  return tmpl;
}

Result<Provisioned> ProvisionService::Provision(pki::Csr csr) {
  std::promise<Result<Provisioned>> promise;
  auto future = promise.get_future();
  ProvisionAsync(std::move(csr), [&promise](Result<Provisioned> r) { promise.set_value(std::move(r)); });
  return future.get();
}

std::string ProvisionService::Signature(std::string_view serial, std::string_view expires) const {
  return Base64UrlEncode(HmacSha256(options_.url_key, fmt::format("certfleet retrieve v1:{}:{}", serial, expires)));
}

RetrieveLink ProvisionService::MakeRetrieveLink(std::string_view serial) const {
  const int64_t expires_at = clock_.NowMillis() + Millis(options_.retrieve_ttl);
  const std::string expires = std::to_string(expires_at / 1000);
  return RetrieveLink{fmt::format("{}/v1/provision/certificates/{}?expires={}&signature={}", options_.public_url,
                                  serial, expires, Signature(serial, expires)),
                      expires_at / 1000 * 1000};
}

LinkCheck ProvisionService::CheckRetrieveLink(std::string_view serial, std::string_view expires,
                                              std::string_view signature) const {
  if (!ConstantTimeEquals(Signature(serial, expires), signature)) return LinkCheck::kTampered;
  int64_t seconds = 0;
  auto [end, ec] = std::from_chars(expires.data(), expires.data() + expires.size(), seconds);
  if (ec != std::errc() || end != expires.data() + expires.size()) return LinkCheck::kTampered;
  return seconds * 1000 <= clock_.NowMillis() ? LinkCheck::kExpired : LinkCheck::kValid;
}

Result<std::string> ProvisionService::ChainPem(std::string_view serial) {
  CF_ASSIGN_OR_RETURN(store::CertificateRecord record, issuer_.Get(serial));
  CF_ASSIGN_OR_RETURN(std::string chain, issuer_.ChainOf(record));
  return record.certificate_pem + chain;
}

Result<std::vector<std::string>> ProvisionService::RevokeDevice(std::string_view device_id, std::string_view actor) {
  CF_ASSIGN_OR_RETURN(auto certificates,
                      store::Read(store_, [&](store::Tx& tx) { return store::FindCertificatesByFqdn(tx, device_id); }));
  std::vector<std::string> revoked;
  for (const auto& c : certificates) {
    if (c.subject_kind != store::SubjectKind::kDevice || c.status != store::CertStatus::kActive) continue;
    CF_RETURN_IF_ERROR(issuer_.Revoke(c.serial, "cessationOfOperation", /*cascade=*/false, actor));
    revoked.push_back(c.serial);
  }
  return revoked;
}

Result<int> ProvisionService::RevokeDueSuperseded() {
  const int64_t now = clock_.NowMillis();
  CF_ASSIGN_OR_RETURN(auto due, store::Read(store_, [&](store::Tx& tx) {
                        return store::LinksDue(tx, store::kThingCertificate, now, kRevokeBatch);
                      }));
  int revoked = 0;
  int retired = 0;
  for (const auto& link : due) {
    std::optional<std::string_view> state;  // the link's stays, whatever it is now
    if (store::IsImportedRef(link.to_name)) {
      // A supplier's certificate (W3): not this CA's to revoke. Retired, brokers refuse it.
      state = store::kAttachmentRetired;
      ++retired;
    } else {
      CF_ASSIGN_OR_RETURN(auto cert,
                          store::Read(store_, [&](store::Tx& tx) { return store::FindCertificate(tx, link.to_name); }));
      if (cert && cert->type == CertType::kDevice) {
        CF_ASSIGN_OR_RETURN(issuance::Revoked r, issuer_.Revoke(link.to_name, "superseded", false, kActor));
        revoked += r.newly_revoked;
      } else {
        // Attached before attachments took device certificates only: ended, never revoked.
        log::Warn("a superseded attachment is not a device certificate; left unrevoked",
                  {{"thing", link.from_name}, {"serial", link.to_name}});
      }
    }
    CF_RETURN_IF_ERROR(store::Write(store_, [&](store::Tx& tx) { return store::EndLinkDue(tx, link, state); }));
  }
  if (revoked > 0 || retired > 0) {
    log::Info("ended superseded device certificates", {{"revoked", revoked}, {"retired_supplier", retired}});
  }
  return revoked;
}

Result<Rotated> ProvisionService::RotateCa(std::string_view fqdn, std::string_view new_fqdn, std::string_view actor) {
  auto moved = std::make_shared<int>(0);
  const int64_t now = clock_.NowMillis();
  const std::string old_fqdn(fqdn);
  const std::string who(actor);
  auto move_templates = [&registry = registry_, moved, old_fqdn, now, who](
                            store::Tx& tx, const store::CertificateRecord& rec) -> Result<void> {
    CF_ASSIGN_OR_RETURN(*moved, registry.MoveTemplates(tx, old_fqdn, rec.fqdn, now));
    const std::string details =
        boost::json::serialize(boost::json::object{{"new", rec.fqdn}, {"templates_moved", *moved}});
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, who, "ca.rotate", "ca:" + old_fqdn, details));
    return Ok();
  };
  CF_ASSIGN_OR_RETURN(issuance::Issued created, issuer_.Rotate(fqdn, new_fqdn, std::move(move_templates), actor));
  return Rotated{std::move(created), *moved};
}

}  // namespace certfleet::provision
