#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "store/store.h"

namespace certfleet::store {

// The registry's vocabulary, shared by the workflows that write it (W2 provisioning, W3
// imports). Kinds of object:
inline constexpr std::string_view kObjectThing = "thing";
inline constexpr std::string_view kObjectThingType = "thing-type";
inline constexpr std::string_view kObjectThingGroup = "thing-group";
inline constexpr std::string_view kObjectPolicy = "policy";
inline constexpr std::string_view kObjectTemplate = "provisioning-template";
inline constexpr std::string_view kObjectProfile = "profile";
// Kinds of link, each directed from -> to:
inline constexpr std::string_view kThingCertificate = "thing-certificate";    // thing -> certificate
inline constexpr std::string_view kPolicyCertificate = "policy-certificate";  // policy -> certificate
inline constexpr std::string_view kGroupThing = "group-thing";                // group -> thing
inline constexpr std::string_view kBatchTemplate = "batch-template";          // batch -> template
// template -> thing, for a thing no registered device stands for: the template it enrolled through
inline constexpr std::string_view kTemplateThing = "template-thing";
// States of a thing-certificate link.
inline constexpr std::string_view kAttachmentActive = "active";
inline constexpr std::string_view kAttachmentSuperseded = "superseded";
// A supplier's certificate (W3) superseded past its grace: not certfleet's to revoke, it is
// retired instead, and brokers refuse it.
inline constexpr std::string_view kAttachmentRetired = "retired";

// An object of the W2 registry (a thing, thing type, thing group, policy or provisioning
// template): its kind, name, the JSON body the registry service validated, and `ref`, the
// one reference lists filter by.
struct RegistryObject {
  std::string kind;
  std::string name;
  std::optional<std::string> ref;
  std::string body;  // JSON object
  int64_t created_at = 0;
  int64_t updated_at = 0;
};

// kAlreadyExists if the kind has an object of that name.
Result<void> InsertObject(Tx& tx, const RegistryObject& o);
// The same for several in one write (deferred), but an existing object stays as it is and is
// no error.
Result<void> InsertObjectsIfMissing(Tx& tx, const std::vector<RegistryObject>& objects);
// Things (kObjectThing, ref = their type) in one write: each missing one is added, and an
// existing one takes the type given (its ref and its body's "thing_type", the rest of the
// body as it was) unless that is null. Each name once per call; deferred.
Result<void> PutThings(Tx& tx, const std::vector<RegistryObject>& things);
// Replaces ref and body; false if there is no such object.
Result<bool> UpdateObject(Tx& tx, const RegistryObject& o);
Result<std::optional<RegistryObject>> FindObject(Tx& tx, std::string_view kind, std::string_view name);
// False if there was no such object.
Result<bool> DeleteObject(Tx& tx, std::string_view kind, std::string_view name);

struct ObjectFilter {
  std::string kind;
  std::optional<std::string> ref;
  std::optional<std::string> after;  // the last name of the previous page
  int limit = 100;
};
// In name order.
Result<std::vector<RegistryObject>> ListObjects(Tx& tx, const ObjectFilter& filter);

// A link between two names, directed as its kind says (see migration 6).
struct RegistryLink {
  std::string kind;
  std::string from_name;
  std::string to_name;
  std::string state;              // "" where the kind has none
  std::optional<int64_t> due_at;  // a superseded certificate's revocation time
  int64_t created_at = 0;
};

// The writes of links and of objects that may exist already are deferred (see
// Tx::ExecDeferred): their errors come with the transaction's next read or its commit.
// Adds the link, or sets the state and due time of an existing one.
Result<void> PutLink(Tx& tx, const RegistryLink& link);
// The same for many links in one write (see InsertRows), each link once.
Result<void> PutLinks(Tx& tx, const std::vector<RegistryLink>& links);
// Adds the links that do not exist, in one write (see InsertRows); a link may come more than
// once.
Result<void> AddLinksIfMissing(Tx& tx, const std::vector<RegistryLink>& links);
// False if there was no such link.
Result<bool> DeleteLink(Tx& tx, std::string_view kind, std::string_view from_name, std::string_view to_name);
// Retires the thing's active and superseded certificates (kAttachmentRetired): brokers refuse
// them. A superseded one keeps its due time, when it is revoked. How many.
Result<int64_t> RetireThingCertificates(Tx& tx, std::string_view thing);
// A link's due time is past and done with: cleared, and its state set to `state` if given (as
// it is now otherwise, whatever it was when it was found due).
Result<void> EndLinkDue(Tx& tx, const RegistryLink& link, std::optional<std::string_view> state);
// Every link of the kind from `from_name`, or to `to_name`; how many there were.
Result<int64_t> DeleteLinksFrom(Tx& tx, std::string_view kind, std::string_view from_name);
Result<int64_t> DeleteLinksTo(Tx& tx, std::string_view kind, std::string_view to_name);
// Links of the kind from `from_name` with to_name after `after`, in to_name order, at most `limit`.
Result<std::vector<RegistryLink>> LinksFrom(Tx& tx, std::string_view kind, std::string_view from_name,
                                            std::string_view after = "", int limit = 10'000);
// Links of the kind to `to_name`, in from_name order, at most `limit`.
Result<std::vector<RegistryLink>> LinksTo(Tx& tx, std::string_view kind, std::string_view to_name, int limit = 10'000);
// Links of the kind whose due time has come (due_at <= now), oldest first, at most `limit`.
Result<std::vector<RegistryLink>> LinksDue(Tx& tx, std::string_view kind, int64_t now, int limit);
// What provisioning writes with a certificate, gathered until the transaction's end (see
// Tx::Gathered), so that a group commit's provisionings take three statements on PostgreSQL
// whatever their number, and one per thing for the replaced links:
//   - `objects`, added unless they exist (the thing, the template's policies);
//   - `links`, added unless they exist (the thing's groups, the certificate's policies);
//   - `replacing`, a link (a thing's certificate, in state "active") that replaces its
//     from_name's links of its kind in the same state: they move to `replaced_state`, due at
//     `replaced_due_at`. Of several for one from_name in a transaction, the last stays.
struct LinkReplacement {
  RegistryLink link;
  std::string replaced_state;
  std::optional<int64_t> replaced_due_at;
};
struct ProvisioningWrites {
  std::vector<RegistryObject> objects;
  std::vector<RegistryLink> links;
  LinkReplacement replacing;
};
// Reads in the same transaction see these rows only after FlushProvisioningWrites.
Result<void> GatherProvisioningWrites(Tx& tx, ProvisioningWrites writes);
Result<void> FlushProvisioningWrites(Tx& tx);

// The registry's counts: objects by kind; certificates attached to things by source
// ("certfleet" for those issued here, else the W3 supplier) and status.
struct RegistryCounts {
  std::vector<std::pair<std::string, int64_t>> objects;  // (kind, count)
  struct Certificates {
    std::string source;
    std::string status;
    int64_t count = 0;
  };
  std::vector<Certificates> certificates;  // by source, then status
};
Result<RegistryCounts> CountRegistry(Tx& tx);

}  // namespace certfleet::store
