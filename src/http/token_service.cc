#include "http/token_service.h"

#include <fmt/format.h>

#include <boost/json.hpp>

#include "core/text.h"
#include "store/audit_repo.h"

namespace certfleet::http {

Result<store::NewToken> TokenService::Create(store::Role role, std::string_view name, std::string_view actor) {
  if (name.size() > kMaxNameLength) {
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("name is longer than {} characters", kMaxNameLength));
  }
  CF_RETURN_IF_ERROR(CheckPrintable("name", name));
  return store::Write(store_, [&](store::Tx& tx) -> Result<store::NewToken> {
    const int64_t now = clock_.NowMillis();
    CF_ASSIGN_OR_RETURN(auto token, store::CreateApiToken(tx, role, name, actor, now));
    const boost::json::object details{{"role", store::RoleName(role)}, {"name", token.record.name}};
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "token.create", "token:" + token.record.id,
                                          boost::json::serialize(details)));
    return token;
  });
}

Result<std::vector<store::ApiToken>> TokenService::List() {
  return store::Read(store_, [](store::Tx& tx) { return store::ListApiTokens(tx); });
}

Result<void> TokenService::Revoke(std::string_view id, std::string_view actor) {
  return store_.Transact([&](store::Tx& tx) -> Result<void> {
    const int64_t now = clock_.NowMillis();
    CF_ASSIGN_OR_RETURN(bool revoked, store::RevokeApiToken(tx, id, now));
    if (!revoked) return MakeError(ErrorCode::kNotFound, fmt::format("no unrevoked token {}", id));
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "token.revoke", fmt::format("token:{}", id), "{}"));
    return Ok();
  });
}

}  // namespace certfleet::http
