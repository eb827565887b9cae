#include "registry/objects.h"

#include <fmt/format.h>

#include <set>

#include "core/result.h"
#include "core/text.h"
#include "registry/policy.h"
#include "store/registry_repo.h"

namespace certfleet::registry {
namespace {

constexpr std::string_view kKindNames[] = {store::kObjectThing,  store::kObjectThingType, store::kObjectThingGroup,
                                           store::kObjectPolicy, store::kObjectTemplate,  store::kObjectProfile};
constexpr std::string_view kLinkNames[] = {store::kThingCertificate, store::kPolicyCertificate, store::kGroupThing};

constexpr size_t kMaxDescription = 2028;  // as AWS IoT allows for thing types and groups
constexpr size_t kMaxAttributes = 50;     // attributes of a thing or group
constexpr size_t kMaxAttributeValue = 800;
constexpr size_t kMaxSearchable = 3;  // searchable attributes of a thing type, as in AWS IoT
constexpr size_t kMaxListed = 100;    // groups, policies or batches a template or profile names
constexpr size_t kMaxEndpoint = 512;
constexpr size_t kMaxFqdn = 253;
constexpr size_t kMaxStatements = 100;
constexpr int64_t kMaxTemplateValidityDays = 3650;

Error Invalid(std::string message) { return MakeError(ErrorCode::kInvalidArgument, std::move(message)); }

Result<void> CheckText(std::string_view field, const std::optional<std::string>& text, size_t max) {
  if (text && (text->size() > max || HasControlCharacter(*text))) {
    return Invalid(fmt::format("{} must be printable text of at most {} bytes", field, max));
  }
  return Ok();
}

// Names, each valid and listed once, at most `max_count`.
Result<void> CheckNames(std::string_view field, const std::vector<std::string>& names, size_t max_count) {
  if (names.size() > max_count)
    return Invalid(fmt::format("{} must be an array of at most {} names", field, max_count));
  std::set<std::string_view> seen;
  for (const auto& n : names) {
    CF_RETURN_IF_ERROR(CheckName(fmt::format("{}[]", field), n));
    if (!seen.insert(n).second) return Invalid(fmt::format("{} lists {} twice", field, n));
  }
  return Ok();
}

Result<void> CheckAttributes(const Attributes& attributes) {
  if (attributes.size() > kMaxAttributes) {
    return Invalid(fmt::format("attributes must be an object of at most {} string values", kMaxAttributes));
  }
  for (const auto& [key, value] : attributes) {
    CF_RETURN_IF_ERROR(CheckName("an attribute name", key));
    if (value.size() > kMaxAttributeValue || HasControlCharacter(value)) {
      return Invalid(fmt::format("attribute {} must be a string of at most {} bytes", key, kMaxAttributeValue));
    }
  }
  return Ok();
}

Result<void> CheckDocument(const PolicyDocument& doc) {
  if (doc.text.size() > kMaxPolicyBytes) {
    return Invalid(fmt::format("document is larger than {} bytes", kMaxPolicyBytes));
  }
  if (doc.statements.empty() || doc.statements.size() > kMaxStatements) {
    return Invalid(fmt::format("document.Statement must hold 1 to {} statements", kMaxStatements));
  }
  // Refused now rather than meaning something else at the broker (registry/policy.h).
  auto compiled = CompiledPolicy::Compile("", doc.text);
  if (!compiled.ok()) return compiled.error().Wrap("document");
  return Ok();
}

Result<void> CheckOptionalName(std::string_view field, const std::optional<std::string>& name) {
  return name ? CheckName(field, *name) : Ok();
}

Result<void> CheckBody(const Thing& t) {
  CF_RETURN_IF_ERROR(CheckOptionalName("thing_type", t.thing_type));
  return CheckAttributes(t.attributes);
}

Result<void> CheckBody(const ThingType& t) {
  CF_RETURN_IF_ERROR(CheckText("description", t.description, kMaxDescription));
  return CheckNames("searchable_attributes", t.searchable_attributes, kMaxSearchable);
}

Result<void> CheckBody(const ThingGroup& g) {
  CF_RETURN_IF_ERROR(CheckText("description", g.description, kMaxDescription));
  return CheckAttributes(g.attributes);
}

Result<void> CheckBody(const Policy& p) { return CheckDocument(p.document); }

Result<void> CheckBody(const ProvisioningTemplate& t) {
  if (t.ca_fqdn.empty()) return Invalid("ca_fqdn is required: the CA that signs the devices' certificates");
  CF_RETURN_IF_ERROR(CheckText("ca_fqdn", t.ca_fqdn, kMaxFqdn));
  CF_RETURN_IF_ERROR(CheckText("endpoint", t.endpoint, kMaxEndpoint));
  CF_RETURN_IF_ERROR(CheckOptionalName("thing_type", t.thing_type));
  CF_RETURN_IF_ERROR(CheckNames("thing_groups", t.thing_groups, kMaxListed));
  CF_RETURN_IF_ERROR(CheckNames("batches", t.batches, kMaxListed));
  if (t.policies.size() > kMaxListed) {
    return Invalid(fmt::format("policies must be an array of at most {} {{name, document}}", kMaxListed));
  }
  std::set<std::string_view> seen;
  for (const auto& p : t.policies) {
    CF_RETURN_IF_ERROR(CheckName("policies[].name", p.name));
    if (!seen.insert(p.name).second) return Invalid(fmt::format("policies lists {} twice", p.name));
    CF_RETURN_IF_ERROR(CheckDocument(p.document));
  }
  if (t.validity_days && (*t.validity_days < 1 || *t.validity_days > kMaxTemplateValidityDays)) {
    return Invalid(fmt::format("validity_days must be an integer from 1 to {}", kMaxTemplateValidityDays));
  }
  return Ok();
}

Result<void> CheckBody(const ProductProfile& p) {
  // As the seed's profiles: every imported thing gets at least one policy.
  if (p.policies.empty()) return Invalid("policies must name at least one policy");
  CF_RETURN_IF_ERROR(CheckOptionalName("thing_type", p.thing_type));
  CF_RETURN_IF_ERROR(CheckNames("thing_groups", p.thing_groups, kMaxListed));
  return CheckNames("policies", p.policies, kMaxListed);
}

}  // namespace

std::string_view KindName(Kind kind) { return kKindNames[static_cast<int>(kind)]; }
std::string_view LinkName(Link link) { return kLinkNames[static_cast<int>(link)]; }

const std::string& NameOf(const Body& body) {
  return std::visit([](const auto& b) -> const std::string& { return b.name; }, body);
}

Result<void> CheckName(std::string_view field, std::string_view name) {
  if (!IsValidName(name, kMaxNameBytes)) return Invalid(NameRule(field));
  return Ok();
}

Result<void> Check(const Body& body) {
  CF_RETURN_IF_ERROR(CheckName("name", NameOf(body)));
  return std::visit([](const auto& b) { return CheckBody(b); }, body);
}

bool IsValidDeviceId(std::string_view id) { return IsValidName(id, kMaxDeviceIdBytes); }

}  // namespace certfleet::registry
