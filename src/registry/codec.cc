#include "registry/codec.h"

#include <fmt/format.h>

#include <boost/json.hpp>

#include "core/clock.h"
#include "core/text.h"

namespace certfleet::registry {
namespace {

namespace json = boost::json;

Error Invalid(std::string message) { return MakeError(ErrorCode::kInvalidArgument, std::move(message)); }

// An optional string field; absent and null are nullopt.
Result<std::optional<std::string>> Text(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || v->is_null()) return std::optional<std::string>();
  if (!v->is_string()) return Invalid(fmt::format("{} must be a string", key));
  return std::optional<std::string>(v->get_string());
}

// An optional array of strings; absent and null are empty.
Result<std::vector<std::string>> Strings(const json::object& o, std::string_view key) {
  std::vector<std::string> out;
  const json::value* v = o.if_contains(key);
  if (v == nullptr || v->is_null()) return out;
  if (!v->is_array()) return Invalid(fmt::format("{} must be an array of names", key));
  for (const json::value& e : v->get_array()) {
    if (!e.is_string()) return Invalid(fmt::format("{} must be an array of names", key));
    out.emplace_back(e.get_string());
  }
  return out;
}

// Fills `out` (empty) from the optional "attributes" object of string values.
Result<void> ReadAttributes(const json::object& o, Attributes& out) {
  const json::value* v = o.if_contains("attributes");
  if (v == nullptr || v->is_null()) return Ok();
  if (!v->is_object()) return Invalid("attributes must be an object of string values");
  for (const auto& [key, value] : v->get_object()) {
    if (!value.is_string()) return Invalid(fmt::format("attribute {} must be a string", std::string_view(key)));
    out.emplace(std::string(key), std::string(value.get_string()));
  }
  return Ok();
}

// Action or Resource of statement `index`: a non-empty string or array of them.
Result<std::vector<std::string>> StringOrStrings(const json::object& statement, std::string_view key, size_t index) {
  const json::value* v = statement.if_contains(key);
  auto bad = [&] {
    return Invalid(fmt::format("Statement[{}].{} must be a string or an array of strings", index, key));
  };
  std::vector<std::string> out;
  if (v != nullptr && v->is_string()) out.emplace_back(v->get_string());
  if (v != nullptr && v->is_array()) {
    for (const json::value& e : v->get_array()) {
      if (!e.is_string()) return bad();
      out.emplace_back(e.get_string());
    }
  }
  for (const auto& s : out) {
    if (s.empty()) return bad();
  }
  if (out.empty()) return bad();
  return out;
}

Result<PolicyDocument> DocumentOf(const json::value* v) {
  if (v == nullptr || !v->is_object()) return Invalid("document must be a JSON object (a policy document)");
  const json::object& o = v->get_object();
  PolicyDocument doc;
  doc.text = json::serialize(o);
  for (const auto& [key, value] : o) {
    if (key != "Version" && key != "Id" && key != "Statement") {
      return Invalid(fmt::format("document: unknown field {} (Version, Id, Statement)", std::string_view(key)));
    }
  }
  if (const json::value* version = o.if_contains("Version"); version && !version->is_string()) {
    return Invalid("document.Version must be a string");
  }
  CF_ASSIGN_OR_RETURN(doc.version, Text(o, "Version"));
  CF_ASSIGN_OR_RETURN(doc.id, Text(o, "Id"));
  const json::value* statements = o.if_contains("Statement");
  json::array list;
  if (statements && statements->is_object()) list.push_back(*statements);
  if (statements && statements->is_array()) list = statements->get_array();
  for (size_t i = 0; i < list.size(); ++i) {
    if (!list[i].is_object()) return Invalid(fmt::format("Statement[{}] must be an object", i));
    const json::object& s = list[i].get_object();
    for (const auto& [key, value] : s) {
      if (key != "Sid" && key != "Effect" && key != "Action" && key != "Resource" && key != "Condition") {
        return Invalid(fmt::format("Statement[{}]: unknown field {}", i, std::string_view(key)));
      }
    }
    PolicyStatement statement;
    const json::value* effect = s.if_contains("Effect");
    if (!effect || !effect->is_string() || (effect->get_string() != "Allow" && effect->get_string() != "Deny")) {
      return Invalid(fmt::format("Statement[{}].Effect must be Allow or Deny", i));
    }
    statement.allow = effect->get_string() == "Allow";
    if (const json::value* sid = s.if_contains("Sid"); sid && sid->is_string()) statement.sid = sid->get_string();
    CF_ASSIGN_OR_RETURN(statement.actions, StringOrStrings(s, "Action", i));
    CF_ASSIGN_OR_RETURN(statement.resources, StringOrStrings(s, "Resource", i));
    if (const json::value* condition = s.if_contains("Condition")) statement.condition = json::serialize(*condition);
    doc.statements.push_back(std::move(statement));
  }
  return doc;
}

json::value DocumentJson(const PolicyDocument& doc) {
  boost::system::error_code ec;
  json::value v = json::parse(doc.text, ec);
  return ec ? json::value(json::object()) : v;
}

json::value OptionalJson(const std::optional<std::string>& s) { return s ? json::value(*s) : json::value(nullptr); }

json::object AttributesJson(const Attributes& attributes) {
  json::object out;
  for (const auto& [key, value] : attributes) out[key] = value;
  return out;
}

Result<Body> ThingFrom(const json::object& o, std::string name) {
  Thing t;
  t.name = std::move(name);
  CF_ASSIGN_OR_RETURN(t.thing_type, Text(o, "thing_type"));
  CF_RETURN_IF_ERROR(ReadAttributes(o, t.attributes));
  return Body(std::move(t));
}

Result<Body> ThingTypeFrom(const json::object& o, std::string name) {
  ThingType t;
  t.name = std::move(name);
  CF_ASSIGN_OR_RETURN(t.description, Text(o, "description"));
  CF_ASSIGN_OR_RETURN(t.searchable_attributes, Strings(o, "searchable_attributes"));
  return Body(std::move(t));
}

Result<Body> ThingGroupFrom(const json::object& o, std::string name) {
  ThingGroup g;
  g.name = std::move(name);
  CF_ASSIGN_OR_RETURN(g.description, Text(o, "description"));
  CF_RETURN_IF_ERROR(ReadAttributes(o, g.attributes));
  return Body(std::move(g));
}

Result<Body> PolicyFrom(const json::object& o, std::string name) {
  CF_ASSIGN_OR_RETURN(PolicyDocument doc, DocumentOf(o.if_contains("document")));
  return Body(Policy{std::move(name), std::move(doc)});
}

Result<Body> TemplateFrom(const json::object& o, std::string name) {
  ProvisioningTemplate t;
  t.name = std::move(name);
  CF_ASSIGN_OR_RETURN(auto ca, Text(o, "ca_fqdn"));
  t.ca_fqdn = AsciiLower(ca.value_or(""));
  CF_ASSIGN_OR_RETURN(auto endpoint, Text(o, "endpoint"));
  t.endpoint = endpoint.value_or("");
  CF_ASSIGN_OR_RETURN(t.thing_type, Text(o, "thing_type"));
  CF_ASSIGN_OR_RETURN(t.thing_groups, Strings(o, "thing_groups"));
  CF_ASSIGN_OR_RETURN(t.batches, Strings(o, "batches"));
  if (const json::value* p = o.if_contains("policies"); p && !p->is_null()) {
    if (!p->is_array()) return Invalid("policies must be an array of {name, document}");
    for (const json::value& e : p->get_array()) {
      const json::object* po = e.if_object();
      const json::value* nv = po ? po->if_contains("name") : nullptr;
      if (nv == nullptr || !nv->is_string()) return Invalid(NameRule("policies[].name"));
      CF_ASSIGN_OR_RETURN(PolicyDocument doc, DocumentOf(po->if_contains("document")));
      t.policies.push_back({std::string(nv->get_string()), std::move(doc)});
    }
  }
  if (const json::value* d = o.if_contains("default"); d && !d->is_null()) {
    if (!d->is_bool()) return Invalid("default must be true or false");
    t.is_default = d->get_bool();
  }
  if (const json::value* d = o.if_contains("validity_days"); d && !d->is_null()) {
    if (!d->is_int64()) return Invalid("validity_days must be an integer");
    t.validity_days = d->get_int64();
  }
  return Body(std::move(t));
}

Result<Body> ProfileFrom(const json::object& o, std::string name) {
  ProductProfile p;
  p.name = std::move(name);
  CF_ASSIGN_OR_RETURN(p.thing_type, Text(o, "thing_type"));
  CF_ASSIGN_OR_RETURN(p.thing_groups, Strings(o, "thing_groups"));
  CF_ASSIGN_OR_RETURN(p.policies, Strings(o, "policies"));
  return Body(std::move(p));
}

json::object Fields(const Thing& t) {
  json::object o{{"attributes", AttributesJson(t.attributes)}};
  if (t.thing_type) o["thing_type"] = *t.thing_type;
  return o;
}

json::object Fields(const ThingType& t) {
  json::object o{{"searchable_attributes", json::value_from(t.searchable_attributes)}};
  if (t.description) o["description"] = *t.description;
  return o;
}

json::object Fields(const ThingGroup& g) {
  json::object o{{"attributes", AttributesJson(g.attributes)}};
  if (g.description) o["description"] = *g.description;
  return o;
}

json::object Fields(const Policy& p) { return {{"document", DocumentJson(p.document)}}; }

json::object Fields(const ProvisioningTemplate& t) {
  json::array policies;
  for (const auto& p : t.policies)
    policies.push_back(json::object{{"name", p.name}, {"document", DocumentJson(p.document)}});
  json::object o{{"ca_fqdn", t.ca_fqdn},
                 {"endpoint", t.endpoint},
                 {"thing_groups", json::value_from(t.thing_groups)},
                 {"policies", std::move(policies)},
                 {"batches", json::value_from(t.batches)},
                 {"default", t.is_default}};
  if (t.thing_type) o["thing_type"] = *t.thing_type;
  if (t.validity_days) o["validity_days"] = *t.validity_days;
  return o;
}

json::object Fields(const ProductProfile& p) {
  json::object o{{"thing_groups", json::value_from(p.thing_groups)}, {"policies", json::value_from(p.policies)}};
  if (p.thing_type) o["thing_type"] = *p.thing_type;
  return o;
}

json::object DetailJson(const ThingDetail& d) {
  json::array certificates;
  for (const auto& c : d.certificates) {
    if (c.fingerprint) {
      certificates.push_back(json::object{{"fingerprint", *c.fingerprint},
                                          {"status", c.status},
                                          {"attachment", c.attachment},
                                          {"source", OptionalJson(c.source)}});
      continue;
    }
    certificates.push_back(
        json::object{{"serial", c.serial.value_or("")},
                     {"status", c.status},
                     {"attachment", c.attachment},
                     {"not_after", c.not_after ? json::value(FormatRfc3339(*c.not_after)) : nullptr},
                     {"revoke_after", c.revoke_after ? json::value(FormatRfc3339(*c.revoke_after)) : nullptr}});
  }
  json::array policies;
  for (const auto& p : d.effective_policies) {
    policies.push_back(json::object{{"name", p.name}, {"document", DocumentJson(p.document)}});
  }
  return {{"thing_groups", json::value_from(d.thing_groups)},
          {"certificates", std::move(certificates)},
          {"effective_policies", std::move(policies)}};
}

}  // namespace

