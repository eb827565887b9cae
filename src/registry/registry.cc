#include "registry/registry.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <set>

#include "core/text.h"
#include "store/audit_repo.h"
#include "store/certificates_repo.h"
#include "store/imports_repo.h"

namespace certfleet::registry {
namespace {

namespace json = boost::json;

constexpr std::string_view kKindNames[] = {store::kObjectThing,  store::kObjectThingType, store::kObjectThingGroup,
                                           store::kObjectPolicy, store::kObjectTemplate,  store::kObjectProfile};
constexpr size_t kMaxDescription = 2028;  // as AWS IoT allows for thing types and groups
constexpr size_t kMaxAttributes = 50;     // attributes of a thing or group
constexpr size_t kMaxAttributeValue = 800;
constexpr size_t kMaxSearchable = 3;  // searchable attributes of a thing type, as in AWS IoT
constexpr size_t kMaxListed = 100;    // groups, policies or batches a template names
constexpr size_t kMaxEndpoint = 512;
constexpr size_t kMaxFqdn = 253;
constexpr size_t kMaxStatements = 100;
constexpr int64_t kMaxTemplateValidityDays = 3650;
// Bounds the scan of templates when checking what names an object; far above real counts.
constexpr int kMaxTemplates = 10'000;

Error Invalid(std::string message) { return MakeError(ErrorCode::kInvalidArgument, std::move(message)); }

// An optional string field; absent and null are nullopt.
Result<std::optional<std::string>> Text(const json::object& o, std::string_view key, size_t max) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || v->is_null()) return std::optional<std::string>();
  if (!v->is_string()) return Invalid(fmt::format("{} must be a string", key));
  std::string s(v->get_string());
  if (s.size() > max || HasControlCharacter(s)) {
    return Invalid(fmt::format("{} must be printable text of at most {} bytes", key, max));
  }
  return std::optional<std::string>(std::move(s));
}

// An optional array of names, each valid and listed once.
Result<std::vector<std::string>> Names(const json::object& o, std::string_view key, size_t max_count,
                                       size_t max_bytes = kMaxNameBytes) {
  std::vector<std::string> out;
  const json::value* v = o.if_contains(key);
  if (v == nullptr || v->is_null()) return out;
  if (!v->is_array() || v->get_array().size() > max_count) {
    return Invalid(fmt::format("{} must be an array of at most {} names", key, max_count));
  }
  std::set<std::string> seen;
  for (const json::value& n : v->get_array()) {
    if (!n.is_string() || !IsValidName(n.get_string(), max_bytes)) return Invalid(NameRule(std::string(key) + "[]"));
    if (!seen.insert(std::string(n.get_string())).second) {
      return Invalid(fmt::format("{} lists {} twice", key, std::string_view(n.get_string())));
    }
    out.emplace_back(n.get_string());
  }
  return out;
}

// Key/value strings: keys are names, values printable text.
Result<json::object> Attributes(const json::object& o) {
  json::object out;
  const json::value* v = o.if_contains("attributes");
  if (v == nullptr || v->is_null()) return out;
  if (!v->is_object() || v->get_object().size() > kMaxAttributes) {
    return Invalid(fmt::format("attributes must be an object of at most {} string values", kMaxAttributes));
  }
  for (const auto& [key, value] : v->get_object()) {
    if (!IsValidName(key, kMaxNameBytes)) return Invalid(NameRule("an attribute name"));
    if (!value.is_string() || value.get_string().size() > kMaxAttributeValue ||
        HasControlCharacter(value.get_string())) {
      return Invalid(
          fmt::format("attribute {} must be a string of at most {} bytes", std::string_view(key), kMaxAttributeValue));
    }
    out[key] = value;
  }
  return out;
}

Result<void> StringOrStrings(const json::object& statement, std::string_view key, size_t index) {
  const json::value* v = statement.if_contains(key);
  auto bad = [&] {
    return Invalid(fmt::format("Statement[{}].{} must be a string or an array of strings", index, key));
  };
  if (v == nullptr) return bad();
  if (v->is_string()) return v->get_string().empty() ? Result<void>(bad()) : Ok();
  if (!v->is_array() || v->get_array().empty()) return bad();
  for (const json::value& e : v->get_array()) {
    if (!e.is_string() || e.get_string().empty()) return bad();
  }
  return Ok();
}

