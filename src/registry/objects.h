#pragma once

// The registry's objects as typed values: what the Registry takes and gives back. Their JSON
// form (the API's and the store's, one and the same) is in registry/json.h.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/result.h"

namespace certfleet::registry {

// The kinds of registry object, as the API names them ("thing", "thing-type", ...), in the
// order of Body's alternatives.
enum class Kind { kThing, kThingType, kThingGroup, kPolicy, kTemplate, kProfile };
std::string_view KindName(Kind kind);

// Kinds of link, each directed from -> to.
enum class Link {
  kThingCertificate,   // thing -> certificate (a serial, or a W3 import's certificate ref)
  kPolicyCertificate,  // policy -> certificate
  kGroupThing,         // thing group -> thing
};
std::string_view LinkName(Link link);

// Longest device id; it becomes a certificate's CN, which X.520 bounds at 64 characters.
inline constexpr size_t kMaxDeviceIdBytes = 64;
// A device id (a device's thing name): a registry name (IsValidName) of at most 64 bytes.
bool IsValidDeviceId(std::string_view id);

// Attribute name -> value, both printable text.
using Attributes = std::map<std::string, std::string, std::less<>>;

// One statement of an IAM-style policy document.
struct PolicyStatement {
  std::optional<std::string> sid;
  bool allow = true;  // Effect: Allow, else Deny
  std::vector<std::string> actions;
  std::vector<std::string> resources;
  std::optional<std::string> condition;  // the Condition block as JSON text, kept as written
};

// An IAM-style policy document: {Version?, Id?, Statement: [...]}. `text` is the document as
// written (serialized), so that it is answered as it was given (a lone Action stays a string).
struct PolicyDocument {
  std::string text;
  std::optional<std::string> version;
  std::optional<std::string> id;
  std::vector<PolicyStatement> statements;
};

struct Thing {
  std::string name;
  std::optional<std::string> thing_type;
  Attributes attributes;
};

struct ThingType {
  std::string name;
  std::optional<std::string> description;
  std::vector<std::string> searchable_attributes;
};

struct ThingGroup {
  std::string name;
  std::optional<std::string> description;
  Attributes attributes;
};

struct Policy {
  std::string name;
  PolicyDocument document;
};

// A policy a provisioning template creates (if missing) and attaches to each certificate.
struct TemplatePolicy {
  std::string name;
  PolicyDocument document;
};

// A W2 provisioning template: what a device provisioned in one of its batches gets.
struct ProvisioningTemplate {
  std::string name;
  std::string ca_fqdn;   // the CA that signs the devices' certificates (lowercase)
  std::string endpoint;  // where devices connect afterwards; given back to them
  std::optional<std::string> thing_type;
  std::vector<std::string> thing_groups;
  std::vector<TemplatePolicy> policies;
  std::vector<std::string> batches;  // the batches it serves
  bool is_default = false;           // serves every batch no other template claims
  std::optional<int64_t> validity_days;
};

// A W3 product profile: what each thing of a bulk import gets, at least one policy (type
// and groups are optional), as the seed's profiles. What it names is checked when an import
// starts, not when the profile is written.
struct ProductProfile {
  std::string name;
  std::optional<std::string> thing_type;
  std::vector<std::string> thing_groups;
  std::vector<std::string> policies;
};

using Body = std::variant<Thing, ThingType, ThingGroup, Policy, ProvisioningTemplate, ProductProfile>;

inline Kind KindOf(const Body& body) { return static_cast<Kind>(body.index()); }
const std::string& NameOf(const Body& body);

// Largest policy document, serialized.
inline constexpr size_t kMaxPolicyBytes = size_t{20} * 1024;

// The registry's name rule (core's IsValidName) for every object and link, whoever writes
// it (the API, W2 provisioning, W3 imports): kInvalidArgument naming `field` otherwise.
Result<void> CheckName(std::string_view field, std::string_view name);
// A body's own content (names, sizes, counts), whoever made it: kInvalidArgument naming the
// field. What it refers to is checked by the Registry, in the transaction that writes it.
Result<void> Check(const Body& body);

// A certificate attached to a thing, as the thing's detail shows it.
struct AttachedCertificate {
  std::optional<std::string> serial;       // a certificate this CA issued
  std::optional<std::string> fingerprint;  // else a supplier's certificate a W3 import brought
  std::optional<std::string> source;       // the import's supplier
  std::string status;                      // the certificate's: active, revoked, expired...
  std::string attachment;                  // active, superseded or retired (store::kAttachment*)
  std::optional<int64_t> not_after;
  std::optional<int64_t> revoke_after;  // a superseded certificate's revocation time
};

// What a thing's detail adds: its groups, its certificates and the policies in force for it
// (those attached to its active certificates).
struct ThingDetail {
  std::vector<std::string> thing_groups;
  std::vector<AttachedCertificate> certificates;
  std::vector<Policy> effective_policies;
};

// A stored object: its body, when it was made and last changed, and for a thing read alone
// its detail.
struct Object {
  Body body;
  int64_t created_at = 0;
  int64_t updated_at = 0;
  std::optional<ThingDetail> detail;
};

}  // namespace certfleet::registry
