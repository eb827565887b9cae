#include "registry/registry.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <functional>
#include <set>

#include "core/crypto.h"
#include "registry/codec.h"
#include "store/audit_repo.h"
#include "store/certificates_repo.h"
#include "store/imports_repo.h"

namespace certfleet::registry {
namespace {

namespace json = boost::json;
using store::kBatchTemplate;

// Bounds the scan of templates when checking what names an object; far above real counts.
constexpr int kMaxTemplates = 10'000;

Error Invalid(std::string message) { return MakeError(ErrorCode::kInvalidArgument, std::move(message)); }

std::string LinkKind(Link link) { return std::string(LinkName(link)); }

// The object a stored row holds.
Result<Object> Decode(const store::RegistryObject& row, Kind kind) {
  boost::system::error_code ec;
  json::value v = json::parse(row.body, ec);
  if (ec || !v.is_object()) {
    return MakeError(ErrorCode::kInternal, fmt::format("{} {}: stored body unreadable", row.kind, row.name));
  }
  v.get_object()["name"] = row.name;
  CF_ASSIGN_OR_RETURN(Body body, FromJson(kind, v.get_object()));
  return Object{std::move(body), row.created_at, row.updated_at, std::nullopt};
}

// The one reference of a body that lists filter by.
std::optional<std::string> RefOf(const Body& body) {
  if (const auto* t = std::get_if<Thing>(&body)) return t->thing_type;
  if (const auto* t = std::get_if<ProvisioningTemplate>(&body)) return t->ca_fqdn;
  return std::nullopt;
}

store::RegistryObject Encode(const Body& body, int64_t created_at, int64_t updated_at) {
  return {std::string(KindName(KindOf(body))), NameOf(body), RefOf(body),
          json::serialize(ToJson(body)),       created_at,   updated_at};
}

Result<std::optional<Object>> Find(store::Tx& tx, Kind kind, std::string_view name) {
  CF_ASSIGN_OR_RETURN(auto row, store::FindObject(tx, KindName(kind), name));
  if (!row) return std::optional<Object>();
  CF_ASSIGN_OR_RETURN(Object o, Decode(*row, kind));
  return std::optional<Object>(std::move(o));
}

Result<Object> MustFind(store::Tx& tx, Kind kind, std::string_view name) {
  CF_ASSIGN_OR_RETURN(auto o, Find(tx, kind, name));
  if (!o) return MakeError(ErrorCode::kNotFound, fmt::format("no {} {}", KindName(kind), name));
  return std::move(*o);
}

Result<void> MustExist(store::Tx& tx, Kind kind, std::string_view name) {
  CF_ASSIGN_OR_RETURN(auto row, store::FindObject(tx, KindName(kind), name));
  if (!row) return Invalid(fmt::format("there is no {} {}", KindName(kind), name));
  return Ok();
}

Result<std::vector<ProvisioningTemplate>> Templates(store::Tx& tx, std::optional<std::string> ca) {
  CF_ASSIGN_OR_RETURN(
      auto rows, store::ListObjects(tx, {std::string(KindName(Kind::kTemplate)), std::move(ca), {}, kMaxTemplates}));
  std::vector<ProvisioningTemplate> out;
  for (const auto& row : rows) {
    CF_ASSIGN_OR_RETURN(Object o, Decode(row, Kind::kTemplate));
    out.push_back(std::get<ProvisioningTemplate>(std::move(o.body)));
  }
  return out;
}

// The first template `names` says names the object; nullopt when none does.
Result<std::optional<std::string>> TemplateNaming(store::Tx& tx,
                                                  const std::function<bool(const ProvisioningTemplate&)>& names) {
  CF_ASSIGN_OR_RETURN(auto templates, Templates(tx, std::nullopt));
  for (const auto& t : templates) {
    if (names(t)) return std::optional<std::string>(t.name);
  }
  return std::optional<std::string>();
}

// What a body refers to exists, and a template's batches (and default slot) are free or its own.
Result<void> CheckReferences(store::Tx& tx, const Body& body) {
  if (const auto* thing = std::get_if<Thing>(&body); thing && thing->thing_type) {
    return MustExist(tx, Kind::kThingType, *thing->thing_type);
  }
  const auto* t = std::get_if<ProvisioningTemplate>(&body);
  if (t == nullptr) return Ok();
  CF_ASSIGN_OR_RETURN(auto ca, store::FindCa(tx, t->ca_fqdn));
  if (!ca) return Invalid(fmt::format("there is no CA {}", t->ca_fqdn));
  // A template under a revoked CA would fail every provisioning; said now, not then.
  CF_ASSIGN_OR_RETURN(store::CertStatus status, store::ChainStatus(tx, ca->serial));
  if (status != store::CertStatus::kActive) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     fmt::format("the CA {} (or a CA above it) is revoked", t->ca_fqdn));
  }
  if (t->thing_type) CF_RETURN_IF_ERROR(MustExist(tx, Kind::kThingType, *t->thing_type));
  for (const auto& g : t->thing_groups) CF_RETURN_IF_ERROR(MustExist(tx, Kind::kThingGroup, g));
  std::vector<std::string> batches = t->batches;
  if (t->is_default) batches.emplace_back(kDefaultBatch);
  for (const auto& b : batches) {
    CF_ASSIGN_OR_RETURN(auto owner, store::LinksFrom(tx, kBatchTemplate, b, "", 1));
    if (!owner.empty() && owner.front().to_name != t->name) {
      return MakeError(ErrorCode::kAlreadyExists,
                       b == kDefaultBatch
                           ? fmt::format("provisioning template {} is the default already", owner.front().to_name)
                           : fmt::format("batch {} belongs to provisioning template {}", b, owner.front().to_name));
    }
  }
  return Ok();
}