// An IAM-style policy document: {Version?, Id?, Statement: [{Sid?, Effect, Action, Resource, Condition?}]}.
Result<json::object> PolicyDocument(const json::value* v) {
  if (v == nullptr || !v->is_object()) return Invalid("document must be a JSON object (a policy document)");
  const json::object& doc = v->get_object();
  if (json::serialize(doc).size() > Registry::kMaxPolicyBytes) {
    return Invalid(fmt::format("document is larger than {} bytes", Registry::kMaxPolicyBytes));
  }
  for (const auto& [key, value] : doc) {
    if (key != "Version" && key != "Id" && key != "Statement") {
      return Invalid(fmt::format("document: unknown field {} (Version, Id, Statement)", std::string_view(key)));
    }
  }
  if (const json::value* version = doc.if_contains("Version"); version && !version->is_string()) {
    return Invalid("document.Version must be a string");
  }
  const json::value* statements = doc.if_contains("Statement");
  json::array list;
  if (statements && statements->is_object()) list.push_back(*statements);
  if (statements && statements->is_array()) list = statements->get_array();
  if (list.empty() || list.size() > kMaxStatements) {
    return Invalid(fmt::format("document.Statement must hold 1 to {} statements", kMaxStatements));
  }
  for (size_t i = 0; i < list.size(); ++i) {
    if (!list[i].is_object()) return Invalid(fmt::format("Statement[{}] must be an object", i));
    const json::object& s = list[i].get_object();
    for (const auto& [key, value] : s) {
      if (key != "Sid" && key != "Effect" && key != "Action" && key != "Resource" && key != "Condition") {
        return Invalid(fmt::format("Statement[{}]: unknown field {}", i, std::string_view(key)));
      }
    }
    const json::value* effect = s.if_contains("Effect");
    if (!effect || !effect->is_string() || (effect->get_string() != "Allow" && effect->get_string() != "Deny")) {
      return Invalid(fmt::format("Statement[{}].Effect must be Allow or Deny", i));
    }
    CF_RETURN_IF_ERROR(StringOrStrings(s, "Action", i));
    CF_RETURN_IF_ERROR(StringOrStrings(s, "Resource", i));
  }
  return doc;
}

Result<store::RegistryObject> MustFind(store::Tx& tx, Kind kind, std::string_view name) {
  CF_ASSIGN_OR_RETURN(auto o, store::FindObject(tx, KindName(kind), name));
  if (!o) return MakeError(ErrorCode::kNotFound, fmt::format("no {} {}", KindName(kind), name));
  return std::move(*o);
}

Result<void> MustExist(store::Tx& tx, Kind kind, std::string_view name) {
  CF_ASSIGN_OR_RETURN(auto o, store::FindObject(tx, KindName(kind), name));
  if (!o) return Invalid(fmt::format("there is no {} {}", KindName(kind), name));
  return Ok();
}

Result<json::object> ParseBody(const store::RegistryObject& o) {
  boost::system::error_code ec;
  json::value v = json::parse(o.body, ec);
  if (ec || !v.is_object())
    return MakeError(ErrorCode::kInternal, fmt::format("{} {}: stored body unreadable", o.kind, o.name));
  return std::move(v.get_object());
}

std::optional<std::string> OptField(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || !v->is_string()) return std::nullopt;
  return std::string(v->get_string());
}

std::vector<std::string> StringsOf(const json::object& o, std::string_view key) {
  std::vector<std::string> out;
  if (const json::value* v = o.if_contains(key); v && v->is_array()) {
    for (const auto& e : v->get_array()) {
      if (e.is_string()) out.emplace_back(e.get_string());
    }
  }
  return out;
}

ProvisioningTemplate TemplateFrom(const std::string& name, const json::object& body) {
  ProvisioningTemplate t;
  t.name = name;
  t.ca_fqdn = OptField(body, "ca_fqdn").value_or("");
  t.endpoint = OptField(body, "endpoint").value_or("");
  t.thing_type = OptField(body, "thing_type");
  t.thing_groups = StringsOf(body, "thing_groups");
  if (const json::value* p = body.if_contains("policies"); p && p->is_array()) {
    for (const auto& e : p->get_array()) {
      const json::object& policy = e.get_object();
      t.policies.emplace_back(std::string(policy.at("name").get_string()),
                              json::serialize(json::object{{"document", policy.at("document")}}));
    }
  }
  if (const json::value* d = body.if_contains("validity_days"); d && d->is_int64()) t.validity_days = d->get_int64();
  return t;
}

