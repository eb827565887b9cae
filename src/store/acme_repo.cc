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

constexpr std::string_view kOrderColumns =
    "id, account_id, profile, status, identifiers, expires_at, error, serial, replaces, created_at, updated_at, "
    "not_after";
constexpr std::string_view kAuthzColumns =
    "id, order_id, account_id, identifier_type, identifier_value, wildcard, status, expires_at";
constexpr std::string_view kChallengeColumns = "id, authz_id, type, token, status, validated_at, error";

AcmeOrderRecord OrderFromRow(const Row& r) {
  return AcmeOrderRecord{r.Int(0),     r.Int(1),     r.Text(2),    r.Text(3), r.Text(4), r.Int(5),
                         r.OptText(6), r.OptText(7), r.OptText(8), r.Int(9),  r.Int(10), r.OptInt(11)};
}

AcmeAuthzRecord AuthzFromRow(const Row& r) {
  return AcmeAuthzRecord{r.Int(0), r.Int(1), r.Int(2), r.Text(3), r.Text(4), r.Int(5) != 0, r.Text(6), r.Int(7)};
}

AcmeChallengeRecord ChallengeFromRow(const Row& r) {
  return AcmeChallengeRecord{r.Int(0), r.Int(1), r.Text(2), r.Text(3), r.Text(4), r.OptInt(5), r.OptText(6)};
}

}  // namespace

Result<bool> UseAcmeNonce(Tx& tx, std::string_view nonce, int64_t expires_at) {
  CF_ASSIGN_OR_RETURN(int64_t n, tx.Exec("INSERT INTO acme_nonces (nonce, expires_at) VALUES (?, ?) ON CONFLICT "
                                         "(nonce) DO NOTHING",
                                         {std::string(nonce), expires_at}));
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

Result<bool> UpdateAcmeAccount(Tx& tx, int64_t id, std::string_view status, std::string_view contact) {
  CF_ASSIGN_OR_RETURN(int64_t changed,
                      tx.Exec("UPDATE acme_accounts SET status = ?, contact = ? WHERE id = ? AND status = 'valid'",
                              {std::string(status), std::string(contact), id}));
  return changed > 0;
}

Result<bool> ChangeAcmeAccountKey(Tx& tx, int64_t id, std::string_view thumbprint, std::string_view jwk) {
  CF_ASSIGN_OR_RETURN(int64_t changed,
                      tx.Exec("UPDATE acme_accounts SET thumbprint = ?, jwk = ? WHERE id = ? AND status = 'valid'",
                              {std::string(thumbprint), std::string(jwk), id}));
  return changed > 0;
}

Result<int64_t> InsertAcmeOrder(Tx& tx, const AcmeOrderRecord& o) {
  return InsertReturningId(
      tx,
      "INSERT INTO acme_orders (account_id, profile, status, identifiers, expires_at, error, "
      "serial, replaces, created_at, updated_at, not_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
      {o.account_id, o.profile, o.status, o.identifiers, o.expires_at, OptionalValue(o.error), OptionalValue(o.serial),
       OptionalValue(o.replaces), o.created_at, o.updated_at, OptionalValue(o.not_after)});
}

Result<int64_t> InsertAcmeAuthz(Tx& tx, const AcmeAuthzRecord& a) {
  return InsertReturningId(tx,
                           "INSERT INTO acme_authzs (order_id, account_id, identifier_type, identifier_value, "
                           "wildcard, status, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                           {a.order_id, a.account_id, a.identifier_type, a.identifier_value,
                            int64_t{a.wildcard ? 1 : 0}, a.status, a.expires_at});
}

Result<int64_t> InsertAcmeChallenge(Tx& tx, const AcmeChallengeRecord& c) {
  return InsertReturningId(
      tx,
      "INSERT INTO acme_challenges (authz_id, type, token, status, validated_at, error) "
      "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
      {c.authz_id, c.type, c.token, c.status, OptionalValue(c.validated_at), OptionalValue(c.error)});
}