// A template's batch links (and default slot) as it says. A batch is one template's (a unique
// index): another template claiming it at the same moment, which CheckReferences could not see
// yet, makes this write fail. Linked in name order, so that two such writes do not deadlock.
Result<void> LinkBatches(store::Tx& tx, const ProvisioningTemplate& t, int64_t now) {
  CF_ASSIGN_OR_RETURN(auto old, store::LinksTo(tx, kBatchTemplate, t.name));
  for (const auto& l : old) CF_RETURN_IF_ERROR(store::DeleteLink(tx, kBatchTemplate, l.from_name, t.name));
  std::vector<std::string> batches = t.batches;
  if (t.is_default) batches.emplace_back(kDefaultBatch);
  std::sort(batches.begin(), batches.end());
  std::vector<store::RegistryLink> links;
  links.reserve(batches.size());
  for (const auto& b : batches) links.push_back({std::string(kBatchTemplate), b, t.name, "", std::nullopt, now});
  CF_RETURN_IF_ERROR(store::PutLinks(tx, links));
  // The inserts' errors show here, not at the commit, where they would read as the store's.
  Result<void> linked = tx.Flush();
  if (!linked.ok() && linked.error().code == ErrorCode::kAlreadyExists) {
    std::vector<std::string> names;
    names.reserve(batches.size());
    for (const auto& b : batches) names.push_back(b == kDefaultBatch ? "the default slot" : "batch " + b);
    const std::string which = names.size() == 1 ? names.front() : fmt::format("one of {}", fmt::join(names, ", "));
    return MakeError(ErrorCode::kAlreadyExists,
                     fmt::format("{} was given to another provisioning template meanwhile; try again", which));
  }
  return linked;
}