// The templates that name `name` in `field` (a string or an array of strings).
Result<std::optional<std::string>> TemplateNaming(store::Tx& tx, std::string_view field, std::string_view name) {
  CF_ASSIGN_OR_RETURN(auto templates,
                      store::ListObjects(tx, {std::string(KindName(Kind::kTemplate)), {}, {}, kMaxTemplates}));
  for (const auto& t : templates) {
    CF_ASSIGN_OR_RETURN(json::object body, ParseBody(t));
    const json::value* v = body.if_contains(field);
    if (v == nullptr) continue;
    if (v->is_string() && v->get_string() == name) return std::optional<std::string>(t.name);
    if (v->is_array()) {
      for (const auto& e : v->get_array()) {
        const json::value* named = e.is_object() ? e.get_object().if_contains("name") : &e;
        const json::string* s = named ? named->if_string() : nullptr;
        if (s && *s == name) return std::optional<std::string>(t.name);
      }
    }
  }
  return std::optional<std::string>();
}

Error InUse(Kind kind, std::string_view name, std::string_view by) {
  return MakeError(ErrorCode::kFailedPrecondition, fmt::format("{} {} is in use: {}", KindName(kind), name, by));
}

// The body of `kind` as stored, from what the caller gave, with its `ref`; references to
// other objects are checked in `tx`.
struct Normalized {
  json::object body;
  std::optional<std::string> ref;
};