Result<std::optional<AcmeOrderRecord>> FindAcmeOrder(Tx& tx, int64_t id) {
  CF_ASSIGN_OR_RETURN(auto row,
                      tx.QueryOne(fmt::format("SELECT {} FROM acme_orders WHERE id = ?", kOrderColumns), {id}));
  if (!row) return std::optional<AcmeOrderRecord>();
  return std::optional<AcmeOrderRecord>(OrderFromRow(*row));
}

Result<void> LockAcmeOrder(Tx& tx, int64_t id) {
  // An UPDATE takes the row's lock on PostgreSQL (SQLite's writers are one at a time anyway).
  CF_RETURN_IF_ERROR(tx.Exec("UPDATE acme_orders SET updated_at = updated_at WHERE id = ?", {id}));
  return Ok();
}

Result<std::optional<AcmeOrderRecord>> FindAcmeOrderBySerial(Tx& tx, std::string_view serial) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne(fmt::format("SELECT {} FROM acme_orders WHERE serial = ?", kOrderColumns),
                                            {std::string(serial)}));
  if (!row) return std::optional<AcmeOrderRecord>();
  return std::optional<AcmeOrderRecord>(OrderFromRow(*row));
}

Result<std::set<std::string>> AcmeAuthorizedNames(Tx& tx, int64_t account_id, const std::vector<std::string>& values,
                                                  int64_t now) {
  std::set<std::string> out;
  if (values.empty()) return out;
  Params params{account_id, now};
  std::string in;
  for (const auto& v : values) {
    in += in.empty() ? "?" : ", ?";
    params.emplace_back(v);
  }
  CF_ASSIGN_OR_RETURN(auto rows,
                      tx.Query(fmt::format("SELECT DISTINCT a.identifier_value, a.wildcard FROM acme_orders o "
                                           "JOIN acme_authzs a ON a.order_id = o.id WHERE o.account_id = ? "
                                           "AND a.status = 'valid' AND a.expires_at > ? "
                                           "AND a.identifier_value IN ({})",
                                           in),
                               params));
  for (const Row& r : rows) out.insert((r.Int(1) != 0 ? "*." : "") + r.Text(0));
  return out;
}

Result<bool> AcmeOrderReplaces(Tx& tx, std::string_view cert_id, int64_t now) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT id FROM acme_orders WHERE replaces = ? AND status <> 'invalid' "
                                            "AND NOT (status IN ('pending', 'ready') AND expires_at <= ?)",
                                            {std::string(cert_id), now}));
  return row.has_value();
}

Result<std::vector<int64_t>> ListAcmeOrderIds(Tx& tx, int64_t account_id, int64_t after_id, int limit) {
  CF_ASSIGN_OR_RETURN(auto rows, tx.Query("SELECT id FROM acme_orders WHERE account_id = ? AND id > ? ORDER BY id "
                                          "LIMIT ?",
                                          {account_id, after_id, int64_t{limit}}));
  std::vector<int64_t> out;
  out.reserve(rows.size());
  for (const Row& r : rows) out.push_back(r.Int(0));
  return out;
}

Result<bool> SetAcmeOrderStatus(Tx& tx, int64_t id, std::string_view from, std::string_view to,
                                const std::optional<std::string>& error, const std::optional<std::string>& serial,
                                int64_t now) {
  CF_ASSIGN_OR_RETURN(
      int64_t n, tx.Exec("UPDATE acme_orders SET status = ?, error = COALESCE(?, error), serial = "
                         "COALESCE(?, serial), updated_at = ? WHERE id = ? AND status = ?",
                         {std::string(to), OptionalValue(error), OptionalValue(serial), now, id, std::string(from)}));
  return n == 1;
}

Result<std::vector<std::pair<std::string, int64_t>>> CountAcmeOrders(Tx& tx) {
  CF_ASSIGN_OR_RETURN(auto rows,
                      tx.Query("SELECT status, COUNT(*) FROM acme_orders GROUP BY status ORDER BY status", {}));
  std::vector<std::pair<std::string, int64_t>> out;
  out.reserve(rows.size());
  for (const Row& r : rows) out.emplace_back(r.Text(0), r.Int(1));
  return out;
}

