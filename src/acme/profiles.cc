#include "acme/profiles.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <charconv>

#include "acme/problem.h"
#include "core/text.h"
#include "pki/key.h"
#include "pki/profile.h"

namespace certfleet::acme {
namespace {

namespace json = boost::json;

constexpr size_t kMaxProfileName = 64;  // a URL path segment
constexpr size_t kMaxListItems = 100;
constexpr int64_t kMaxValidityDays = 825;  // the CA/Browser Forum's old ceiling; ACME certificates are short

Error Invalid(std::string message) { return MakeError(ErrorCode::kInvalidArgument, std::move(message)); }

Result<std::vector<std::string>> Strings(const json::object& body, std::string_view key) {
  std::vector<std::string> out;
  const json::value* v = body.if_contains(key);
  if (v == nullptr || v->is_null()) return out;
  if (!v->is_array() || v->as_array().size() > kMaxListItems) {
    return Invalid(fmt::format("{} must be an array of at most {} strings", key, kMaxListItems));
  }
  for (const auto& item : v->as_array()) {
    if (!item.is_string()) return Invalid(fmt::format("{} must hold strings only", key));
    out.emplace_back(AsciiLower(item.as_string()));
  }
  return out;
}

// An address and prefix length from "address/bits"; nullopt if it is not one.
struct Range {
  int family = 0;
  unsigned char bytes[16] = {};
  int bits = 0;
};
std::optional<Range> ParseRange(std::string_view text) {
  const size_t slash = text.find('/');
  const std::string address(text.substr(0, slash));
  Range r;
  r.family = address.find(':') == std::string::npos ? AF_INET : AF_INET6;
  if (inet_pton(r.family, address.c_str(), r.bytes) != 1) return std::nullopt;
  const int max_bits = r.family == AF_INET ? 32 : 128;
  r.bits = max_bits;
  if (slash != std::string_view::npos) {
    const std::string_view digits = text.substr(slash + 1);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), r.bits);
    if (ec != std::errc() || end != digits.data() + digits.size() || r.bits < 0 || r.bits > max_bits) {
      return std::nullopt;
    }
  }
  return r;
}

bool InRange(const Range& range, std::string_view address) {
  unsigned char raw[16] = {};
  if (inet_pton(range.family, std::string(address).c_str(), raw) != 1) return false;
  for (int bit = 0; bit < range.bits; ++bit) {
    const int mask = 0x80 >> (bit % 8);
    if ((raw[bit / 8] & mask) != (range.bytes[bit / 8] & mask)) return false;
  }
  return true;
}

json::array Array(const std::vector<std::string>& items) {
  json::array out;
  for (const auto& i : items) out.emplace_back(i);
  return out;
}

std::vector<std::string> FromJsonText(const std::string& text) {
  std::vector<std::string> out;
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_array()) return out;
  for (const auto& item : v.as_array()) {
    if (item.is_string()) out.emplace_back(item.as_string());
  }
  return out;
}

}  // namespace

Profile ConfiguredProfile(const std::string& ca, int64_t validity_days) {
  Profile p;
  p.name = "default";
  p.ca = ca;
  p.validity_days = validity_days;
  p.configured = true;
  return p;
}

Result<Profile> FindProfile(store::Store& store, const Profile* configured, std::string_view name) {
  CF_ASSIGN_OR_RETURN(auto stored, store::Read(store, [&](store::Tx& tx) { return store::FindAcmeProfile(tx, name); }));
  if (stored) return ProfileFromRecord(*stored);
  if (configured && configured->name == name) return *configured;
  return Problem(ErrorCode::kNotFound, "malformed", fmt::format("no ACME profile {}", Escaped(name)));
}