Result<Normalized> Normalize(store::Tx& tx, Kind kind, const std::string& name, const json::object& in) {
  Normalized out;
  auto text = [&](std::string_view key, size_t max) -> Result<void> {
    CF_ASSIGN_OR_RETURN(auto v, Text(in, key, max));
    if (v) out.body[key] = *v;
    return Ok();
  };
  switch (kind) {
    case Kind::kProfile: {
      CF_ASSIGN_OR_RETURN(auto type, Text(in, "thing_type", kMaxNameBytes));
      if (type) {
        CF_RETURN_IF_ERROR(CheckName("thing_type", *type));
        out.body["thing_type"] = *type;
      }
      CF_ASSIGN_OR_RETURN(auto groups, Names(in, "thing_groups", kMaxListed));
      out.body["thing_groups"] = json::value_from(groups);
      CF_ASSIGN_OR_RETURN(auto policies, Names(in, "policies", kMaxListed));
      out.body["policies"] = json::value_from(policies);
      return out;
    }
    case Kind::kThingType: {
      CF_RETURN_IF_ERROR(text("description", kMaxDescription));
      CF_ASSIGN_OR_RETURN(auto searchable, Names(in, "searchable_attributes", kMaxSearchable));
      out.body["searchable_attributes"] = json::value_from(searchable);
      for (const auto& [key, v] : in) {
        if (key != "name" && key != "description" && key != "searchable_attributes") {
          return Invalid(fmt::format("unknown field {}", std::string_view(key)));
        }
      }
      return out;
    }
    case Kind::kThingGroup: {
      CF_RETURN_IF_ERROR(text("description", kMaxDescription));
      CF_ASSIGN_OR_RETURN(out.body["attributes"], Attributes(in));
      return out;
    }
    case Kind::kPolicy: {
      CF_ASSIGN_OR_RETURN(out.body["document"], PolicyDocument(in.if_contains("document")));
      return out;
    }
    case Kind::kThing: {
      CF_ASSIGN_OR_RETURN(auto type, Text(in, "thing_type", kMaxNameBytes));
      if (type) {
        CF_RETURN_IF_ERROR(CheckName("thing_type", *type));
        CF_RETURN_IF_ERROR(MustExist(tx, Kind::kThingType, *type));
        out.body["thing_type"] = *type;
        out.ref = *type;
      }
      CF_ASSIGN_OR_RETURN(out.body["attributes"], Attributes(in));
      return out;
    }
    case Kind::kTemplate: {
      CF_ASSIGN_OR_RETURN(auto ca, Text(in, "ca_fqdn", kMaxFqdn));
      if (!ca) return Invalid("ca_fqdn is required: the CA that signs the devices' certificates");
      std::transform(ca->begin(), ca->end(), ca->begin(), [](unsigned char c) { return std::tolower(c); });
      CF_ASSIGN_OR_RETURN(auto ca_row, store::FindCa(tx, *ca));
      if (!ca_row) return Invalid(fmt::format("there is no CA {}", *ca));
      out.body["ca_fqdn"] = *ca;
      out.ref = *ca;
      CF_ASSIGN_OR_RETURN(auto endpoint, Text(in, "endpoint", kMaxEndpoint));
      out.body["endpoint"] = endpoint.value_or("");
      CF_ASSIGN_OR_RETURN(auto type, Text(in, "thing_type", kMaxNameBytes));
      if (type) {
        CF_RETURN_IF_ERROR(MustExist(tx, Kind::kThingType, *type));
        out.body["thing_type"] = *type;
      }
      CF_ASSIGN_OR_RETURN(auto groups, Names(in, "thing_groups", kMaxListed));
      for (const auto& g : groups) CF_RETURN_IF_ERROR(MustExist(tx, Kind::kThingGroup, g));
      out.body["thing_groups"] = json::value_from(groups);
      json::array policies;
      if (const json::value* p = in.if_contains("policies"); p && !p->is_null()) {
        if (!p->is_array() || p->get_array().size() > kMaxListed) {
          return Invalid(fmt::format("policies must be an array of at most {} {{name, document}}", kMaxListed));
        }
        std::set<std::string> seen;
        for (const json::value& e : p->get_array()) {
          const json::object* po = e.if_object();
          const json::value* nv = po ? po->if_contains("name") : nullptr;
          const json::string* pname = nv ? nv->if_string() : nullptr;
          if (pname == nullptr || !IsValidName(*pname, kMaxNameBytes)) return Invalid(NameRule("policies[].name"));
          if (!seen.insert(std::string(*pname)).second)
            return Invalid(fmt::format("policies lists {} twice", std::string_view(*pname)));
          CF_ASSIGN_OR_RETURN(json::object doc, PolicyDocument(po->if_contains("document")));
          policies.push_back(json::object{{"name", *pname}, {"document", std::move(doc)}});
        }
      }
      out.body["policies"] = std::move(policies);
      CF_ASSIGN_OR_RETURN(auto batches, Names(in, "batches", kMaxListed, kMaxNameBytes));
      out.body["batches"] = json::value_from(batches);
      bool is_default = false;
      if (const json::value* d = in.if_contains("default"); d && !d->is_null()) {
        if (!d->is_bool()) return Invalid("default must be true or false");
        is_default = d->get_bool();
      }
      out.body["default"] = is_default;
      if (const json::value* d = in.if_contains("validity_days"); d && !d->is_null()) {
        if (!d->is_int64() || d->get_int64() < 1 || d->get_int64() > kMaxTemplateValidityDays) {
          return Invalid(fmt::format("validity_days must be an integer from 1 to {}", kMaxTemplateValidityDays));
        }
        out.body["validity_days"] = d->get_int64();
      }
      // The batches (and the default slot) it claims must be free or its own already.
      if (is_default) batches.emplace_back(kDefaultBatch);
      for (const auto& b : batches) {
        CF_ASSIGN_OR_RETURN(auto owner, store::LinksFrom(tx, kBatchTemplate, b, "", 1));
        if (!owner.empty() && owner.front().to_name != name) {
          return MakeError(ErrorCode::kAlreadyExists,
                           b == kDefaultBatch
                               ? fmt::format("provisioning template {} is the default already", owner.front().to_name)
                               : fmt::format("batch {} belongs to provisioning template {}", b, owner.front().to_name));
        }
      }
      return out;
    }
  }
  return Invalid("unknown kind");
}

// A template's batch links (and default slot) as its body says.
Result<void> LinkBatches(store::Tx& tx, const std::string& name, const json::object& body, int64_t now) {
  CF_ASSIGN_OR_RETURN(auto old, store::LinksTo(tx, kBatchTemplate, name));
  for (const auto& l : old) CF_RETURN_IF_ERROR(store::DeleteLink(tx, kBatchTemplate, l.from_name, name));
  std::vector<std::string> batches = StringsOf(body, "batches");
  if (body.at("default").as_bool()) batches.emplace_back(kDefaultBatch);
  for (const auto& b : batches) {
    CF_RETURN_IF_ERROR(store::PutLink(tx, {std::string(kBatchTemplate), b, name, "", std::nullopt, now}));
  }
  return Ok();
}