Result<ThingDetail> DetailOf(store::Tx& tx, const std::string& thing) {
  ThingDetail d;
  CF_ASSIGN_OR_RETURN(auto groups, store::LinksTo(tx, store::kGroupThing, thing));
  for (const auto& g : groups) d.thing_groups.push_back(g.from_name);
  CF_ASSIGN_OR_RETURN(auto attached, store::LinksFrom(tx, store::kThingCertificate, thing));
  std::set<std::string> policy_names;
  auto add_policies = [&](const std::string& certificate) -> Result<void> {
    CF_ASSIGN_OR_RETURN(auto policies, store::LinksTo(tx, store::kPolicyCertificate, certificate));
    for (const auto& p : policies) policy_names.insert(p.from_name);
    return Ok();
  };
  for (const auto& link : attached) {
    AttachedCertificate c;
    c.attachment = link.state;
    CF_ASSIGN_OR_RETURN(auto cert, store::FindCertificate(tx, link.to_name));
    if (!cert) {
      // A supplier's certificate (W3), named by its ref: active while attached.
      CF_ASSIGN_OR_RETURN(auto imported, store::FindImportedCertificate(tx, link.to_name));
      if (!imported) continue;
      c.fingerprint = imported->fingerprint;
      c.source = imported->source;
      c.status = "active";
      d.certificates.push_back(std::move(c));
      if (link.state != store::kAttachmentRetired) CF_RETURN_IF_ERROR(add_policies(link.to_name));
      continue;
    }
    c.serial = cert->serial;
    c.status = std::string(store::CertStatusName(cert->status));
    c.not_after = cert->not_after;
    c.revoke_after = link.due_at;
    d.certificates.push_back(std::move(c));
    if (cert->status == store::CertStatus::kActive && link.state != store::kAttachmentRetired) {
      CF_RETURN_IF_ERROR(add_policies(cert->serial));
    }
  }
  for (const auto& name : policy_names) {
    CF_ASSIGN_OR_RETURN(auto policy, Find(tx, Kind::kPolicy, name));
    if (policy) d.effective_policies.push_back(std::get<Policy>(std::move(policy->body)));
  }
  return d;
}

// What must go before `name` of `kind` is deleted, as a message; "" when nothing.
Result<std::string> Dependency(store::Tx& tx, Kind kind, const std::string& name) {
  switch (kind) {
    case Kind::kThingType: {
      CF_ASSIGN_OR_RETURN(auto things, store::ListObjects(tx, {std::string(KindName(Kind::kThing)), name, {}, 1}));
      if (!things.empty()) return fmt::format("thing {} has this type", things.front().name);
      CF_ASSIGN_OR_RETURN(auto tmpl,
                          TemplateNaming(tx, [&](const ProvisioningTemplate& t) { return t.thing_type == name; }));
      if (tmpl) return fmt::format("provisioning template {} names it", *tmpl);
      return std::string();
    }
    case Kind::kThingGroup: {
      CF_ASSIGN_OR_RETURN(auto members, store::LinksFrom(tx, store::kGroupThing, name, "", 1));
      if (!members.empty()) return fmt::format("thing {} is a member", members.front().to_name);
      CF_ASSIGN_OR_RETURN(auto tmpl, TemplateNaming(tx, [&](const ProvisioningTemplate& t) {
                            return std::find(t.thing_groups.begin(), t.thing_groups.end(), name) !=
                                   t.thing_groups.end();
                          }));
      if (tmpl) return fmt::format("provisioning template {} names it", *tmpl);
      return std::string();
    }
    case Kind::kPolicy: {
      CF_ASSIGN_OR_RETURN(auto certs, store::LinksFrom(tx, store::kPolicyCertificate, name, "", 1));
      if (!certs.empty()) return fmt::format("it is attached to certificate {}", certs.front().to_name);
      CF_ASSIGN_OR_RETURN(auto tmpl, TemplateNaming(tx, [&](const ProvisioningTemplate& t) {
                            return std::any_of(t.policies.begin(), t.policies.end(),
                                               [&](const TemplatePolicy& p) { return p.name == name; });
                          }));
      if (tmpl) return fmt::format("provisioning template {} names it", *tmpl);
      return std::string();
    }
    case Kind::kThing: {
      CF_ASSIGN_OR_RETURN(auto certs, store::LinksFrom(tx, store::kThingCertificate, name, "", 1));
      if (!certs.empty()) {
        return fmt::format("certificate {} is attached to it; detach it first", certs.front().to_name);
      }
      return std::string();
    }
    case Kind::kTemplate:
    case Kind::kProfile:
      return std::string();
  }
  return std::string();
}

