#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "store/store.h"

namespace certfleet::store {

// Roles nest: an admin may do all an operator may, an operator all a reader may.
enum class Role { kReader = 1, kOperator = 2, kAdmin = 3 };
Result<Role> ParseRole(std::string_view name);
std::string_view RoleName(Role role);

struct ApiToken {
  std::string id;
  std::string name;
  Role role = Role::kReader;
  int64_t created_at = 0;
  std::string created_by;
  std::optional<int64_t> last_used_at;
  std::optional<int64_t> revoked_at;
};

// A bearer token reads `cf_<id>_<secret>`. Only SHA-256 of the secret is stored: the
// secret has 256 bits of entropy, so a slow hash would add nothing but latency.
struct NewToken {
  ApiToken record;
  std::string bearer;  // shown once
};

Result<NewToken> CreateApiToken(Tx& tx, Role role, std::string_view name, std::string_view created_by, int64_t now);
// The token a bearer string belongs to, if it is valid and not revoked; nullopt otherwise.
Result<std::optional<ApiToken>> AuthenticateBearer(Tx& tx, std::string_view bearer);
Result<std::vector<ApiToken>> ListApiTokens(Tx& tx);
// True if a token was revoked now, false if there is no such unrevoked token.
Result<bool> RevokeApiToken(Tx& tx, std::string_view id, int64_t now);
// Records that the token was used at `now`.
Result<void> TouchApiToken(Store& store, std::string_view id, int64_t now);

}  // namespace certfleet::store
