#pragma once

#include <atomic>
#include <boost/json/object.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "store/registry_repo.h"
#include "store/store.h"

namespace certfleet::registry {

// The kinds of registry object, as the API names them ("thing", "thing-type", ...). A
// profile (W3) names the thing type, groups and policies a bulk import gives its things;
// what it names is checked when an import starts, not when the profile is written.
enum class Kind { kThing, kThingType, kThingGroup, kPolicy, kTemplate, kProfile };
std::string_view KindName(Kind kind);

using store::kAttachmentActive;
using store::kAttachmentSuperseded;
using store::kBatchTemplate;
using store::kGroupThing;
using store::kPolicyCertificate;
using store::kThingCertificate;
// The batch name the default template is linked from; never a valid batch name.
inline constexpr std::string_view kDefaultBatch = "*";

// A provisioning template as issuance uses it.
struct ProvisioningTemplate {
  std::string name;
  std::string ca_fqdn;   // the CA that signs the devices' certificates
  std::string endpoint;  // where devices connect afterwards; given back to them
  std::optional<std::string> thing_type;
  std::vector<std::string> thing_groups;
  std::vector<std::pair<std::string, std::string>> policies;  // name, the policy's stored body ({"document": …})
  std::optional<int64_t> validity_days;
};

// A product profile as a bulk import (W3) uses it: what each imported thing gets.
struct ProductProfile {
  std::optional<std::string> thing_type;
  std::vector<std::string> groups;
  std::vector<std::string> policies;
};

// The registry's name rule (core's IsValidName) for every object and link, whoever writes
// it (the API, W3's imports): kInvalidArgument naming `field` otherwise.
Result<void> CheckName(std::string_view field, std::string_view name);

struct ListFilter {
  std::optional<std::string> ref;    // things: their type; templates: their CA
  std::optional<std::string> group;  // things: members of this group
  std::optional<std::string> after;  // the last name of the previous page
  int limit = 100;
};

// The registry floor: things, thing types, thing groups, policies, provisioning templates
// (W2) and product profiles (W3), their links, and what provisioning writes into it. Every
// change is audited.
// Bodies are JSON objects, validated here; an object is answered as its JSON view (its
// fields plus name, created_at and updated_at). Thread-safe.
class Registry {
 public:
  Registry(store::Store& store, const Clock& clock) : store_(store), clock_(clock) {}

  Result<boost::json::object> Create(Kind kind, const boost::json::object& body, std::string_view actor);
  // A thing's view also shows its groups, certificates (with status) and effective policies.
  Result<boost::json::object> Get(Kind kind, std::string_view name);
  Result<std::vector<boost::json::object>> List(Kind kind, const ListFilter& filter);
  // Replaces the fields the body gives; a `name` in it must be the object's.
  Result<boost::json::object> Update(Kind kind, std::string_view name, const boost::json::object& body,
                                     std::string_view actor);
  // Refused (kFailedPrecondition, naming the dependency) while something depends on it.
  Result<void> Delete(Kind kind, std::string_view name, std::string_view actor);

  // Links a thing to a certificate, a policy to a certificate, or a thing to a group. `kind`
  // is one of kThingCertificate, kPolicyCertificate, kGroupThing. Attaching twice is no error.
  Result<void> Attach(std::string_view kind, std::string_view from, std::string_view to, std::string_view actor);
  // kNotFound if they were not linked.
  Result<void> Detach(std::string_view kind, std::string_view from, std::string_view to, std::string_view actor);

  // The template of the batch, else the default template; nullopt if neither exists.
  static Result<std::optional<ProvisioningTemplate>> TemplateFor(store::Tx& tx, std::string_view batch);
  // What provisioning writes with a device's new certificate, in its transaction: the thing
  // (created with the template's type, or found), the certificate attached to it, the thing
  // added to the template's groups, its policies (created if missing) attached to the
  // certificate. The thing's earlier active certificates become superseded, due for
  // revocation at `revoke_superseded_at`.
  static Result<void> RecordProvisioning(store::Tx& tx, const ProvisioningTemplate& tmpl, std::string_view thing,
                                         std::string_view serial, int64_t now, int64_t revoke_superseded_at);
  // The profile `name`, once everything it names is known to exist (as Thingpress checks
  // first): kNotFound for no such profile, kFailedPrecondition naming what is missing.
  static Result<ProductProfile> ProfileFor(store::Tx& tx, std::string_view name);
  // Points every template signing with `old_ca` at `new_ca`; returns how many.
  Result<int> MoveTemplates(store::Tx& tx, std::string_view old_ca, std::string_view new_ca, int64_t now);

  // Counts this registry's changes to provisioning templates (create, update, delete, CA
  // rotation), so that a cache of templates can tell that it is stale.
  uint64_t TemplateChanges() const;

  // Largest policy document, serialized.
  static constexpr size_t kMaxPolicyBytes = size_t{20} * 1024;

 private:
  store::Store& store_;
  const Clock& clock_;
  std::atomic<uint64_t> template_changes_{0};
};

}  // namespace certfleet::registry