Result<Body> FromJson(Kind kind, const json::object& o) {
  CF_ASSIGN_OR_RETURN(auto name, Text(o, "name"));
  if (!name) return Invalid("name is required");
  switch (kind) {
    case Kind::kThing:
      return ThingFrom(o, std::move(*name));
    case Kind::kThingType:
      return ThingTypeFrom(o, std::move(*name));
    case Kind::kThingGroup:
      return ThingGroupFrom(o, std::move(*name));
    case Kind::kPolicy:
      return PolicyFrom(o, std::move(*name));
    case Kind::kTemplate:
      return TemplateFrom(o, std::move(*name));
    case Kind::kProfile:
      return ProfileFrom(o, std::move(*name));
  }
  return Invalid("unknown kind");
}

json::object ToJson(const Body& body) {
  json::object o = std::visit([](const auto& b) { return Fields(b); }, body);
  o["name"] = NameOf(body);
  return o;
}

json::object ToJson(const Object& object) {
  json::object o = ToJson(object.body);
  o["created_at"] = FormatRfc3339(object.created_at);
  o["updated_at"] = FormatRfc3339(object.updated_at);
  if (object.detail) {
    for (auto& [key, value] : DetailJson(*object.detail)) o[key] = std::move(value);
  }
  return o;
}

json::object SummaryJson(const store::RegistryCounts& counts) {
  json::object out;
  for (Kind kind :
       {Kind::kThing, Kind::kThingType, Kind::kThingGroup, Kind::kPolicy, Kind::kTemplate, Kind::kProfile}) {
    int64_t n = 0;
    for (const auto& [name, count] : counts.objects) {
      if (name == KindName(kind)) n = count;
    }
    out[KindName(kind)] = n;
  }
  json::array certificates;
  for (const auto& c : counts.certificates) {
    certificates.push_back(json::object{{"source", c.source}, {"status", c.status}, {"count", c.count}});
  }
  out["certificates"] = std::move(certificates);
  return out;
}

Result<Body> Merge(const Body& current, const json::object& changes) {
  if (const json::value* n = changes.if_contains("name");
      n && !(n->is_string() && n->get_string() == NameOf(current))) {
    return Invalid("name cannot change; create a new object instead");
  }
  json::object merged = ToJson(current);
  for (const auto& [key, value] : changes) merged[key] = value;
  return FromJson(KindOf(current), merged);
}

}  // namespace certfleet::registry