json::object View(const store::RegistryObject& o, json::object body) {
  body["name"] = o.name;
  body["created_at"] = FormatRfc3339(o.created_at);
  body["updated_at"] = FormatRfc3339(o.updated_at);
  return body;
}

Result<json::object> ThingView(store::Tx& tx, const store::RegistryObject& o, json::object body) {
  json::object view = View(o, std::move(body));
  CF_ASSIGN_OR_RETURN(auto groups, store::LinksTo(tx, kGroupThing, o.name));
  json::array group_names;
  for (const auto& g : groups) group_names.emplace_back(g.from_name);
  view["thing_groups"] = std::move(group_names);
  CF_ASSIGN_OR_RETURN(auto attached, store::LinksFrom(tx, kThingCertificate, o.name));
  json::array certificates;
  std::set<std::string> policy_names;
  for (const auto& link : attached) {
    CF_ASSIGN_OR_RETURN(auto cert, store::FindCertificate(tx, link.to_name));
    if (!cert) {
      // A supplier's certificate (W3), named by its ref: active while attached.
      CF_ASSIGN_OR_RETURN(auto imported, store::FindImportedCertificate(tx, link.to_name));
      if (!imported) continue;
      certificates.push_back(json::object{{"fingerprint", imported->fingerprint},
                                          {"status", "active"},
                                          {"attachment", link.state},
                                          {"source", imported->source}});
      CF_ASSIGN_OR_RETURN(auto policies, store::LinksTo(tx, kPolicyCertificate, link.to_name));
      for (const auto& p : policies) policy_names.insert(p.from_name);
      continue;
    }
    certificates.push_back(
        json::object{{"serial", cert->serial},
                     {"status", cert->status},
                     {"attachment", link.state},
                     {"not_after", FormatRfc3339(cert->not_after)},
                     {"revoke_after", link.due_at ? json::value(FormatRfc3339(*link.due_at)) : nullptr}});
    if (cert->status != "active") continue;
    CF_ASSIGN_OR_RETURN(auto policies, store::LinksTo(tx, kPolicyCertificate, cert->serial));
    for (const auto& p : policies) policy_names.insert(p.from_name);
  }
  view["certificates"] = std::move(certificates);
  json::array effective;
  for (const auto& name : policy_names) {
    CF_ASSIGN_OR_RETURN(auto policy, store::FindObject(tx, KindName(Kind::kPolicy), name));
    if (!policy) continue;
    CF_ASSIGN_OR_RETURN(json::object pb, ParseBody(*policy));
    effective.push_back(json::object{{"name", name}, {"document", pb["document"]}});
  }
  view["effective_policies"] = std::move(effective);
  return view;
}

// What must go before `name` of `kind` is deleted, as a message; "" when nothing.
Result<std::string> Dependency(store::Tx& tx, Kind kind, const std::string& name) {
  switch (kind) {
    case Kind::kThingType: {
      CF_ASSIGN_OR_RETURN(auto things, store::ListObjects(tx, {std::string(KindName(Kind::kThing)), name, {}, 1}));
      if (!things.empty()) return fmt::format("thing {} has this type", things.front().name);
      CF_ASSIGN_OR_RETURN(auto tmpl, TemplateNaming(tx, "thing_type", name));
      if (tmpl) return fmt::format("provisioning template {} names it", *tmpl);
      return std::string();
    }
    case Kind::kThingGroup: {
      CF_ASSIGN_OR_RETURN(auto members, store::LinksFrom(tx, kGroupThing, name, "", 1));
      if (!members.empty()) return fmt::format("thing {} is a member", members.front().to_name);
      CF_ASSIGN_OR_RETURN(auto tmpl, TemplateNaming(tx, "thing_groups", name));
      if (tmpl) return fmt::format("provisioning template {} names it", *tmpl);
      return std::string();
    }
    case Kind::kPolicy: {
      CF_ASSIGN_OR_RETURN(auto certs, store::LinksFrom(tx, kPolicyCertificate, name, "", 1));
      if (!certs.empty()) return fmt::format("it is attached to certificate {}", certs.front().to_name);
      return std::string();
    }
    case Kind::kThing: {
      CF_ASSIGN_OR_RETURN(auto certs, store::LinksFrom(tx, kThingCertificate, name, "", 1));
      if (!certs.empty())
        return fmt::format("certificate {} is attached to it; detach it first", certs.front().to_name);
      return std::string();
    }
    case Kind::kTemplate:
    case Kind::kProfile:
      return std::string();
  }
  return std::string();
}