std::string Subject(Kind kind, std::string_view name) { return fmt::format("{}:{}", KindName(kind), name); }

}  // namespace

Result<Object> Registry::Create(const Body& body, std::string_view actor) {
  CF_RETURN_IF_ERROR(Check(body));
  const Kind kind = KindOf(body);
  const int64_t now = clock_.NowMillis();
  return store::Write(store_, [&](store::Tx& tx) -> Result<Object> {
    CF_RETURN_IF_ERROR(CheckReferences(tx, body));
    store::RegistryObject row = Encode(body, now, now);
    Result<void> inserted = store::InsertObject(tx, row);
    if (!inserted.ok() && inserted.error().code == ErrorCode::kAlreadyExists) {
      return MakeError(ErrorCode::kAlreadyExists, fmt::format("a {} {} exists", KindName(kind), row.name));
    }
    if (!inserted.ok()) return inserted.error();
    if (const auto* t = std::get_if<ProvisioningTemplate>(&body)) {
      CF_RETURN_IF_ERROR(LinkBatches(tx, *t, now));
      ++template_changes_;
    }
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, fmt::format("{}.create", KindName(kind)),
                                          Subject(kind, row.name), row.body));
    return Object{body, now, now, std::nullopt};
  });
}

Result<Object> Registry::Get(Kind kind, std::string_view name) {
  return store::Read(store_, [&](store::Tx& tx) -> Result<Object> {
    CF_ASSIGN_OR_RETURN(Object o, MustFind(tx, kind, name));
    if (kind == Kind::kThing) {
      CF_ASSIGN_OR_RETURN(o.detail, DetailOf(tx, NameOf(o.body)));
    }
    return o;
  });
}

Result<std::vector<Object>> Registry::List(Kind kind, const ListFilter& filter) {
  if (filter.group && filter.ref) return Invalid("filter by thing_type or by group, not both");
  return store::Read(store_, [&](store::Tx& tx) -> Result<std::vector<Object>> {
    std::vector<store::RegistryObject> rows;
    if (filter.group) {
      CF_ASSIGN_OR_RETURN(auto members, store::LinksFrom(tx, store::kGroupThing, *filter.group,
                                                         filter.after.value_or(""), filter.limit));
      for (const auto& m : members) {
        CF_ASSIGN_OR_RETURN(auto row, store::FindObject(tx, KindName(kind), m.to_name));
        if (row) rows.push_back(std::move(*row));
      }
    } else {
      CF_ASSIGN_OR_RETURN(
          rows, store::ListObjects(tx, {std::string(KindName(kind)), filter.ref, filter.after, filter.limit}));
    }
    std::vector<Object> out;
    out.reserve(rows.size());
    for (const auto& row : rows) {
      CF_ASSIGN_OR_RETURN(Object o, Decode(row, kind));
      out.push_back(std::move(o));
    }
    return out;
  });
}

Result<Object> Registry::Update(Kind kind, std::string_view name, const Change& change, std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  return store::Write(store_, [&](store::Tx& tx) -> Result<Object> {
    CF_ASSIGN_OR_RETURN(Object o, MustFind(tx, kind, name));
    CF_ASSIGN_OR_RETURN(Body changed, change(o.body));
    if (KindOf(changed) != kind || NameOf(changed) != NameOf(o.body)) {
      return Invalid("name cannot change; create a new object instead");
    }
    CF_RETURN_IF_ERROR(Check(changed));
    CF_RETURN_IF_ERROR(CheckReferences(tx, changed));
    store::RegistryObject row = Encode(changed, o.created_at, now);
    CF_RETURN_IF_ERROR(store::UpdateObject(tx, row));
    if (const auto* t = std::get_if<ProvisioningTemplate>(&changed)) {
      CF_RETURN_IF_ERROR(LinkBatches(tx, *t, now));
      ++template_changes_;
    }
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, fmt::format("{}.update", KindName(kind)),
                                          Subject(kind, row.name), row.body));
    Object updated{std::move(changed), o.created_at, now, std::nullopt};
    if (kind == Kind::kThing) {
      CF_ASSIGN_OR_RETURN(updated.detail, DetailOf(tx, row.name));
    }
    return updated;
  });
}

