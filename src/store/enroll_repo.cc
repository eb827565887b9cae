#include "store/enroll_repo.h"

#include <fmt/format.h>

namespace certfleet::store {
namespace {

constexpr std::string_view kProfileColumns =
    "label, template, auth, factory_anchors, key_type, approval, created_at, updated_at";

EnrollProfileRecord ProfileFromRow(const Row& r) {
  return EnrollProfileRecord{r.Text(0), r.Text(1), r.Text(2), r.Text(3), r.Text(4), r.Int(5) != 0, r.Int(6), r.Int(7)};
}

constexpr std::string_view kSecretColumns =
    "id, profile, device_id, batch, secret_sealed, expires_at, used_at, used_by, revoked_at, created_by, created_at";

EnrollSecretRecord SecretFromRow(const Row& r) {
  return EnrollSecretRecord{r.Text(0),   r.Text(1),    r.OptText(2), r.OptText(3), r.Text(4), r.Int(5),
                            r.OptInt(6), r.OptText(7), r.OptInt(8),  r.Text(9),    r.Int(10)};
}

constexpr std::string_view kRequestColumns =
    "id, profile, csr_sha256, device_id, csr_pem, state, serial, created_at, decided_at, decided_by, new_device, "
    "presented_serial";

EnrollRequestRecord RequestFromRow(const Row& r) {
  return EnrollRequestRecord{r.Int(0),     r.Text(1), r.Text(2),   r.Text(3),    r.Text(4),      r.Text(5),
                             r.OptText(6), r.Int(7),  r.OptInt(8), r.OptText(9), r.Int(10) != 0, r.OptText(11)};
}

Result<std::optional<EnrollRequestRecord>> OneRequest(Tx& tx, std::string_view where, const Params& params) {
  CF_ASSIGN_OR_RETURN(
      auto row, tx.QueryOne(fmt::format("SELECT {} FROM enroll_requests WHERE {}", kRequestColumns, where), params));
  if (!row) return std::optional<EnrollRequestRecord>();
  return std::optional<EnrollRequestRecord>(RequestFromRow(*row));
}

}  // namespace

Result<bool> PutEnrollProfile(Tx& tx, const EnrollProfileRecord& p) {
  const int64_t approval = p.approval ? 1 : 0;
  CF_ASSIGN_OR_RETURN(
      int64_t n, tx.Exec("UPDATE enroll_profiles SET template = ?, auth = ?, factory_anchors = ?, "
                         "key_type = ?, approval = ?, updated_at = ? WHERE label = ?",
                         {p.template_name, p.auth, p.factory_anchors, p.key_type, approval, p.updated_at, p.label}));
  if (n == 1) return false;
  CF_RETURN_IF_ERROR(
      tx.Exec(fmt::format("INSERT INTO enroll_profiles ({}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", kProfileColumns),
              {p.label, p.template_name, p.auth, p.factory_anchors, p.key_type, approval, p.created_at, p.updated_at}));
  return true;
}

Result<std::optional<EnrollProfileRecord>> FindEnrollProfile(Tx& tx, std::string_view label) {
  CF_ASSIGN_OR_RETURN(auto row,
                      tx.QueryOne(fmt::format("SELECT {} FROM enroll_profiles WHERE label = ?", kProfileColumns),
                                  {std::string(label)}));
  if (!row) return std::optional<EnrollProfileRecord>();
  return std::optional<EnrollProfileRecord>(ProfileFromRow(*row));
}

Result<std::vector<EnrollProfileRecord>> ListEnrollProfiles(Tx& tx) {
  CF_ASSIGN_OR_RETURN(auto rows,
                      tx.Query(fmt::format("SELECT {} FROM enroll_profiles ORDER BY label", kProfileColumns), {}));
  std::vector<EnrollProfileRecord> out;
  out.reserve(rows.size());
  for (const Row& r : rows) out.push_back(ProfileFromRow(r));
  return out;
}

Result<bool> DeleteEnrollProfile(Tx& tx, std::string_view label) {
  CF_ASSIGN_OR_RETURN(int64_t n, tx.Exec("DELETE FROM enroll_profiles WHERE label = ?", {std::string(label)}));
  return n == 1;
}

Result<void> InsertEnrollSecret(Tx& tx, const EnrollSecretRecord& s) {
  return tx.ExecDeferred(
      "INSERT INTO enroll_secrets (id, profile, device_id, batch, secret_sealed, expires_at, created_by, created_at) "
      "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
      {s.id, s.profile, OptionalValue(s.device_id), OptionalValue(s.batch), s.secret_sealed, s.expires_at, s.created_by,
       s.created_at});
}

Result<std::optional<EnrollSecretRecord>> FindEnrollSecret(Tx& tx, std::string_view id) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne(fmt::format("SELECT {} FROM enroll_secrets WHERE id = ?", kSecretColumns),
                                            {std::string(id)}));
  if (!row) return std::optional<EnrollSecretRecord>();
  return std::optional<EnrollSecretRecord>(SecretFromRow(*row));
}