// The string members of the array `key` of `o`.
std::vector<std::string> Strings(const json::object& o, std::string_view key) {
  std::vector<std::string> out;
  if (const json::value* v = o.if_contains(key); v && v->is_array()) {
    for (const auto& e : v->get_array()) {
      if (e.is_string()) out.emplace_back(e.get_string());
    }
  }
  return out;
}

}  // namespace

Result<void> CheckName(std::string_view field, std::string_view name) {
  if (!IsValidName(name, kMaxNameBytes)) return Invalid(NameRule(field));
  return Ok();
}

std::string_view KindName(Kind kind) { return kKindNames[static_cast<int>(kind)]; }

Result<json::object> Registry::Create(Kind kind, const json::object& body, std::string_view actor) {
  CF_ASSIGN_OR_RETURN(auto name, Text(body, "name", kMaxNameBytes));
  if (!name) return Invalid("name is required");
  CF_RETURN_IF_ERROR(CheckName("name", *name));
  const int64_t now = clock_.NowMillis();
  return store::Write(store_, [&](store::Tx& tx) -> Result<json::object> {
    CF_ASSIGN_OR_RETURN(Normalized n, Normalize(tx, kind, *name, body));
    store::RegistryObject o{std::string(KindName(kind)), *name, n.ref, json::serialize(n.body), now, now};
    Result<void> inserted = store::InsertObject(tx, o);
    if (!inserted.ok() && inserted.error().code == ErrorCode::kAlreadyExists) {
      return MakeError(ErrorCode::kAlreadyExists, fmt::format("a {} {} exists", KindName(kind), *name));
    }
    if (!inserted.ok()) return inserted.error();
    if (kind == Kind::kTemplate) {
      CF_RETURN_IF_ERROR(LinkBatches(tx, *name, n.body, now));
      ++template_changes_;
    }
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, fmt::format("{}.create", KindName(kind)),
                                          fmt::format("{}:{}", KindName(kind), *name), o.body));
    return View(o, std::move(n.body));
  });
}

Result<json::object> Registry::Get(Kind kind, std::string_view name) {
  return store::Read(store_, [&](store::Tx& tx) -> Result<json::object> {
    CF_ASSIGN_OR_RETURN(store::RegistryObject o, MustFind(tx, kind, name));
    CF_ASSIGN_OR_RETURN(json::object body, ParseBody(o));
    if (kind == Kind::kThing) return ThingView(tx, o, std::move(body));
    return View(o, std::move(body));
  });
}

Result<std::vector<json::object>> Registry::List(Kind kind, const ListFilter& filter) {
  if (filter.group && filter.ref) return Invalid("filter by thing_type or by group, not both");
  return store::Read(store_, [&](store::Tx& tx) -> Result<std::vector<json::object>> {
    std::vector<store::RegistryObject> objects;
    if (filter.group) {
      CF_ASSIGN_OR_RETURN(auto members,
                          store::LinksFrom(tx, kGroupThing, *filter.group, filter.after.value_or(""), filter.limit));
      for (const auto& m : members) {
        CF_ASSIGN_OR_RETURN(auto o, store::FindObject(tx, KindName(kind), m.to_name));
        if (o) objects.push_back(std::move(*o));
      }
    } else {
      CF_ASSIGN_OR_RETURN(
          objects, store::ListObjects(tx, {std::string(KindName(kind)), filter.ref, filter.after, filter.limit}));
    }
    std::vector<json::object> out;
    out.reserve(objects.size());
    for (const auto& o : objects) {
      CF_ASSIGN_OR_RETURN(json::object body, ParseBody(o));
      out.push_back(View(o, std::move(body)));
    }
    return out;
  });
}