Result<void> Registry::Delete(Kind kind, std::string_view name, std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  return store_.Transact([&](store::Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(auto row, store::FindObject(tx, KindName(kind), name));
    if (!row) return MakeError(ErrorCode::kNotFound, fmt::format("no {} {}", KindName(kind), name));
    CF_ASSIGN_OR_RETURN(std::string dependency, Dependency(tx, kind, row->name));
    if (!dependency.empty()) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       fmt::format("{} {} is in use: {}", KindName(kind), row->name, dependency));
    }
    if (kind == Kind::kThing) {
      CF_RETURN_IF_ERROR(store::DeleteLinksTo(tx, store::kGroupThing, row->name));
      CF_RETURN_IF_ERROR(store::DeleteLinksTo(tx, store::kTemplateThing, row->name));
    }
    if (kind == Kind::kTemplate) {
      CF_RETURN_IF_ERROR(store::DeleteLinksTo(tx, kBatchTemplate, row->name));
      // Its things re-enroll through another template of their CA, as before it was kept.
      CF_RETURN_IF_ERROR(store::DeleteLinksFrom(tx, store::kTemplateThing, row->name));
      ++template_changes_;
    }
    CF_RETURN_IF_ERROR(store::DeleteObject(tx, KindName(kind), row->name));
    CF_RETURN_IF_ERROR(
        store::AppendAudit(tx, now, actor, fmt::format("{}.delete", KindName(kind)), Subject(kind, row->name), "{}"));
    return Ok();
  });
}

Result<void> Registry::Attach(Link link, std::string_view from, std::string_view to, std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  return store_.Transact([&](store::Tx& tx) -> Result<void> {
    if (link == Link::kGroupThing) {
      CF_RETURN_IF_ERROR(MustFind(tx, Kind::kThingGroup, from));
      CF_RETURN_IF_ERROR(MustFind(tx, Kind::kThing, to));
    } else {
      CF_RETURN_IF_ERROR(MustFind(tx, link == Link::kThingCertificate ? Kind::kThing : Kind::kPolicy, from));
      CF_ASSIGN_OR_RETURN(auto cert, store::FindCertificate(tx, to));
      if (!cert) return MakeError(ErrorCode::kNotFound, fmt::format("no certificate with serial {}", to));
      // A thing's certificates are ended with it (superseded, then revoked): a CA's or a
      // server's must not be among them.
      if (cert->type != CertType::kDevice) {
        return MakeError(ErrorCode::kFailedPrecondition,
                         fmt::format("certificate {} is a {} certificate; only device certificates are attached to "
                                     "things and policies",
                                     to, CertTypeName(cert->type)));
      }
      if (cert->status == store::CertStatus::kRevoked) {
        return MakeError(ErrorCode::kFailedPrecondition, fmt::format("certificate {} is revoked", to));
      }
    }
    const std::string state(link == Link::kThingCertificate ? kAttachmentActive : "");
    CF_RETURN_IF_ERROR(
        store::PutLink(tx, {LinkKind(link), std::string(from), std::string(to), state, std::nullopt, now}));
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, fmt::format("{}.attach", LinkName(link)),
                                          fmt::format("{}:{}", from, to), "{}"));
    return Ok();
  });
}

Result<void> Registry::Detach(Link link, std::string_view from, std::string_view to, std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  return store_.Transact([&](store::Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(bool removed, store::DeleteLink(tx, LinkName(link), from, to));
    if (!removed) return MakeError(ErrorCode::kNotFound, fmt::format("{} and {} are not attached", from, to));
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, fmt::format("{}.detach", LinkName(link)),
                                          fmt::format("{}:{}", from, to), "{}"));
    return Ok();
  });
}