Result<bool> UseEnrollSecret(Tx& tx, std::string_view id, std::string_view device_id, int64_t now) {
  CF_ASSIGN_OR_RETURN(int64_t n, tx.Exec("UPDATE enroll_secrets SET used_at = ?, used_by = ? WHERE id = ? AND used_at "
                                         "IS NULL AND revoked_at IS NULL AND expires_at > ?",
                                         {now, std::string(device_id), std::string(id), now}));
  return n == 1;
}

Result<bool> RevokeEnrollSecret(Tx& tx, std::string_view id, int64_t now) {
  CF_ASSIGN_OR_RETURN(int64_t n, tx.Exec("UPDATE enroll_secrets SET revoked_at = ? WHERE id = ? AND used_at IS NULL "
                                         "AND revoked_at IS NULL",
                                         {now, std::string(id)}));
  return n == 1;
}

Result<int64_t> RevokeEnrollSecretsOf(Tx& tx, std::string_view profile, int64_t now) {
  return tx.Exec(
      "UPDATE enroll_secrets SET revoked_at = ? WHERE profile = ? AND used_at IS NULL AND revoked_at IS NULL",
      {now, std::string(profile)});
}

Result<std::vector<EnrollSecretRecord>> ListEnrollSecrets(Tx& tx, const std::optional<std::string>& profile,
                                                          std::string_view after, int limit) {
  std::string where = "id > ?";
  Params params{std::string(after)};
  if (profile) {
    where = "profile = ? AND " + where;
    params.insert(params.begin(), *profile);
  }
  params.emplace_back(int64_t{limit});
  CF_ASSIGN_OR_RETURN(auto rows, tx.Query(fmt::format("SELECT {} FROM enroll_secrets WHERE {} ORDER BY id LIMIT ?",
                                                      kSecretColumns, where),
                                          params));
  std::vector<EnrollSecretRecord> out;
  out.reserve(rows.size());
  for (const Row& r : rows) out.push_back(SecretFromRow(r));
  return out;
}

Result<int64_t> InsertEnrollRequest(Tx& tx, const EnrollRequestRecord& r) {
  return InsertReturningId(tx,
                           "INSERT INTO enroll_requests (profile, csr_sha256, device_id, csr_pem, state, created_at, "
                           "new_device, presented_serial) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                           {r.profile, r.csr_sha256, r.device_id, r.csr_pem, r.state, r.created_at,
                            int64_t{r.new_device ? 1 : 0}, OptionalValue(r.presented_serial)});
}

Result<std::optional<EnrollRequestRecord>> FindEnrollRequest(Tx& tx, int64_t id) {
  return OneRequest(tx, "id = ?", {id});
}

Result<std::optional<int64_t>> PendingEnrollRequestOf(Tx& tx, std::string_view device_id) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT id FROM enroll_requests WHERE device_id = ? AND state = 'pending' "
                                            "LIMIT 1",
                                            {std::string(device_id)}));
  if (!row) return std::optional<int64_t>();
  return std::optional<int64_t>(row->Int(0));
}

