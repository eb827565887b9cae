#include "broker/snapshot.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>

#include "core/text.h"

namespace certfleet::broker {
namespace json = boost::json;
namespace {

Error Malformed(std::string what) { return MakeError(ErrorCode::kInvalidArgument, "snapshot: " + std::move(what)); }

Result<std::vector<uint32_t>> IndexesOf(const json::object& o, std::string_view key, size_t bound) {
  std::vector<uint32_t> out;
  const json::value* v = o.if_contains(key);
  if (v == nullptr || !v->is_array()) return Malformed(std::string(key) + " must be an array");
  for (const auto& e : v->get_array()) {
    if (!e.is_int64() || e.get_int64() < 0 || static_cast<size_t>(e.get_int64()) >= bound) {
      return Malformed(std::string(key) + " holds an index out of range");
    }
    out.push_back(static_cast<uint32_t>(e.get_int64()));
  }
  return out;
}

std::optional<int64_t> OptInt(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_int64() ? std::optional<int64_t>(v->get_int64()) : std::nullopt;
}

Result<Snapshot> SnapshotFrom(const json::value& v) {
  if (!v.is_object()) return Malformed("not a JSON object");
  const json::object& o = v.get_object();
  const json::value* format = o.if_contains("format");
  if (format == nullptr || !format->is_int64() || format->get_int64() != kSnapshotFormat) {
    return Malformed("format is not " + std::to_string(kSnapshotFormat));
  }
  Snapshot s;
  const json::value* policies = o.if_contains("policies");
  const json::value* things = o.if_contains("things");
  const json::value* certificates = o.if_contains("certificates");
  if (policies == nullptr || !policies->is_array() || things == nullptr || !things->is_array() ||
      certificates == nullptr || !certificates->is_array()) {
    return Malformed("policies, things and certificates must be arrays");
  }
  for (const auto& p : policies->get_array()) {
    const json::object* po = p.if_object();
    if (po == nullptr || !po->contains("name") || !po->at("name").is_string() || !po->contains("document")) {
      return Malformed("a policy must have a name and a document");
    }
    s.policies.emplace_back(std::string(po->at("name").get_string()), json::serialize(po->at("document")));
  }
  for (const auto& t : things->get_array()) {
    const json::object* to = t.if_object();
    if (to == nullptr || !to->contains("name") || !to->at("name").is_string()) {
      return Malformed("a thing must have a name");
    }
    Snapshot::Thing thing;
    thing.name = std::string(to->at("name").get_string());
    if (const json::value* type = to->if_contains("type"); type != nullptr && type->is_string()) {
      thing.type = std::string(type->get_string());
    }
    if (const json::value* attrs = to->if_contains("attributes"); attrs != nullptr && attrs->is_object()) {
      for (const auto& [key, value] : attrs->get_object()) {
        if (value.is_string()) thing.attributes.emplace(std::string(key), std::string(value.get_string()));
      }
    }
    s.things.push_back(std::move(thing));
  }
  for (const auto& c : certificates->get_array()) {
    const json::object* co = c.if_object();
    if (co == nullptr || !co->contains("fingerprint") || !co->at("fingerprint").is_string()) {
      return Malformed("a certificate must have a fingerprint");
    }
    Snapshot::Certificate cert;
    cert.fingerprint = AsciiLower(co->at("fingerprint").get_string());
    CF_ASSIGN_OR_RETURN(cert.things, IndexesOf(*co, "things", s.things.size()));
    CF_ASSIGN_OR_RETURN(cert.policies, IndexesOf(*co, "policies", s.policies.size()));
    cert.not_after = OptInt(*co, "not_after");
    cert.revoke_after = OptInt(*co, "revoke_after");
    if (const json::value* cn = co->if_contains("cn"); cn != nullptr && cn->is_string()) {
      cert.common_name = std::string(cn->get_string());
    }
    s.certificates.push_back(std::move(cert));
  }
  return s;
}

// Whether a policy document has a statement with "Effect": "Deny" (an unreadable one has none
// to honour).
bool HasDeny(std::string_view document) {
  boost::system::error_code ec;
  json::value doc = json::parse(document, ec);
  const json::value* statements = !ec && doc.is_object() ? doc.get_object().if_contains("Statement") : nullptr;
  if (statements == nullptr) return false;
  auto denies = [](const json::value& statement) {
    const json::value* effect = statement.is_object() ? statement.get_object().if_contains("Effect") : nullptr;
    return effect != nullptr && effect->is_string() && effect->get_string() == "Deny";
  };
  if (!statements->is_array()) return denies(*statements);
  return std::any_of(statements->get_array().begin(), statements->get_array().end(), denies);
}

}  // namespace

namespace {

// A JSON string: the text quoted, with quotes, backslashes and control characters escaped.
void AppendString(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out.push_back('\\');
      out.push_back(ch);
    } else if (c < 0x20) {
      out.append("\\u00");
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    } else {
      out.push_back(ch);
    }
  }
  out.push_back('"');
}