Result<std::optional<AcmeAuthzRecord>> FindAcmeAuthz(Tx& tx, int64_t id) {
  CF_ASSIGN_OR_RETURN(auto row,
                      tx.QueryOne(fmt::format("SELECT {} FROM acme_authzs WHERE id = ?", kAuthzColumns), {id}));
  if (!row) return std::optional<AcmeAuthzRecord>();
  return std::optional<AcmeAuthzRecord>(AuthzFromRow(*row));
}

Result<std::vector<AcmeAuthzRecord>> AcmeAuthzsOfOrder(Tx& tx, int64_t order_id) {
  CF_ASSIGN_OR_RETURN(
      auto rows,
      tx.Query(fmt::format("SELECT {} FROM acme_authzs WHERE order_id = ? ORDER BY id", kAuthzColumns), {order_id}));
  std::vector<AcmeAuthzRecord> out;
  out.reserve(rows.size());
  for (const Row& r : rows) out.push_back(AuthzFromRow(r));
  return out;
}

Result<bool> SetAcmeAuthzStatus(Tx& tx, int64_t id, std::string_view from, std::string_view to) {
  CF_ASSIGN_OR_RETURN(int64_t n, tx.Exec("UPDATE acme_authzs SET status = ? WHERE id = ? AND status = ?",
                                         {std::string(to), id, std::string(from)}));
  return n == 1;
}

Result<std::optional<AcmeChallengeRecord>> FindAcmeChallenge(Tx& tx, int64_t id) {
  CF_ASSIGN_OR_RETURN(auto row,
                      tx.QueryOne(fmt::format("SELECT {} FROM acme_challenges WHERE id = ?", kChallengeColumns), {id}));
  if (!row) return std::optional<AcmeChallengeRecord>();
  return std::optional<AcmeChallengeRecord>(ChallengeFromRow(*row));
}

Result<std::vector<AcmeChallengeRecord>> AcmeChallengesOfAuthz(Tx& tx, int64_t authz_id) {
  CF_ASSIGN_OR_RETURN(auto rows, tx.Query(fmt::format("SELECT {} FROM acme_challenges WHERE authz_id = ? ORDER BY id",
                                                      kChallengeColumns),
                                          {authz_id}));
  std::vector<AcmeChallengeRecord> out;
  out.reserve(rows.size());
  for (const Row& r : rows) out.push_back(ChallengeFromRow(r));
  return out;
}

Result<bool> SetAcmeChallengeStatus(Tx& tx, int64_t id, std::string_view from, std::string_view to,
                                    std::optional<int64_t> validated_at, const std::optional<std::string>& error) {
  CF_ASSIGN_OR_RETURN(
      int64_t n, tx.Exec("UPDATE acme_challenges SET status = ?, validated_at = COALESCE(?, validated_at), "
                         "error = COALESCE(?, error) WHERE id = ? AND status = ?",
                         {std::string(to), OptionalValue(validated_at), OptionalValue(error), id, std::string(from)}));
  return n == 1;
}

Result<std::vector<std::pair<int64_t, std::string>>> AcmeChallengesOfDeadJobs(Tx& tx, std::string_view job_kind) {
  // Dead jobs are few (the index on kind and state finds them); each names its challenge.
  CF_ASSIGN_OR_RETURN(Rows rows,
                      tx.Query("SELECT c.id, COALESCE(j.last_error, '') FROM jobs j JOIN acme_challenges c ON c.id = "
                               "CAST(substr(j.dedupe_key, length(j.kind) + 2) AS BIGINT) WHERE j.kind = ? AND "
                               "j.state = 'dead' AND j.dedupe_key LIKE j.kind || ':%' AND c.status = 'processing' "
                               "ORDER BY c.id",
                               {std::string(job_kind)}));
  std::vector<std::pair<int64_t, std::string>> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.emplace_back(r.Int(0), r.Text(1));
  return out;
}