Result<std::optional<EnrollRequestRecord>> FindEnrollRequestByCsr(Tx& tx, std::string_view profile,
                                                                  std::string_view csr_sha256) {
  return OneRequest(tx, "profile = ? AND csr_sha256 = ?", {std::string(profile), std::string(csr_sha256)});
}

Result<bool> SetEnrollRequestState(Tx& tx, int64_t id, std::string_view from, std::string_view to,
                                   const std::optional<std::string>& decided_by,
                                   const std::optional<std::string>& serial, int64_t now) {
  CF_ASSIGN_OR_RETURN(
      int64_t n,
      tx.Exec("UPDATE enroll_requests SET state = ?, decided_at = COALESCE(?, decided_at), decided_by = COALESCE(?, "
              "decided_by), serial = COALESCE(?, serial) WHERE id = ? AND state = ?",
              {std::string(to), decided_by ? Value(now) : Value(nullptr), OptionalValue(decided_by),
               OptionalValue(serial), id, std::string(from)}));
  return n == 1;
}

Result<std::vector<EnrollRequestRecord>> ListEnrollRequests(Tx& tx, const std::optional<std::string>& state,
                                                            std::optional<int64_t> before_id, int limit) {
  std::string where = "id < ?";
  Params params{before_id.value_or(INT64_MAX)};
  if (state) {
    where += " AND state = ?";
    params.emplace_back(*state);
  }
  params.emplace_back(int64_t{limit});
  CF_ASSIGN_OR_RETURN(auto rows, tx.Query(fmt::format("SELECT {} FROM enroll_requests WHERE {} ORDER BY id DESC "
                                                      "LIMIT ?",
                                                      kRequestColumns, where),
                                          params));
  std::vector<EnrollRequestRecord> out;
  out.reserve(rows.size());
  for (const Row& r : rows) out.push_back(RequestFromRow(r));
  return out;
}

Result<bool> BeginCmpTransaction(Tx& tx, std::string_view transaction_id, int64_t now, int64_t forget_before) {
  CF_RETURN_IF_ERROR(
      tx.Exec("DELETE FROM cmp_transactions WHERE created_at < ? AND awaiting_serial IS NULL", {forget_before}));
  CF_ASSIGN_OR_RETURN(int64_t n, tx.Exec("INSERT INTO cmp_transactions (transaction_id, created_at) VALUES (?, ?) ON "
                                         "CONFLICT (transaction_id) DO NOTHING",
                                         {std::string(transaction_id), now}));
  return n == 1;
}

Result<void> AwaitCmpConfirmation(Tx& tx, std::string_view transaction_id, std::string_view serial,
                                  int64_t confirm_by) {
  CF_ASSIGN_OR_RETURN(int64_t n, tx.Exec("UPDATE cmp_transactions SET awaiting_serial = ?, confirm_by = ? WHERE "
                                         "transaction_id = ?",
                                         {std::string(serial), confirm_by, std::string(transaction_id)}));
  if (n != 1) return MakeError(ErrorCode::kNotFound, "no such CMP transaction");
  return Ok();
}

Result<bool> EndCmpConfirmation(Tx& tx, std::string_view serial) {
  CF_ASSIGN_OR_RETURN(int64_t n, tx.Exec("UPDATE cmp_transactions SET awaiting_serial = NULL, confirm_by = NULL "
                                         "WHERE awaiting_serial = ?",
                                         {std::string(serial)}));
  return n > 0;
}

Result<std::vector<UnconfirmedCmpCertificate>> UnconfirmedCmpCertificates(Tx& tx, int64_t now, int limit) {
  CF_ASSIGN_OR_RETURN(auto rows, tx.Query("SELECT transaction_id, awaiting_serial, confirm_by FROM cmp_transactions "
                                          "WHERE awaiting_serial IS NOT NULL AND confirm_by < ? ORDER BY confirm_by "
                                          "LIMIT ?",
                                          {now, int64_t{limit}}));
  std::vector<UnconfirmedCmpCertificate> out;
  out.reserve(rows.size());
  for (const Row& r : rows) out.push_back({r.Text(0), r.Text(1), r.Int(2)});
  return out;
}

}  // namespace certfleet::store
