#include "registry/policy.h"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include "core/text.h"

namespace certfleet::registry {
namespace json = boost::json;
namespace {

constexpr std::string_view kActionNames[kMqttActionCount] = {"iot:Connect", "iot:Publish", "iot:Subscribe",
                                                             "iot:Receive", "iot:RetainPublish"};
// What each action's resource names, as the prefix of "<kind>/<name>".
constexpr std::string_view kResourceKinds[kMqttActionCount] = {"client/", "topic/", "topicfilter/", "topic/", "topic/"};
constexpr std::string_view kAllActions = "iot:Connect, iot:Publish, iot:Subscribe, iot:Receive, iot:RetainPublish";

// The policy variables (and condition keys) evaluated.
constexpr std::string_view kClientId = "iot:ClientId";
constexpr std::string_view kThingName = "iot:Connection.Thing.ThingName";
constexpr std::string_view kThingType = "iot:Connection.Thing.ThingTypeName";
constexpr std::string_view kThingAttribute = "iot:Connection.Thing.Attributes[";  // name]
constexpr std::string_view kIsAttached = "iot:Connection.Thing.IsAttached";
constexpr std::string_view kCommonName = "iot:Certificate.Subject.CommonName";

Error Invalid(std::string message) { return MakeError(ErrorCode::kInvalidArgument, std::move(message)); }

// Action names and Bool values are matched in any case, as IAM does.
bool IEquals(std::string_view a, std::string_view b) { return AsciiLower(a) == AsciiLower(b); }

bool KnownKey(std::string_view key) {
  if (key.starts_with(kThingAttribute)) return key.size() > kThingAttribute.size() + 1 && key.ends_with(']');
  return key == kClientId || key == kThingName || key == kThingType || key == kIsAttached || key == kCommonName;
}

std::optional<std::string_view> Resolve(std::string_view key, const Connection& c) {
  if (key == kClientId) return c.client_id;
  if (key == kCommonName) return c.common_name ? std::optional<std::string_view>(*c.common_name) : std::nullopt;
  if (key == kIsAttached) return c.thing_attached ? "true" : "false";
  if (!c.thing_name) return std::nullopt;
  if (key == kThingName) return *c.thing_name;
  if (key == kThingType) return c.thing_type ? std::optional<std::string_view>(*c.thing_type) : std::nullopt;
  if (key.starts_with(kThingAttribute)) {
    auto name = key.substr(kThingAttribute.size(), key.size() - kThingAttribute.size() - 1);
    auto it = c.thing_attributes.find(name);
    if (it != c.thing_attributes.end()) return it->second;
  }
  return std::nullopt;
}

// The wildcard match; with `escapes`, a backslash makes the next pattern character plain.
bool Glob(std::string_view p, std::string_view t, bool escapes) {
  size_t pi = 0, ti = 0;
  size_t star_p = std::string_view::npos, star_t = 0;
  while (ti < t.size()) {
    if (pi < p.size() && p[pi] == '*') {
      star_p = ++pi;
      star_t = ti;
      continue;
    }
    if (pi < p.size()) {
      bool plain = escapes && p[pi] == '\\' && pi + 1 < p.size();
      char want = plain ? p[pi + 1] : p[pi];
      if ((!plain && want == '?') || want == t[ti]) {
        pi += plain ? 2 : 1;
        ++ti;
        continue;
      }
    }
    if (star_p == std::string_view::npos) return false;
    pi = star_p;
    ti = ++star_t;
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

using Pattern = CompiledPolicy::Pattern;

// The pattern's text with its variables resolved, their values made plain; nullopt when a
// variable has no value (the pattern then matches nothing).
std::optional<std::string> Expand(const Pattern& pattern, const Connection& c) {
  std::string out;
  for (const auto& piece : pattern.pieces) {
    if (piece.kind == Pattern::Piece::kText) {
      for (char ch : piece.text) {
        if (ch == '\\') out.push_back('\\');
        out.push_back(ch);
      }
      continue;
    }
    auto value = Resolve(piece.text, c);
    if (!value) return std::nullopt;
    for (char ch : *value) {
      if (ch == '*' || ch == '?' || ch == '\\') out.push_back('\\');
      out.push_back(ch);
    }
  }
  return out;
}

bool Matches(const Pattern& pattern, const Connection& c, std::string_view text, bool wildcards) {
  if (pattern.pieces.size() == 1 && pattern.pieces[0].kind == Pattern::Piece::kText) {
    return wildcards ? Glob(pattern.pieces[0].text, text, false) : pattern.pieces[0].text == text;
  }
  auto expanded = Expand(pattern, c);
  if (!expanded) return false;
  if (wildcards) return Glob(*expanded, text, true);
  // Plain comparison: undo the escaping.
  std::string plain;
  for (size_t i = 0; i < expanded->size(); ++i) {
    if ((*expanded)[i] == '\\' && i + 1 < expanded->size()) ++i;
    plain.push_back((*expanded)[i]);
  }
  return plain == text;
}

Result<Pattern> ParsePattern(std::string_view text, std::string_view where) {
  Pattern pattern;
  while (!text.empty()) {
    size_t open = text.find("${");
    if (open != 0) {
      pattern.pieces.push_back({Pattern::Piece::kText, std::string(text.substr(0, open))});
      if (open == std::string_view::npos) break;
      text.remove_prefix(open);
    }
    size_t close = text.find('}');
    if (close == std::string_view::npos) return Invalid(std::string(where) + ": a policy variable has no closing }");
    std::string_view key = text.substr(2, close - 2);
    if (!KnownKey(key)) {
      return Invalid(std::string(where) + ": policy variable ${" + std::string(key) +
                     "} is not one certfleet evaluates (see the README's broker section)");
    }
    pattern.pieces.push_back({Pattern::Piece::kVariable, std::string(key)});
    text.remove_prefix(close + 1);
  }
  if (pattern.pieces.empty()) pattern.pieces.push_back({Pattern::Piece::kText, ""});
  return pattern;
}

// "arn:<partition>:iot:<region>:<account>:<resource>" or "<resource>", where the resource
// must be able to name a client, topic or topic filter.
Result<Pattern> ParseResource(std::string_view resource, std::string_view where) {
  if (resource.starts_with("arn:")) {
    std::string_view rest = resource;
    std::string_view parts[5];
    for (auto& part : parts) {
      size_t colon = rest.find(':');
      if (colon == std::string_view::npos)
        return Invalid(std::string(where) + ": " + std::string(resource) + " is not an ARN");
      part = rest.substr(0, colon);
      rest.remove_prefix(colon + 1);
    }
    if (parts[2] != "iot" && parts[2] != "*") {
      return Invalid(std::string(where) + ": " + std::string(resource) + " is not an AWS IoT resource");
    }
    resource = rest;
  }
  std::string_view lead = resource.substr(0, resource.find_first_of("*?$"));
  bool fits = resource == "*";
  for (std::string_view kind : {"client/", "topic/", "topicfilter/"}) {
    fits = fits || kind.starts_with(lead) || lead.starts_with(kind);
  }
  if (!fits) {
    return Invalid(std::string(where) + ": " + std::string(resource) +
                   " names no client/, topic/ or topicfilter/ resource");
  }
  return ParsePattern(resource, where);
}

Result<std::vector<std::string_view>> StringList(const json::value* v, std::string_view where) {
  std::vector<std::string_view> out;
  if (v != nullptr && v->is_string()) out.emplace_back(v->get_string());
  if (v != nullptr && v->is_array()) {
    for (const auto& e : v->get_array()) {
      if (!e.is_string()) return Invalid(std::string(where) + " must be a string or an array of strings");
      out.emplace_back(e.get_string());
    }
  }
  if (out.empty()) return Invalid(std::string(where) + " must be a string or a non-empty array of strings");
  return out;
}

Result<uint8_t> ParseActions(const json::value* v, std::string_view where) {
  CF_ASSIGN_OR_RETURN(auto names, StringList(v, where));
  uint8_t bits = 0;
  for (std::string_view name : names) {
    uint8_t these = 0;
    for (int a = 0; a < kMqttActionCount; ++a) {
      if (Glob(AsciiLower(name), AsciiLower(kActionNames[a]), false)) these |= static_cast<uint8_t>(1U << a);
    }
    if (these == 0) {
      return Invalid(std::string(where) + ": " + std::string(name) + " is not an MQTT action certfleet evaluates (" +
                     std::string(kAllActions) + ")");
    }
    bits |= these;
  }
  return bits;
}

Result<std::vector<CompiledPolicy::Condition>> ParseConditions(const json::value* v, std::string_view where) {
  using Condition = CompiledPolicy::Condition;
  std::vector<Condition> out;
  if (v == nullptr) return out;
  if (!v->is_object()) return Invalid(std::string(where) + " must be an object");
  for (const auto& [op_name, keys] : v->get_object()) {
    Condition::Operator op;
    if (op_name == "StringEquals") {
      op = Condition::kStringEquals;
    } else if (op_name == "StringNotEquals") {
      op = Condition::kStringNotEquals;
    } else if (op_name == "StringLike") {
      op = Condition::kStringLike;
    } else if (op_name == "StringNotLike") {
      op = Condition::kStringNotLike;
    } else if (op_name == "Bool") {
      op = Condition::kBool;
    } else {
      return Invalid(std::string(where) + ": operator " + std::string(op_name) +
                     " is not evaluated (StringEquals, StringNotEquals, StringLike, StringNotLike, Bool)");
    }
    if (!keys.is_object() || keys.get_object().empty()) {
      return Invalid(std::string(where) + "." + std::string(op_name) + " must be an object of condition keys");
    }
    for (const auto& [key, values] : keys.get_object()) {
      std::string key_where = std::string(where) + "." + std::string(op_name) + "." + std::string(key);
      if (!KnownKey(key)) return Invalid(key_where + ": not a condition key certfleet evaluates");
      Condition c{op, std::string(key), {}};
      std::vector<std::string> texts;
      if (values.is_bool()) {
        texts.emplace_back(values.get_bool() ? "true" : "false");
      } else {
        CF_ASSIGN_OR_RETURN(auto list, StringList(&values, key_where));
        texts.assign(list.begin(), list.end());
      }
      for (const auto& text : texts) {
        if (op == Condition::kBool && !IEquals(text, "true") && !IEquals(text, "false")) {
          return Invalid(key_where + ": Bool takes true or false");
        }
        CF_ASSIGN_OR_RETURN(auto pattern, ParsePattern(text, key_where));
        c.values.push_back(std::move(pattern));
      }
      out.push_back(std::move(c));
    }
  }
  return out;
}

bool Holds(const CompiledPolicy::Condition& c, const Connection& connection) {
  using Condition = CompiledPolicy::Condition;
  auto value = Resolve(c.key, connection);
  bool negated = c.op == Condition::kStringNotEquals || c.op == Condition::kStringNotLike;
  // As IAM: a key without a value matches nothing, so only a negated operator holds.
  if (!value) return negated;
  bool any = false;
  for (const auto& pattern : c.values) {
    if (c.op == Condition::kBool) {
      any = any || (pattern.pieces.size() == 1 && IEquals(pattern.pieces[0].text, *value));
    } else {
      bool like = c.op == Condition::kStringLike || c.op == Condition::kStringNotLike;
      any = any || Matches(pattern, connection, *value, like);
    }
  }
  return negated ? !any : any;
}

}  // namespace

std::string_view MqttActionName(MqttAction action) { return kActionNames[static_cast<int>(action)]; }

std::optional<MqttAction> ParseMqttAction(std::string_view name) {
  for (int a = 0; a < kMqttActionCount; ++a) {
    if (IEquals(name, kActionNames[a])) return static_cast<MqttAction>(a);
  }
  return std::nullopt;
}

bool WildcardMatch(std::string_view pattern, std::string_view text) { return Glob(pattern, text, false); }

Result<CompiledPolicy> CompiledPolicy::Compile(std::string name, std::string_view document_json) {
  boost::system::error_code ec;
  json::value doc = json::parse(document_json, ec);
  if (ec || !doc.is_object()) return Invalid("the policy document is not a JSON object");
  CompiledPolicy policy;
  policy.name_ = std::move(name);
  const json::value* statements = doc.get_object().if_contains("Statement");
  json::array list;
  if (statements != nullptr && statements->is_object()) list.push_back(*statements);
  if (statements != nullptr && statements->is_array()) list = statements->get_array();
  for (size_t i = 0; i < list.size(); ++i) {
    std::string where = "Statement[" + std::to_string(i) + "]";
    if (!list[i].is_object()) return Invalid(where + " must be an object");
    const json::object& s = list[i].get_object();
    Statement statement;
    const json::value* effect = s.if_contains("Effect");
    if (effect == nullptr || !effect->is_string() ||
        (effect->get_string() != "Allow" && effect->get_string() != "Deny")) {
      return Invalid(where + ".Effect must be Allow or Deny");
    }
    statement.allow = effect->get_string() == "Allow";
    if (const json::value* sid = s.if_contains("Sid"); sid != nullptr && sid->is_string()) {
      statement.sid = std::string(sid->get_string());
    }
    CF_ASSIGN_OR_RETURN(statement.actions, ParseActions(s.if_contains("Action"), where + ".Action"));
    CF_ASSIGN_OR_RETURN(auto resources, StringList(s.if_contains("Resource"), where + ".Resource"));
    for (std::string_view resource : resources) {
      CF_ASSIGN_OR_RETURN(auto pattern, ParseResource(resource, where + ".Resource"));
      statement.resources.push_back(std::move(pattern));
    }
    CF_ASSIGN_OR_RETURN(statement.conditions, ParseConditions(s.if_contains("Condition"), where + ".Condition"));
    policy.statements_.push_back(std::move(statement));
  }
  if (policy.statements_.empty()) return Invalid("the policy document has no Statement");
  return policy;
}

Decision Evaluate(std::span<const CompiledPolicy* const> policies, const Connection& connection, MqttAction action,
                  std::string_view target) {
  const int a = static_cast<int>(action);
  std::string resource = std::string(kResourceKinds[a]).append(target);
  Decision allowed_by;
  for (const CompiledPolicy* policy : policies) {
    const auto& statements = policy->statements();
    for (size_t i = 0; i < statements.size(); ++i) {
      const auto& s = statements[i];
      if ((s.actions & (1U << a)) == 0) continue;
      if (s.allow && allowed_by.allowed) continue;  // only a deny can change the answer now
      bool applies = false;
      for (const auto& pattern : s.resources) applies = applies || Matches(pattern, connection, resource, true);
      for (const auto& c : s.conditions) applies = applies && Holds(c, connection);
      if (!applies) continue;
      Decision d{s.allow, policy->name(), static_cast<int>(i), s.sid, ""};
      std::string which =
          "policy " + policy->name() + ", Statement[" + std::to_string(i) + "]" + (s.sid ? " (" + *s.sid + ")" : "");
      if (!s.allow) {
        d.reason = "denied by " + which;
        return d;
      }
      d.reason = "allowed by " + which;
      allowed_by = std::move(d);
    }
  }
  if (allowed_by.allowed) return allowed_by;
  Decision none;
  none.reason = "no statement allows " + std::string(MqttActionName(action)) + " on " + resource;
  return none;
}

}  // namespace certfleet::registry
