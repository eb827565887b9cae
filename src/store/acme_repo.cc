#include "store/acme_repo.h"

#include <fmt/format.h>

namespace certfleet::store {
namespace {

constexpr std::string_view kAccountColumns = "id, profile, thumbprint, jwk, status, contact, created_at";

AcmeAccountRecord AccountFromRow(const Row& r) {
  return AcmeAccountRecord{r.Int(0), r.Text(1), r.Text(2), r.Text(3), r.Text(4), r.Text(5), r.Int(6)};
}

Result<std::optional<AcmeAccountRecord>> OneAccount(Tx& tx, const std::string& where, const Params& params) {
  CF_ASSIGN_OR_RETURN(
      auto row, tx.QueryOne(fmt::format("SELECT {} FROM acme_accounts WHERE {}", kAccountColumns, where), params));
  if (!row) return std::optional<AcmeAccountRecord>();
  return std::optional<AcmeAccountRecord>(AccountFromRow(*row));
}

}  // namespace

Result<void> InsertAcmeNonce(Tx& tx, std::string_view nonce, int64_t expires_at) {
  CF_RETURN_IF_ERROR(
      tx.Exec("INSERT INTO acme_nonces (nonce, expires_at) VALUES (?, ?)", {std::string(nonce), expires_at}));
  return Ok();
}

Result<bool> TakeAcmeNonce(Tx& tx, std::string_view nonce, int64_t now) {
  CF_ASSIGN_OR_RETURN(int64_t n,
                      tx.Exec("DELETE FROM acme_nonces WHERE nonce = ? AND expires_at > ?", {std::string(nonce), now}));
  return n == 1;
}

Result<int64_t> DeleteExpiredAcmeNonces(Tx& tx, int64_t now) {
  return tx.Exec("DELETE FROM acme_nonces WHERE expires_at <= ?", {now});
}

Result<int64_t> InsertAcmeAccount(Tx& tx, const AcmeAccountRecord& a) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("INSERT INTO acme_accounts (profile, thumbprint, jwk, status, contact, "
                                            "created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                                            {a.profile, a.thumbprint, a.jwk, a.status, a.contact, a.created_at}));
  if (!row) return MakeError(ErrorCode::kInternal, "the new account has no id");
  return row->Int(0);
}

Result<std::optional<AcmeAccountRecord>> FindAcmeAccount(Tx& tx, int64_t id) { return OneAccount(tx, "id = ?", {id}); }

Result<std::optional<AcmeAccountRecord>> FindAcmeAccountByKey(Tx& tx, std::string_view profile,
                                                              std::string_view thumbprint) {
  return OneAccount(tx, "profile = ? AND thumbprint = ?", {std::string(profile), std::string(thumbprint)});
}

Result<void> UpdateAcmeAccount(Tx& tx, int64_t id, std::string_view status, std::string_view contact) {
  CF_RETURN_IF_ERROR(tx.Exec("UPDATE acme_accounts SET status = ?, contact = ? WHERE id = ?",
                             {std::string(status), std::string(contact), id}));
  return Ok();
}

}  // namespace certfleet::store