void AppendIndexes(std::string& out, const std::vector<uint32_t>& v) {
  out.push_back('[');
  for (size_t i = 0; i < v.size(); ++i) {
    if (i > 0) out.push_back(',');
    out.append(std::to_string(v[i]));
  }
  out.push_back(']');
}

}  // namespace

// Written directly rather than through a json::value: a 100,000-device snapshot is built on
// every change, and the tree would cost more than everything else.
std::string ToJson(const Snapshot& s) {
  std::string out;
  out.reserve(128 * (s.certificates.size() + s.things.size()) + 1024);
  out.append("{\"format\":").append(std::to_string(kSnapshotFormat));
  out.append(",\"policies\":[");
  for (size_t i = 0; i < s.policies.size(); ++i) {
    boost::system::error_code ec;
    json::value doc = json::parse(s.policies[i].second, ec);
    out.append(i > 0 ? ",{\"name\":" : "{\"name\":");
    AppendString(out, s.policies[i].first);
    out.append(",\"document\":").append(ec ? "{}" : json::serialize(doc)).push_back('}');
  }
  out.append("],\"things\":[");
  for (size_t i = 0; i < s.things.size(); ++i) {
    const auto& t = s.things[i];
    out.append(i > 0 ? ",{\"name\":" : "{\"name\":");
    AppendString(out, t.name);
    if (t.type) {
      out.append(",\"type\":");
      AppendString(out, *t.type);
    }
    if (!t.attributes.empty()) {
      out.append(",\"attributes\":{");
      bool first = true;
      for (const auto& [key, value] : t.attributes) {
        if (!first) out.push_back(',');
        first = false;
        AppendString(out, key);
        out.push_back(':');
        AppendString(out, value);
      }
      out.push_back('}');
    }
    out.push_back('}');
  }
  out.append("],\"certificates\":[");
  for (size_t i = 0; i < s.certificates.size(); ++i) {
    const auto& c = s.certificates[i];
    out.append(i > 0 ? ",{\"fingerprint\":" : "{\"fingerprint\":");
    AppendString(out, c.fingerprint);
    out.append(",\"things\":");
    AppendIndexes(out, c.things);
    out.append(",\"policies\":");
    AppendIndexes(out, c.policies);
    if (c.not_after) out.append(",\"not_after\":").append(std::to_string(*c.not_after));
    if (c.revoke_after) out.append(",\"revoke_after\":").append(std::to_string(*c.revoke_after));
    if (c.common_name) {
      out.append(",\"cn\":");
      AppendString(out, *c.common_name);
    }
    out.push_back('}');
  }
  out.append("]}");
  return out;
}

Result<std::shared_ptr<const View>> View::Parse(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return Malformed("not JSON: " + ec.message());
  CF_ASSIGN_OR_RETURN(Snapshot s, SnapshotFrom(v));
  return Make(std::move(s));
}