Result<Profile> ProfileFromJson(std::string_view name, const json::object& body) {
  Profile p;
  const bool plain = !name.empty() && name.size() <= kMaxProfileName &&
                     std::all_of(name.begin(), name.end(),
                                 [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; });
  if (!plain) {
    return Invalid(fmt::format("a profile's name is 1 to {} lowercase letters, digits and hyphens", kMaxProfileName));
  }
  p.name = std::string(name);
  const json::value* ca = body.if_contains("ca");
  if (!ca || !ca->is_string() || ca->as_string().empty()) return Invalid("ca (the issuing CA's fqdn) is required");
  p.ca = std::string(ca->as_string());
  CF_ASSIGN_OR_RETURN(p.dns_suffixes, Strings(body, "dns_suffixes"));
  for (const auto& s : p.dns_suffixes) {
    if (!pki::IsValidDnsName(s)) return Invalid(fmt::format("dns_suffixes: {} is not a DNS name", Escaped(s)));
  }
  CF_ASSIGN_OR_RETURN(p.ip_ranges, Strings(body, "ip_ranges"));
  for (const auto& r : p.ip_ranges) {
    if (!ParseRange(r)) return Invalid(fmt::format("ip_ranges: {} is not an address or CIDR range", Escaped(r)));
  }
  CF_ASSIGN_OR_RETURN(p.key_types, Strings(body, "key_types"));
  for (const auto& k : p.key_types) {
    if (!pki::ParseKeyType(k).ok()) return Invalid(fmt::format("key_types: {} is not a key type", Escaped(k)));
  }
  if (const json::value* v = body.if_contains("validity_days")) {
    if (!v->is_int64() || v->as_int64() < 1 || v->as_int64() > kMaxValidityDays) {
      return Invalid(fmt::format("validity_days must be 1 to {}", kMaxValidityDays));
    }
    p.validity_days = v->as_int64();
  }
  if (const json::value* v = body.if_contains("eab_required")) {
    if (!v->is_bool()) return Invalid("eab_required must be true or false");
    p.eab_required = v->as_bool();
  }
  return p;
}

json::object ProfileJson(const Profile& p) {
  return {{"name", p.name},
          {"ca", p.ca},
          {"dns_suffixes", Array(p.dns_suffixes)},
          {"ip_ranges", Array(p.ip_ranges)},
          {"validity_days", p.validity_days},
          {"key_types", Array(p.key_types)},
          {"eab_required", p.eab_required},
          {"source", p.configured ? "config" : "store"}};
}

Profile ProfileFromRecord(const store::AcmeProfileRecord& r) {
  return Profile{r.name,
                 r.ca,
                 FromJsonText(r.dns_suffixes),
                 FromJsonText(r.ip_ranges),
                 r.validity_days,
                 FromJsonText(r.key_types),
                 r.eab_required,
                 false};
}

store::AcmeProfileRecord ProfileRecord(const Profile& p, int64_t now) {
  return store::AcmeProfileRecord{p.name,
                                  p.ca,
                                  json::serialize(Array(p.dns_suffixes)),
                                  json::serialize(Array(p.ip_ranges)),
                                  p.validity_days,
                                  json::serialize(Array(p.key_types)),
                                  p.eab_required,
                                  now,
                                  now};
}

Result<void> CheckIdentifier(const Profile& profile, std::string_view type, std::string_view value) {
  // A profile that limits names or addresses limits both: a list left empty beside the other
  // one issues for none of its kind (a partner's names, not any address it asks for).
  if (profile.dns_suffixes.empty() && profile.ip_ranges.empty()) return Ok();
  if (type == "dns") {
    for (const auto& suffix : profile.dns_suffixes) {
      if (value == suffix ||
          (value.size() > suffix.size() && value.ends_with(suffix) && value[value.size() - suffix.size() - 1] == '.')) {
        return Ok();
      }
    }
  } else {
    for (const auto& text : profile.ip_ranges) {
      if (auto range = ParseRange(text); range && InRange(*range, value)) return Ok();
    }
  }
  return Problem(ErrorCode::kInvalidArgument, "rejectedIdentifier",
                 fmt::format("the profile {} does not issue for {}", profile.name, Escaped(value)));
}

Result<void> CheckKeyType(const Profile& profile, std::string_view key_type) {
  if (profile.key_types.empty() ||
      std::find(profile.key_types.begin(), profile.key_types.end(), key_type) != profile.key_types.end()) {
    return Ok();
  }
  return Problem(ErrorCode::kInvalidArgument, "badCSR",
                 fmt::format("the profile {} takes keys of type {}, not {}", profile.name,
                             fmt::join(profile.key_types, ", "), key_type));
}

}  // namespace certfleet::acme