Result<json::object> Registry::Update(Kind kind, std::string_view name, const json::object& body,
                                      std::string_view actor) {
  if (const json::value* n = body.if_contains("name"); n && !(n->is_string() && n->get_string() == name)) {
    return Invalid("name cannot change; create a new object instead");
  }
  const int64_t now = clock_.NowMillis();
  return store::Write(store_, [&](store::Tx& tx) -> Result<json::object> {
    CF_ASSIGN_OR_RETURN(store::RegistryObject o, MustFind(tx, kind, name));
    CF_ASSIGN_OR_RETURN(json::object merged, ParseBody(o));
    for (const auto& [key, value] : body) merged[key] = value;
    CF_ASSIGN_OR_RETURN(Normalized n, Normalize(tx, kind, o.name, merged));
    o.ref = n.ref;
    o.body = json::serialize(n.body);
    o.updated_at = now;
    CF_RETURN_IF_ERROR(store::UpdateObject(tx, o));
    if (kind == Kind::kTemplate) {
      CF_RETURN_IF_ERROR(LinkBatches(tx, o.name, n.body, now));
      ++template_changes_;
    }
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, fmt::format("{}.update", KindName(kind)),
                                          fmt::format("{}:{}", KindName(kind), o.name), o.body));
    if (kind == Kind::kThing) return ThingView(tx, o, std::move(n.body));
    return View(o, std::move(n.body));
  });
}

Result<void> Registry::Delete(Kind kind, std::string_view name, std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  return store_.Transact([&](store::Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(store::RegistryObject o, MustFind(tx, kind, name));
    CF_ASSIGN_OR_RETURN(std::string dependency, Dependency(tx, kind, o.name));
    if (!dependency.empty()) return InUse(kind, o.name, dependency);
    if (kind == Kind::kThing) {
      CF_ASSIGN_OR_RETURN(auto groups, store::LinksTo(tx, kGroupThing, o.name));
      for (const auto& g : groups) CF_RETURN_IF_ERROR(store::DeleteLink(tx, kGroupThing, g.from_name, o.name));
    }
    if (kind == Kind::kTemplate) {
      CF_ASSIGN_OR_RETURN(auto batches, store::LinksTo(tx, kBatchTemplate, o.name));
      for (const auto& b : batches) CF_RETURN_IF_ERROR(store::DeleteLink(tx, kBatchTemplate, b.from_name, o.name));
      ++template_changes_;
    }
    CF_RETURN_IF_ERROR(store::DeleteObject(tx, KindName(kind), o.name));
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, fmt::format("{}.delete", KindName(kind)),
                                          fmt::format("{}:{}", KindName(kind), o.name), "{}"));
    return Ok();
  });
}

Result<void> Registry::Attach(std::string_view kind, std::string_view from, std::string_view to,
                              std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  return store_.Transact([&](store::Tx& tx) -> Result<void> {
    if (kind == kGroupThing) {
      CF_RETURN_IF_ERROR(MustFind(tx, Kind::kThingGroup, from));
      CF_RETURN_IF_ERROR(MustFind(tx, Kind::kThing, to));
    } else {
      CF_RETURN_IF_ERROR(MustFind(tx, kind == kThingCertificate ? Kind::kThing : Kind::kPolicy, from));
      CF_ASSIGN_OR_RETURN(auto cert, store::FindCertificate(tx, to));
      if (!cert) return MakeError(ErrorCode::kNotFound, fmt::format("no certificate with serial {}", to));
    }
    const std::string state(kind == kThingCertificate ? kAttachmentActive : "");
    CF_RETURN_IF_ERROR(
        store::PutLink(tx, {std::string(kind), std::string(from), std::string(to), state, std::nullopt, now}));
    CF_RETURN_IF_ERROR(
        store::AppendAudit(tx, now, actor, fmt::format("{}.attach", kind), fmt::format("{}:{}", from, to), "{}"));
    return Ok();
  });
}

Result<void> Registry::Detach(std::string_view kind, std::string_view from, std::string_view to,
                              std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  return store_.Transact([&](store::Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(bool removed, store::DeleteLink(tx, kind, from, to));
    if (!removed) return MakeError(ErrorCode::kNotFound, fmt::format("{} and {} are not attached", from, to));
    CF_RETURN_IF_ERROR(
        store::AppendAudit(tx, now, actor, fmt::format("{}.detach", kind), fmt::format("{}:{}", from, to), "{}"));
    return Ok();
  });
}

Result<std::optional<ProvisioningTemplate>> Registry::TemplateFor(store::Tx& tx, std::string_view batch) {
  std::vector<store::RegistryLink> link;
  if (!batch.empty()) {
    CF_ASSIGN_OR_RETURN(link, store::LinksFrom(tx, kBatchTemplate, batch, "", 1));
  }
  if (link.empty()) {
    CF_ASSIGN_OR_RETURN(link, store::LinksFrom(tx, kBatchTemplate, kDefaultBatch, "", 1));
  }
  if (link.empty()) return std::optional<ProvisioningTemplate>();
  CF_ASSIGN_OR_RETURN(store::RegistryObject o, MustFind(tx, Kind::kTemplate, link.front().to_name));
  CF_ASSIGN_OR_RETURN(json::object body, ParseBody(o));
  return std::optional<ProvisioningTemplate>(TemplateFrom(o.name, body));
}