Result<std::optional<std::string>> Registry::TemplateNameFor(store::Tx& tx, std::string_view batch) {
  std::vector<store::RegistryLink> link;
  if (!batch.empty()) {
    CF_ASSIGN_OR_RETURN(link, store::LinksFrom(tx, kBatchTemplate, batch, "", 1));
  }
  if (link.empty()) {
    CF_ASSIGN_OR_RETURN(link, store::LinksFrom(tx, kBatchTemplate, kDefaultBatch, "", 1));
  }
  if (link.empty()) return std::optional<std::string>();
  return std::optional<std::string>(std::move(link.front().to_name));
}

Result<std::optional<ProvisioningTemplate>> Registry::TemplateFor(store::Tx& tx, std::string_view batch) {
  CF_ASSIGN_OR_RETURN(auto name, TemplateNameFor(tx, batch));
  if (!name) return std::optional<ProvisioningTemplate>();
  CF_ASSIGN_OR_RETURN(ProvisioningTemplate t, TemplateNamed(tx, *name));
  return std::optional<ProvisioningTemplate>(std::move(t));
}

Result<std::optional<std::string>> Registry::EnrolledThrough(store::Tx& tx, std::string_view thing) {
  CF_ASSIGN_OR_RETURN(auto link, store::LinksTo(tx, store::kTemplateThing, thing, 1));
  if (link.empty()) return std::optional<std::string>();
  return std::optional<std::string>(std::move(link.front().from_name));
}

Result<ProvisioningTemplate> Registry::TemplateNamed(store::Tx& tx, std::string_view name) {
  CF_ASSIGN_OR_RETURN(Object o, MustFind(tx, Kind::kTemplate, name));
  return std::get<ProvisioningTemplate>(std::move(o.body));
}

Result<void> Registry::AuthorizeDeviceKey(const std::optional<store::DeviceRecord>& device, std::string_view device_id,
                                          std::string_view csr_key_sha256) {
  if (!device) return MakeError(ErrorCode::kNotFound, fmt::format("device {} is not registered", device_id));
  if (device->status == store::kDeviceDisabled) {
    return MakeError(ErrorCode::kPermissionDenied, fmt::format("device {} is disabled", device_id));
  }
  if (!ConstantTimeEquals(device->key_sha256, csr_key_sha256)) {
    return MakeError(ErrorCode::kPermissionDenied,
                     fmt::format("the CSR's public key is not the one registered for device {}", device_id));
  }
  return Ok();
}

store::RegistryObject Registry::ThingRow(const std::string& name, const std::optional<std::string>& type, int64_t now) {
  return Encode(Thing{name, type, {}}, now, now);
}

Result<void> Registry::RecordProvisioning(store::Tx& tx, const ProvisioningTemplate& tmpl, std::string_view thing,
                                          std::string_view serial, int64_t now, int64_t revoke_superseded_at,
                                          bool new_thing) {
  const std::string thing_name(thing);
  const std::string serial_s(serial);
  store::ProvisioningWrites writes{
      {ThingRow(thing_name, tmpl.thing_type, now)},
      {},
      {{LinkKind(Link::kThingCertificate), thing_name, serial_s, std::string(kAttachmentActive), std::nullopt, now},
       std::string(kAttachmentSuperseded),
       revoke_superseded_at}};
  for (const auto& group : tmpl.thing_groups) {
    writes.links.push_back({LinkKind(Link::kGroupThing), group, thing_name, "", std::nullopt, now});
  }
  if (new_thing)
    writes.links.push_back({std::string(store::kTemplateThing), tmpl.name, thing_name, "", std::nullopt, now});
  for (const auto& p : tmpl.policies) {
    writes.objects.push_back(Encode(Policy{p.name, p.document}, now, now));
    writes.links.push_back({LinkKind(Link::kPolicyCertificate), p.name, serial_s, "", std::nullopt, now});
  }
  return store::GatherProvisioningWrites(tx, std::move(writes));
}

