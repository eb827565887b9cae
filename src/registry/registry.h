#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "registry/objects.h"
#include "store/devices_repo.h"
#include "store/registry_repo.h"
#include "store/store.h"

namespace certfleet::registry {

using store::kAttachmentActive;
using store::kAttachmentSuperseded;
// The batch name the default template is linked from; never a valid batch name.
inline constexpr std::string_view kDefaultBatch = "*";

struct ListFilter {
  std::optional<std::string> ref;    // things: their type; templates: their CA
  std::optional<std::string> group;  // things: members of this group
  std::optional<std::string> after;  // the last name of the previous page
  int limit = 100;
};

// The registry floor: things, thing types, thing groups, policies, provisioning templates
// (W2) and product profiles (W3), their links, and what provisioning writes into it. Every
// change is audited; every body is checked (objects.h's Check, then what it refers to) in
// the transaction that writes it. Thread-safe.
class Registry {
 public:
  Registry(store::Store& store, const Clock& clock) : store_(store), clock_(clock) {}

  // kAlreadyExists if the kind has an object of that name.
  Result<Object> Create(const Body& body, std::string_view actor);
  // A thing comes with its detail (groups, certificates, effective policies).
  Result<Object> Get(Kind kind, std::string_view name);
  Result<std::vector<Object>> List(Kind kind, const ListFilter& filter);
  // The object as `change` makes it from what is stored, in the transaction that writes it;
  // its name cannot change.
  using Change = std::function<Result<Body>(const Body& current)>;
  Result<Object> Update(Kind kind, std::string_view name, const Change& change, std::string_view actor);
  // Refused (kFailedPrecondition, naming the dependency) while something depends on it.
  Result<void> Delete(Kind kind, std::string_view name, std::string_view actor);

  // Links a thing to a certificate, a policy to a certificate, or a thing to a group.
  // Attaching twice is no error.
  Result<void> Attach(Link link, std::string_view from, std::string_view to, std::string_view actor);
  // kNotFound if they were not linked.
  Result<void> Detach(Link link, std::string_view from, std::string_view to, std::string_view actor);

  // The template of the batch, else the default template; nullopt if neither exists.
  static Result<std::optional<ProvisioningTemplate>> TemplateFor(store::Tx& tx, std::string_view batch);
  // The name of the template of the batch, else of the default template; nullopt if neither.
  static Result<std::optional<std::string>> TemplateNameFor(store::Tx& tx, std::string_view batch);
  // The template `name`; kNotFound if there is none.
  static Result<ProvisioningTemplate> TemplateNamed(store::Tx& tx, std::string_view name);
  // The provisioning authorizer (W2's, and enrollment's by registered key), in this order:
  // kNotFound if the device is not registered, kPermissionDenied if it is disabled or the
  // CSR's key (`csr_key_sha256`, hex SHA-256 of its SubjectPublicKeyInfo) is not its key.
  static Result<void> AuthorizeDeviceKey(const std::optional<store::DeviceRecord>& device, std::string_view device_id,
                                         std::string_view csr_key_sha256);
  // What provisioning writes with a device's new certificate, in its transaction: the thing
  // (created with the template's type, or found), the certificate attached to it, the thing
  // added to the template's groups, its policies (created if missing) attached to the
  // certificate. The thing's earlier active certificates become superseded, due for
  // revocation at `revoke_superseded_at`. Written at the transaction's end, with those of
  // the other provisionings of a group commit. A `new_thing` (one no registered device stands
  // for: enrolled by a batch's secret or a manufacturer CA) keeps the template it enrolled
  // through (EnrolledThrough), as a registered device has its batch's.
  static Result<void> RecordProvisioning(store::Tx& tx, const ProvisioningTemplate& tmpl, std::string_view thing,
                                         std::string_view serial, int64_t now, int64_t revoke_superseded_at,
                                         bool new_thing = false);
  // Takes back what RecordProvisioning did for `serial`, a certificate its device refused (a
  // CMP certConf rejecting it): its link to `thing` is superseded and due at once (so that the
  // revocation sweep takes it even if the caller's revocation fails), and the certificate it
  // replaced (the newest superseded one that is active, unexpired and not yet due for
  // revocation, if any) is the thing's active certificate again, no longer due. The serial restored, or
  // nullopt; nothing changes unless `serial` is the thing's active certificate.
  static Result<std::optional<std::string>> TakeBackProvisioning(store::Tx& tx, std::string_view thing,
                                                                 std::string_view serial, int64_t now);
  // The template a new thing enrolled through (RecordProvisioning); nullopt for one enrolled
  // otherwise, before this was kept, or whose template was deleted since.
  static Result<std::optional<std::string>> EnrolledThrough(store::Tx& tx, std::string_view thing);
  // The profile `name`, once everything it names is known to exist (as Thingpress checks
  // first): kNotFound for no such profile, kFailedPrecondition naming what is missing.
  static Result<ProductProfile> ProfileFor(store::Tx& tx, std::string_view name);
  // Points every template signing with `old_ca` at `new_ca`; returns how many.
  Result<int> MoveTemplates(store::Tx& tx, std::string_view old_ca, std::string_view new_ca, int64_t now);

  // The row of a thing that provisioning (W2) or an import (W3) writes: of `type`, no attributes.
  static store::RegistryObject ThingRow(const std::string& name, const std::optional<std::string>& type, int64_t now);

  // What the registry holds, as the seed's get-iot-summary.sh tells it.
  Result<store::RegistryCounts> Summary();

  // Counts this registry's changes to provisioning templates (create, update, delete, CA
  // rotation), so that a cache of templates can tell that it is stale.
  uint64_t TemplateChanges() const;

 private:
  store::Store& store_;
  const Clock& clock_;
  std::atomic<uint64_t> template_changes_{0};
};

}  // namespace certfleet::registry
