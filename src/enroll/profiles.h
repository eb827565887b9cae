#pragma once

#include <boost/json/object.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "pki/key.h"
#include "store/enroll_repo.h"

namespace certfleet::enroll {

// How an enrolling client may prove who it is.
enum class AuthWay {
  kRegisteredKey,  // the CSR's key is the device's registered one (W2)
  kFactory,        // a TLS client certificate a supplier manifest imported, or from a manufacturer CA
  kSecret,         // a one-time enrollment secret (EST: HTTP Basic; CMP: the MAC key)
  kReenroll,       // the device's current certfleet certificate as TLS client certificate (CMP: signature)
};
std::string_view AuthWayName(AuthWay way);

// An EST/CMP enrollment profile: what the label in /.well-known/est/{label}/ and
// /.well-known/cmp/p/{label} means.
struct Profile {
  std::string label;
  std::string template_name;  // the provisioning template: CA, validity, thing type, groups, policies
  std::vector<AuthWay> auth;
  std::string factory_anchors;                    // PEM manufacturer CAs whose device certificates identify devices
  pki::KeyType key_type = pki::KeyType::kEcP256;  // of keys certfleet makes (EST serverkeygen)
  bool approval = false;                          // each request waits for an operator's approval

  bool Allows(AuthWay way) const;
};

// Longest label: a URL path segment.
inline constexpr size_t kMaxLabel = 64;

// The profile served without a label (/.well-known/est/ itself).
inline constexpr std::string_view kDefaultLabel = "default";

// From the API's JSON: {template, auth, factory_anchors?, key_type?, approval?};
// kInvalidArgument naming what is wrong. What it names must exist: see EnrollService.
Result<Profile> ProfileFromJson(std::string_view label, const boost::json::object& body);
boost::json::object ProfileJson(const Profile& profile);
Result<Profile> ProfileFromRecord(const store::EnrollProfileRecord& record);
store::EnrollProfileRecord ProfileRecord(const Profile& profile, int64_t now);

}  // namespace certfleet::enroll
