#include "store/tokens_repo.h"

#include "core/crypto.h"

namespace certfleet::store {
namespace {

constexpr size_t kIdBytes = 9;       // 12 base64url characters: unique enough to look up, not secret
constexpr size_t kSecretBytes = 32;  // 256 bits
constexpr std::string_view kPrefix = "cf_";

ApiToken FromRow(const Row& r) {
  ApiToken t;
  t.id = r.Text(0);
  t.name = r.Text(1);
  t.role = ParseRole(r.Text(2)).ok() ? *ParseRole(r.Text(2)) : Role::kReader;
  t.created_at = r.Int(3);
  t.created_by = r.Text(4);
  t.last_used_at = r.OptInt(5);
  t.revoked_at = r.OptInt(6);
  return t;
}

constexpr std::string_view kColumns = "id, name, role, created_at, created_by, last_used_at, revoked_at";

}  // namespace

Result<Role> ParseRole(std::string_view name) {
  if (name == "admin") return Role::kAdmin;
  if (name == "operator") return Role::kOperator;
  if (name == "reader") return Role::kReader;
  return MakeError(ErrorCode::kInvalidArgument, "role must be admin, operator or reader");
}

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kAdmin:
      return "admin";
    case Role::kOperator:
      return "operator";
    case Role::kReader:
      return "reader";
  }
  return "reader";
}

Result<NewToken> CreateApiToken(Tx& tx, Role role, std::string_view name, std::string_view created_by, int64_t now) {
  if (name.size() > 200) return MakeError(ErrorCode::kInvalidArgument, "token name longer than 200 characters");
  NewToken out;
  // base64url may contain '_'; ids are made without it so the bearer splits unambiguously,
  // and do not begin with '-', which `certfleet token revoke ID` would read as an option.
  do {
    out.record.id = RandomToken(kIdBytes);
  } while (out.record.id.find('_') != std::string::npos || out.record.id.front() == '-');
  const std::string secret = RandomToken(kSecretBytes);
  out.record.name = name.empty() ? std::string(RoleName(role)) : std::string(name);
  out.record.role = role;
  out.record.created_at = now;
  out.record.created_by = created_by;
  CF_RETURN_IF_ERROR(tx.Exec(
      "INSERT INTO api_tokens (id, name, role, secret_hash, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?)",
      {out.record.id, out.record.name, std::string(RoleName(role)), Sha256Hex(secret), now, std::string(created_by)}));
  out.bearer = std::string(kPrefix) + out.record.id + "_" + secret;
  return out;
}

Result<std::optional<ApiToken>> AuthenticateBearer(Tx& tx, std::string_view bearer) {
  if (!bearer.starts_with(kPrefix)) return std::optional<ApiToken>();
  bearer.remove_prefix(kPrefix.size());
  auto sep = bearer.find('_');
  if (sep == std::string_view::npos || sep == 0 || bearer.size() - sep - 1 < 16 || bearer.size() > 256) {
    return std::optional<ApiToken>();
  }
  std::string id(bearer.substr(0, sep));
  std::string_view secret = bearer.substr(sep + 1);
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT " + std::string(kColumns) +
                                                ", secret_hash FROM api_tokens WHERE id = ? AND revoked_at IS NULL",
                                            {id}));
  if (!row || !ConstantTimeEquals(row->Text(7), Sha256Hex(secret))) return std::optional<ApiToken>();
  return std::optional<ApiToken>(FromRow(*row));
}

Result<std::vector<ApiToken>> ListApiTokens(Tx& tx) {
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT " + std::string(kColumns) + " FROM api_tokens ORDER BY created_at"));
  std::vector<ApiToken> out;
  for (const auto& r : rows) out.push_back(FromRow(r));
  return out;
}

Result<bool> RevokeApiToken(Tx& tx, std::string_view id, int64_t now) {
  CF_ASSIGN_OR_RETURN(int64_t n, tx.Exec("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                                         {now, std::string(id)}));
  return n > 0;
}

Result<void> TouchApiToken(Store& store, std::string_view id, int64_t now) {
  CF_RETURN_IF_ERROR(store.Exec("UPDATE api_tokens SET last_used_at = ? WHERE id = ?", {now, std::string(id)}));
  return Ok();
}

}  // namespace certfleet::store