Result<void> Registry::RecordProvisioning(store::Tx& tx, const ProvisioningTemplate& tmpl, std::string_view thing,
                                          std::string_view serial, int64_t now, int64_t revoke_superseded_at) {
  json::object thing_body{{"attributes", json::object()}};
  if (tmpl.thing_type) thing_body["thing_type"] = *tmpl.thing_type;
  CF_RETURN_IF_ERROR(store::InsertObjectIfMissing(tx, {std::string(KindName(Kind::kThing)), std::string(thing),
                                                       tmpl.thing_type, json::serialize(thing_body), now, now}));
  CF_RETURN_IF_ERROR(store::SetLinkStates(tx, kThingCertificate, thing, kAttachmentActive, kAttachmentSuperseded,
                                          revoke_superseded_at));
  const std::string serial_s(serial);
  CF_RETURN_IF_ERROR(store::PutLink(tx, {std::string(kThingCertificate), std::string(thing), serial_s,
                                         std::string(kAttachmentActive), std::nullopt, now}));
  for (const auto& group : tmpl.thing_groups) {
    CF_RETURN_IF_ERROR(
        store::AddLinkIfMissing(tx, {std::string(kGroupThing), group, std::string(thing), "", std::nullopt, now}));
  }
  for (const auto& [name, body] : tmpl.policies) {
    CF_RETURN_IF_ERROR(
        store::InsertObjectIfMissing(tx, {std::string(KindName(Kind::kPolicy)), name, std::nullopt, body, now, now}));
    CF_RETURN_IF_ERROR(
        store::AddLinkIfMissing(tx, {std::string(kPolicyCertificate), name, serial_s, "", std::nullopt, now}));
  }
  return Ok();
}

Result<int> Registry::MoveTemplates(store::Tx& tx, std::string_view old_ca, std::string_view new_ca, int64_t now) {
  CF_ASSIGN_OR_RETURN(
      auto templates,
      store::ListObjects(tx, {std::string(KindName(Kind::kTemplate)), std::string(old_ca), {}, kMaxTemplates}));
  for (auto& t : templates) {
    CF_ASSIGN_OR_RETURN(json::object body, ParseBody(t));
    body["ca_fqdn"] = new_ca;
    t.ref = std::string(new_ca);
    t.body = json::serialize(body);
    t.updated_at = now;
    CF_RETURN_IF_ERROR(store::UpdateObject(tx, t));
  }
  ++template_changes_;
  return static_cast<int>(templates.size());
}

uint64_t Registry::TemplateChanges() const { return template_changes_.load(); }

Result<ProductProfile> Registry::ProfileFor(store::Tx& tx, std::string_view name) {
  CF_ASSIGN_OR_RETURN(auto o, store::FindObject(tx, store::kObjectProfile, name));
  if (!o) return MakeError(ErrorCode::kNotFound, fmt::format("no profile {}", name));
  CF_ASSIGN_OR_RETURN(json::object body, ParseBody(*o));
  ProductProfile p;
  if (const json::value* t = body.if_contains("thing_type"); t && t->is_string()) {
    p.thing_type = std::string(t->get_string());
  }
  p.groups = Strings(body, "thing_groups");
  p.policies = Strings(body, "policies");
  auto must_exist = [&](std::string_view kind, const std::string& what) -> Result<void> {
    CF_ASSIGN_OR_RETURN(auto found, store::FindObject(tx, kind, what));
    if (!found) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       fmt::format("profile {} names {} {}, which does not exist", name, kind, what));
    }
    return Ok();
  };
  if (p.thing_type) CF_RETURN_IF_ERROR(must_exist(store::kObjectThingType, *p.thing_type));
  for (const auto& g : p.groups) CF_RETURN_IF_ERROR(must_exist(store::kObjectThingGroup, g));
  for (const auto& pol : p.policies) CF_RETURN_IF_ERROR(must_exist(store::kObjectPolicy, pol));
  return p;
}

}  // namespace certfleet::registry