Result<std::optional<std::string>> Registry::TakeBackProvisioning(store::Tx& tx, std::string_view thing,
                                                                  std::string_view serial, int64_t now) {
  CF_RETURN_IF_ERROR(store::FlushProvisioningWrites(tx));
  CF_ASSIGN_OR_RETURN(auto links, store::LinksFrom(tx, store::kThingCertificate, thing));
  const auto refused = std::find_if(links.begin(), links.end(), [&](const auto& l) { return l.to_name == serial; });
  if (refused == links.end() || refused->state != kAttachmentActive) return std::optional<std::string>();
  const store::RegistryLink* restore = nullptr;
  for (const auto& l : links) {
    // One whose revocation is due already (or was refused itself) is not brought back.
    if (l.state != kAttachmentSuperseded || !l.due_at || *l.due_at <= now ||
        (restore && restore->created_at >= l.created_at)) {
      continue;
    }
    CF_ASSIGN_OR_RETURN(auto cert, store::FindCertificate(tx, l.to_name));
    bool usable = false;
    if (cert) {
      usable = cert->status == store::CertStatus::kActive && cert->not_after > now;
    } else {
      CF_ASSIGN_OR_RETURN(auto imported, store::FindImportedCertificate(tx, l.to_name));
      usable = imported.has_value();  // a supplier's certificate (W3): active while attached
    }
    if (usable) restore = &l;
  }
  store::RegistryLink taken_back = *refused;
  taken_back.state = std::string(kAttachmentSuperseded);
  taken_back.due_at = now;
  CF_RETURN_IF_ERROR(store::PutLink(tx, taken_back));
  if (!restore) return std::optional<std::string>();
  store::RegistryLink again = *restore;
  again.state = std::string(kAttachmentActive);
  again.due_at = std::nullopt;
  CF_RETURN_IF_ERROR(store::PutLink(tx, again));
  return std::optional<std::string>(again.to_name);
}

Result<int> Registry::MoveTemplates(store::Tx& tx, std::string_view old_ca, std::string_view new_ca, int64_t now) {
  CF_ASSIGN_OR_RETURN(
      auto rows,
      store::ListObjects(tx, {std::string(KindName(Kind::kTemplate)), std::string(old_ca), {}, kMaxTemplates}));
  for (const auto& row : rows) {
    CF_ASSIGN_OR_RETURN(Object o, Decode(row, Kind::kTemplate));
    std::get<ProvisioningTemplate>(o.body).ca_fqdn = std::string(new_ca);
    CF_RETURN_IF_ERROR(store::UpdateObject(tx, Encode(o.body, o.created_at, now)));
  }
  ++template_changes_;
  return static_cast<int>(rows.size());
}

Result<store::RegistryCounts> Registry::Summary() {
  return store::Read(store_, [](store::Tx& tx) { return store::CountRegistry(tx); });
}

uint64_t Registry::TemplateChanges() const { return template_changes_.load(); }

Result<ProductProfile> Registry::ProfileFor(store::Tx& tx, std::string_view name) {
  CF_ASSIGN_OR_RETURN(auto o, Find(tx, Kind::kProfile, name));
  if (!o) return MakeError(ErrorCode::kNotFound, fmt::format("no profile {}", name));
  ProductProfile p = std::get<ProductProfile>(std::move(o->body));
  auto must_exist = [&](Kind kind, const std::string& what) -> Result<void> {
    CF_ASSIGN_OR_RETURN(auto found, store::FindObject(tx, KindName(kind), what));
    if (!found) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       fmt::format("profile {} names {} {}, which does not exist", name, KindName(kind), what));
    }
    return Ok();
  };
  if (p.thing_type) CF_RETURN_IF_ERROR(must_exist(Kind::kThingType, *p.thing_type));
  for (const auto& g : p.thing_groups) CF_RETURN_IF_ERROR(must_exist(Kind::kThingGroup, g));
  for (const auto& pol : p.policies) CF_RETURN_IF_ERROR(must_exist(Kind::kPolicy, pol));
  return p;
}

}  // namespace certfleet::registry