std::shared_ptr<const View> View::Make(Snapshot snapshot) {
  auto view = std::make_shared<View>();
  view->snapshot_ = std::move(snapshot);
  const Snapshot& s = view->snapshot_;
  for (const auto& [name, document] : s.policies) {
    auto compiled = registry::CompiledPolicy::Compile(name, document);
    if (!compiled.ok()) view->skipped_.push_back(name + ": " + compiled.error().message);
    view->unknown_deny_.push_back(!compiled.ok() && HasDeny(document));
    view->compiled_.push_back(compiled.ok() ? std::optional(std::move(*compiled)) : std::nullopt);
  }
  view->by_fingerprint_.reserve(s.certificates.size());
  for (uint32_t i = 0; i < s.certificates.size(); ++i) {
    view->by_fingerprint_.emplace(s.certificates[i].fingerprint, i);
    for (uint32_t t : s.certificates[i].things) view->by_thing_[s.things[t].name].push_back(i);
  }
  return view;
}

View::Session View::SessionOf(const Snapshot::Certificate& c, std::string_view client_id,
                              std::optional<std::string> common_name) const {
  Session session;
  registry::Connection& conn = session.connection;
  conn.client_id = std::string(client_id);
  conn.common_name = std::move(common_name);
  // The thing named by the client id where the certificate has several, else the first.
  const Snapshot::Thing* thing = nullptr;
  for (uint32_t t : c.things) {
    if (snapshot_.things[t].name == client_id) thing = &snapshot_.things[t];
  }
  conn.thing_attached = thing != nullptr;
  if (thing == nullptr && !c.things.empty()) thing = &snapshot_.things[c.things.front()];
  if (thing != nullptr) {
    conn.thing_name = thing->name;
    conn.thing_type = thing->type;
    conn.thing_attributes = thing->attributes;
  }
  for (uint32_t p : c.policies) {
    if (compiled_[p]) session.policies.push_back(&*compiled_[p]);
  }
  session.ends_at = c.not_after;
  if (c.revoke_after && (!session.ends_at || *c.revoke_after < *session.ends_at)) session.ends_at = c.revoke_after;
  return session;
}

Result<View::Session> View::Open(std::string_view fingerprint, std::string_view client_id,
                                 std::optional<std::string> common_name, int64_t now) const {
  auto it = by_fingerprint_.find(AsciiLower(fingerprint));
  if (it == by_fingerprint_.end()) {
    return MakeError(ErrorCode::kPermissionDenied,
                     "the certificate is unknown, revoked, attached to no thing, or its device is disabled");
  }
  const Snapshot::Certificate& c = snapshot_.certificates[it->second];
  // A thing deleted while the snapshot was read leaves its certificate with none.
  if (c.things.empty()) return MakeError(ErrorCode::kPermissionDenied, "the certificate is attached to no thing");
  for (uint32_t p : c.policies) {
    if (unknown_deny_[p]) {
      return MakeError(ErrorCode::kPermissionDenied,
                       fmt::format("the policy {} has a Deny statement certfleet does not evaluate, so the "
                                   "certificate gets nothing",
                                   snapshot_.policies[p].first));
    }
  }
  if (c.not_after && *c.not_after <= now) return MakeError(ErrorCode::kPermissionDenied, "the certificate has expired");
  if (c.revoke_after && *c.revoke_after <= now) {
    return MakeError(ErrorCode::kPermissionDenied, "the certificate was superseded and its grace period is over");
  }
  // The certificate is known by its fingerprint, so its CN is too: a caller that does not
  // say it (the policy simulator) gets the one the broker would see.
  if (!common_name) common_name = c.common_name;
  return SessionOf(c, client_id, std::move(common_name));
}

std::vector<View::Session> View::OpenByThing(std::string_view thing, std::string_view client_id,
                                             const std::optional<std::string>& common_name, int64_t now) const {
  std::vector<Session> out;
  auto it = by_thing_.find(std::string(thing));
  if (it == by_thing_.end()) return out;
  for (uint32_t i : it->second) {
    if (!common_name || snapshot_.certificates[i].common_name != common_name) continue;
    auto session = Open(snapshot_.certificates[i].fingerprint, client_id, common_name, now);
    if (session.ok()) out.push_back(std::move(*session));
  }
  return out;
}

registry::Decision View::Decide(const Session& session, registry::MqttAction action, std::string_view target) {
  return registry::Evaluate(session.policies, session.connection, action, target);
}

}  // namespace certfleet::broker
