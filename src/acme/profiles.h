#pragma once

#include <boost/json/object.hpp>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "store/acme_repo.h"

namespace certfleet::acme {

// An ACME profile: the CA that issues, what may be ordered, the validity, the key types and
// whether accounts need an external account binding. Each has its directory at
// /acme/<name>/directory.
struct Profile {
  std::string name;
  std::string ca;
  // A name must be one of dns_suffixes or end in "." + one; an address must be in one of the
  // CIDRs of ip_ranges. Both empty: any name or address; one empty: none of its kind.
  std::vector<std::string> dns_suffixes;
  std::vector<std::string> ip_ranges;
  int64_t validity_days = 90;
  std::vector<std::string> key_types;  // pki key type names ("ec-p256", …); empty: any the linter accepts
  bool eab_required = false;
  bool configured = false;  // made by acme.ca, not kept in the store
};

// The profile acme.ca makes: "default", issuing under `ca`, with no limits but the validity.
Profile ConfiguredProfile(const std::string& ca, int64_t validity_days);
// The profile `name`: the one kept in the store, else `configured` when it has that name
// (null: acme.ca is not set); kNotFound (reason malformed) otherwise.
Result<Profile> FindProfile(store::Store& store, const Profile* configured, std::string_view name);

// A profile from the API's JSON: {ca, dns_suffixes?, ip_ranges?, validity_days?, key_types?,
// eab_required?}; kInvalidArgument naming what is wrong.
Result<Profile> ProfileFromJson(std::string_view name, const boost::json::object& body);
boost::json::object ProfileJson(const Profile& profile);
Profile ProfileFromRecord(const store::AcmeProfileRecord& record);
store::AcmeProfileRecord ProfileRecord(const Profile& profile, int64_t now);

// Ok if the profile allows ordering the identifier (a wildcard's name without "*.");
// rejectedIdentifier otherwise.
Result<void> CheckIdentifier(const Profile& profile, std::string_view type, std::string_view value);
// Ok if the profile takes keys of this type; badCSR otherwise.
Result<void> CheckKeyType(const Profile& profile, std::string_view key_type);

}  // namespace certfleet::acme
