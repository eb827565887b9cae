#include "enroll/profiles.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>

#include "core/text.h"
#include "pki/certificate.h"

namespace certfleet::enroll {
namespace {

namespace json = boost::json;

// A manufacturer's roots and intermediates fit in far less; the bound keeps a profile a row.
constexpr size_t kMaxAnchorsBytes = size_t{64} * 1024;

constexpr AuthWay kWays[] = {AuthWay::kRegisteredKey, AuthWay::kFactory, AuthWay::kSecret, AuthWay::kReenroll};

Error Invalid(std::string message) { return MakeError(ErrorCode::kInvalidArgument, std::move(message)); }

std::optional<AuthWay> ParseWay(std::string_view name) {
  for (AuthWay w : kWays) {
    if (AuthWayName(w) == name) return w;
  }
  return std::nullopt;
}

std::string WayList() {
  std::string out;
  for (AuthWay w : kWays) out += fmt::format("{}{}", out.empty() ? "" : ", ", AuthWayName(w));
  return out;
}

Result<std::vector<AuthWay>> Ways(const json::value* v) {
  if (v == nullptr || !v->is_array() || v->as_array().empty()) {
    return Invalid(fmt::format("auth must be a non-empty array of: {}", WayList()));
  }
  std::vector<AuthWay> out;
  for (const auto& item : v->as_array()) {
    std::optional<AuthWay> way = item.is_string() ? ParseWay(item.as_string()) : std::nullopt;
    if (!way) return Invalid(fmt::format("auth: each item is one of {}", WayList()));
    if (std::find(out.begin(), out.end(), *way) == out.end()) out.push_back(*way);
  }
  return out;
}

json::array WaysJson(const Profile& p) {
  json::array ways;
  for (AuthWay w : p.auth) ways.emplace_back(AuthWayName(w));
  return ways;
}

}  // namespace

std::string_view AuthWayName(AuthWay way) {
  switch (way) {
    case AuthWay::kRegisteredKey:
      return "registered_key";
    case AuthWay::kFactory:
      return "factory_certificate";
    case AuthWay::kSecret:
      return "secret";
    case AuthWay::kReenroll:
      return "reenroll";
  }
  return "unknown";
}

bool Profile::Allows(AuthWay way) const { return std::find(auth.begin(), auth.end(), way) != auth.end(); }

Result<Profile> ProfileFromJson(std::string_view label, const json::object& body) {
  const bool plain = !label.empty() && label.size() <= kMaxLabel && std::all_of(label.begin(), label.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
  if (!plain) return Invalid(fmt::format("a label is 1 to {} lowercase letters, digits and hyphens", kMaxLabel));
  Profile p;
  p.label = std::string(label);
  const json::value* tmpl = body.if_contains("template");
  if (!tmpl || !tmpl->is_string() || !IsValidName(tmpl->as_string())) {
    return Invalid("template (the provisioning template's name) is required");
  }
  p.template_name = std::string(tmpl->as_string());
  CF_ASSIGN_OR_RETURN(p.auth, Ways(body.if_contains("auth")));
  if (const json::value* anchors = body.if_contains("factory_anchors"); anchors && !anchors->is_null()) {
    if (!anchors->is_string() || anchors->as_string().size() > kMaxAnchorsBytes) {
      return Invalid(fmt::format("factory_anchors must be PEM certificates, at most {} bytes", kMaxAnchorsBytes));
    }
    p.factory_anchors = std::string(anchors->as_string());
    if (!p.factory_anchors.empty()) {
      auto certs = pki::CertificatesFromPem(p.factory_anchors);
      if (!certs.ok()) return Invalid("factory_anchors: " + certs.error().message);
    }
  }
  if (const json::value* kt = body.if_contains("key_type"); kt && !kt->is_null()) {
    if (!kt->is_string()) return Invalid("key_type must be a key type name (ec-p256, rsa-2048, ...)");
    CF_ASSIGN_OR_RETURN(p.key_type, pki::ParseKeyType(kt->as_string()));
  }
  if (const json::value* a = body.if_contains("approval"); a && !a->is_null()) {
    if (!a->is_bool()) return Invalid("approval must be true or false");
    p.approval = a->as_bool();
  }
  return p;
}

json::object ProfileJson(const Profile& p) {
  return json::object{{"label", p.label},
                      {"template", p.template_name},
                      {"auth", WaysJson(p)},
                      {"factory_anchors", p.factory_anchors},
                      {"key_type", pki::KeyTypeName(p.key_type)},
                      {"approval", p.approval}};
}

Result<Profile> ProfileFromRecord(const store::EnrollProfileRecord& r) {
  boost::system::error_code ec;
  json::value auth = json::parse(r.auth, ec);
  if (ec) return MakeError(ErrorCode::kInternal, "an enrollment profile's auth column is not JSON");
  Profile p;
  p.label = r.label;
  p.template_name = r.template_name;
  Result<std::vector<AuthWay>> ways = Ways(&auth);
  if (!ways.ok()) return MakeError(ErrorCode::kInternal, "enrollment profile " + r.label + ": " + ways.error().message);
  p.auth = std::move(*ways);
  p.factory_anchors = r.factory_anchors;
  Result<pki::KeyType> kt = pki::ParseKeyType(r.key_type);
  if (!kt.ok()) return MakeError(ErrorCode::kInternal, "enrollment profile " + r.label + ": " + kt.error().message);
  p.key_type = *kt;
  p.approval = r.approval;
  return p;
}

store::EnrollProfileRecord ProfileRecord(const Profile& p, int64_t now) {
  return store::EnrollProfileRecord{p.label,
                                    p.template_name,
                                    json::serialize(WaysJson(p)),
                                    p.factory_anchors,
                                    std::string(pki::KeyTypeName(p.key_type)),
                                    p.approval,
                                    now,
                                    now};
}

}  // namespace certfleet::enroll
