#include "acme/eab.h"

#include <fmt/format.h>

#include <boost/json.hpp>

#include "acme/problem.h"
#include "core/crypto.h"
#include "core/text.h"
#include "store/acme_repo.h"
#include "store/audit_repo.h"

namespace certfleet::acme {
namespace {

namespace json = boost::json;

constexpr size_t kKidBytes = 12;
constexpr size_t kMacKeyBytes = 32;  // as long as the HS256 output: RFC 7518 3.2 asks at least that

std::string SealPurpose(std::string_view kid) { return fmt::format("acme-eab:{}", kid); }

Error Malformed(std::string detail) { return Problem(ErrorCode::kInvalidArgument, "malformed", std::move(detail)); }

}  // namespace

Result<EabCredentials> CreateEab(store::Store& store, const Clock& clock, std::string_view master_key,
                                 std::string_view profile, std::string_view actor) {
  EabCredentials out{RandomToken(kKidBytes), "", std::string(profile)};
  const std::string key = RandomBytes(kMacKeyBytes);
  out.hmac_key = Base64UrlEncode(key);
  const int64_t now = clock.NowMillis();
  CF_RETURN_IF_ERROR(store::Write(store, [&](store::Tx& tx) -> Result<void> {
    CF_RETURN_IF_ERROR(store::InsertAcmeEab(
        tx, store::AcmeEabRecord{out.kid, out.profile, SealSecret(master_key, SealPurpose(out.kid), key),
                                 std::string(actor), now, std::nullopt, std::nullopt}));
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "acme.eab.create", fmt::format("acme-eab:{}", out.kid),
                                          json::serialize(json::object{{"profile", profile}})));
    return Ok();
  }));
  return out;
}

Result<std::string> VerifyEab(store::Store& store, std::string_view master_key, std::string_view profile,
                              const json::value& binding, const Jws& outer) {
  if (!binding.is_object()) return Malformed("externalAccountBinding is not a JWS object");
  auto parsed = ParseJws(json::serialize(binding), JwsRole::kEab);
  if (!parsed.ok()) return Malformed("externalAccountBinding: " + parsed.error().message);
  const Jws& eab = *parsed;
  if (eab.alg != "HS256") {
    return Problem(ErrorCode::kInvalidArgument, "badSignatureAlgorithm",
                   fmt::format("an external account binding is MACed with HS256, not {}", Escaped(eab.alg)));
  }
  if (eab.url != outer.url) return Malformed("the external account binding's url is not the request's");
  boost::system::error_code ec;
  json::value bound = json::parse(eab.payload, ec);
  if (ec || !bound.is_object()) return Malformed("the external account binding's payload is not a JWK");
  auto bound_thumbprint = JwkThumbprint(bound.as_object());
  auto account_thumbprint = JwkThumbprint(*outer.jwk);
  if (!bound_thumbprint.ok() || !account_thumbprint.ok() || *bound_thumbprint != *account_thumbprint) {
    return Malformed("the external account binding is for another key than the account's");
  }
  CF_ASSIGN_OR_RETURN(auto record, store::Read(store, [&](store::Tx& tx) { return store::FindAcmeEab(tx, *eab.kid); }));
  const Error refused = Problem(ErrorCode::kUnauthenticated, "unauthorized",
                                "the external account binding's kid is unknown to this profile or used already");
  if (!record || record->profile != profile || record->account_id) return refused;
  const std::optional<std::string> key = OpenSecret(master_key, SealPurpose(record->kid), record->key_sealed);
  if (!key) return MakeError(ErrorCode::kInternal, "an external account binding's key does not open");
  if (!ConstantTimeEquals(HmacSha256(*key, eab.protected_b64 + "." + eab.payload_b64), eab.signature)) {
    return Problem(ErrorCode::kUnauthenticated, "unauthorized", "the external account binding's MAC does not verify");
  }
  return record->kid;
}

}  // namespace certfleet::acme