namespace {

constexpr std::string_view kProfileColumns =
    "name, ca, dns_suffixes, ip_ranges, validity_days, key_types, eab_required, created_at, updated_at";

AcmeProfileRecord ProfileFromRow(const Row& r) {
  return AcmeProfileRecord{r.Text(0), r.Text(1),     r.Text(2), r.Text(3), r.Int(4),
                           r.Text(5), r.Int(6) != 0, r.Int(7),  r.Int(8)};
}

}  // namespace

Result<bool> PutAcmeProfile(Tx& tx, const AcmeProfileRecord& p) {
  CF_ASSIGN_OR_RETURN(int64_t n, tx.Exec("UPDATE acme_profiles SET ca = ?, dns_suffixes = ?, ip_ranges = ?, "
                                         "validity_days = ?, key_types = ?, eab_required = ?, updated_at = ? "
                                         "WHERE name = ?",
                                         {p.ca, p.dns_suffixes, p.ip_ranges, p.validity_days, p.key_types,
                                          int64_t{p.eab_required ? 1 : 0}, p.updated_at, p.name}));
  if (n == 1) return false;
  CF_RETURN_IF_ERROR(
      tx.Exec(fmt::format("INSERT INTO acme_profiles ({}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", kProfileColumns),
              {p.name, p.ca, p.dns_suffixes, p.ip_ranges, p.validity_days, p.key_types, int64_t{p.eab_required ? 1 : 0},
               p.created_at, p.updated_at}));
  return true;
}

Result<std::optional<AcmeProfileRecord>> FindAcmeProfile(Tx& tx, std::string_view name) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne(fmt::format("SELECT {} FROM acme_profiles WHERE name = ?", kProfileColumns),
                                            {std::string(name)}));
  if (!row) return std::optional<AcmeProfileRecord>();
  return std::optional<AcmeProfileRecord>(ProfileFromRow(*row));
}

Result<std::vector<AcmeProfileRecord>> ListAcmeProfiles(Tx& tx) {
  CF_ASSIGN_OR_RETURN(auto rows,
                      tx.Query(fmt::format("SELECT {} FROM acme_profiles ORDER BY name", kProfileColumns), {}));
  std::vector<AcmeProfileRecord> out;
  out.reserve(rows.size());
  for (const Row& r : rows) out.push_back(ProfileFromRow(r));
  return out;
}

Result<bool> DeleteAcmeProfile(Tx& tx, std::string_view name) {
  CF_ASSIGN_OR_RETURN(int64_t n, tx.Exec("DELETE FROM acme_profiles WHERE name = ?", {std::string(name)}));
  return n == 1;
}

Result<void> InsertAcmeEab(Tx& tx, const AcmeEabRecord& e) {
  CF_RETURN_IF_ERROR(
      tx.Exec("INSERT INTO acme_eab (kid, profile, key_sealed, created_by, created_at) VALUES (?, ?, ?, "
              "?, ?)",
              {e.kid, e.profile, e.key_sealed, e.created_by, e.created_at}));
  return Ok();
}

Result<std::optional<AcmeEabRecord>> FindAcmeEab(Tx& tx, std::string_view kid) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT kid, profile, key_sealed, created_by, created_at, account_id, "
                                            "used_at FROM acme_eab WHERE kid = ?",
                                            {std::string(kid)}));
  if (!row) return std::optional<AcmeEabRecord>();
  const Row& r = *row;
  return std::optional<AcmeEabRecord>(
      AcmeEabRecord{r.Text(0), r.Text(1), r.Text(2), r.Text(3), r.Int(4), r.OptInt(5), r.OptInt(6)});
}

Result<bool> UseAcmeEab(Tx& tx, std::string_view kid, int64_t account_id, int64_t now) {
  CF_ASSIGN_OR_RETURN(int64_t n, tx.Exec("UPDATE acme_eab SET account_id = ?, used_at = ? WHERE kid = ? AND account_id "
                                         "IS NULL",
                                         {account_id, now, std::string(kid)}));
  return n == 1;
}

}  // namespace certfleet::store
