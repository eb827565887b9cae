#include "store/hosts_repo.h"

#include <limits>

#include "store/certificates_repo.h"

namespace certfleet::store {
namespace {

constexpr std::string_view kColumns =
    "host_id, cert_path, key_path, cacert_path, sans, key_type, profile, threshold_days, reload_command, status, "
    "serial, not_after, renew_at, last_run, last_error, created_at, updated_at";

Result<HostRecord> FromRow(const Row& r) {
  HostRecord h;
  h.host_id = r.Text(0);
  h.cert_path = r.OptText(1);
  h.key_path = r.OptText(2);
  h.cacert_path = r.OptText(3);
  h.sans = r.Text(4);
  h.key_type = r.OptText(5);
  h.profile = r.OptText(6);
  h.threshold_days = r.OptInt(7);
  h.reload_command = r.OptText(8);
  CF_ASSIGN_OR_RETURN(h.status, r.Enum<HostStatus>(9, "hosts.status", kHostStatusNames));
  h.serial = r.OptText(10);
  h.not_after = r.OptInt(11);
  h.renew_at = r.Int(12);
  h.last_run = r.OptInt(13);
  h.last_error = r.OptText(14);
  h.created_at = r.Int(15);
  h.updated_at = r.Int(16);
  return h;
}

// Every column but host_id and created_at, in kColumns order.
Params Settings(const HostRecord& h) {
  return {OptionalValue(h.cert_path),
          OptionalValue(h.key_path),
          OptionalValue(h.cacert_path),
          h.sans,
          OptionalValue(h.key_type),
          OptionalValue(h.profile),
          OptionalValue(h.threshold_days),
          OptionalValue(h.reload_command),
          std::string(HostStatusName(h.status)),
          OptionalValue(h.serial),
          OptionalValue(h.not_after),
          h.renew_at,
          OptionalValue(h.last_run),
          OptionalValue(h.last_error),
          h.updated_at};
}

Result<std::vector<HostRecord>> Hosts(Tx& tx, const std::string& where, const Params& params) {
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT " + std::string(kColumns) + " FROM hosts " + where, params));
  std::vector<HostRecord> out;
  out.reserve(rows.size());
  for (const auto& r : rows) {
    CF_ASSIGN_OR_RETURN(HostRecord h, FromRow(r));
    out.push_back(std::move(h));
  }
  return out;
}

}  // namespace

Result<void> InsertHost(Tx& tx, const HostRecord& h) {
  Params params{h.host_id};
  for (auto& v : Settings(h)) params.push_back(std::move(v));
  params.emplace_back(h.created_at);
  CF_RETURN_IF_ERROR(
      tx.Exec("INSERT INTO hosts (host_id, cert_path, key_path, cacert_path, sans, key_type, profile, "
              "threshold_days, reload_command, status, serial, not_after, renew_at, last_run, "
              "last_error, updated_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
              "?, ?)",
              params));
  return Ok();
}

Result<std::optional<HostRecord>> FindHost(Tx& tx, std::string_view host_id) {
  CF_ASSIGN_OR_RETURN(auto hosts, Hosts(tx, "WHERE host_id = ?", {std::string(host_id)}));
  if (hosts.empty()) return std::optional<HostRecord>();
  return std::optional<HostRecord>(std::move(hosts.front()));
}

Result<bool> UpdateHost(Tx& tx, const HostRecord& h) {
  Params params = Settings(h);
  params.emplace_back(h.host_id);
  CF_ASSIGN_OR_RETURN(int64_t changed,
                      tx.Exec("UPDATE hosts SET cert_path = ?, key_path = ?, cacert_path = ?, sans = ?, key_type = ?, "
                              "profile = ?, threshold_days = ?, reload_command = ?, status = ?, serial = ?, "
                              "not_after = ?, renew_at = ?, last_run = ?, last_error = ?, updated_at = ? WHERE "
                              "host_id = ?",
                              params));
  return changed > 0;
}

Result<bool> DeleteHost(Tx& tx, std::string_view host_id) {
  CF_RETURN_IF_ERROR(tx.Exec("DELETE FROM host_tokens WHERE host_id = ?", {std::string(host_id)}));
  CF_ASSIGN_OR_RETURN(int64_t deleted, tx.Exec("DELETE FROM hosts WHERE host_id = ?", {std::string(host_id)}));
  return deleted > 0;
}

Result<std::vector<HostRecord>> ListHosts(Tx& tx, const HostFilter& filter) {
  std::string where = "WHERE host_id > ?";
  Params params{filter.after.value_or("")};
  if (filter.status) {
    where += " AND status = ?";
    params.emplace_back(std::string(HostStatusName(*filter.status)));
  }
  if (filter.due_before) {
    where += " AND renew_at <= ?";
    params.emplace_back(*filter.due_before);
  }
  where += " ORDER BY host_id LIMIT ?";
  params.emplace_back(int64_t{filter.limit});
  return Hosts(tx, where, params);
}

Result<std::vector<HostRecord>> DueHosts(Tx& tx, int64_t now, int limit) {
  return Hosts(tx, "WHERE renew_at <= ? AND status <> ? ORDER BY renew_at, host_id LIMIT ?",
               {now, std::string(HostStatusName(HostStatus::kRevoked)), int64_t{limit}});
}

Result<std::map<std::string, bool>> HostsHaveCertificate(Tx& tx, const std::vector<std::string>& host_ids) {
  std::map<std::string, bool> out;
  if (host_ids.empty()) return out;
  Params params;
  const std::string in = InValues(tx, "host_id", host_ids, params);
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT host_id, serial IS NOT NULL FROM hosts WHERE " + in, params));
  for (const auto& r : rows) out[r.Text(0)] = r.Text(1) == "1" || r.Text(1) == "t";
  return out;
}

Result<void> InsertHostToken(Tx& tx, std::string_view token_sha256, std::string_view host_id, int64_t expires_at,
                             int64_t now) {
  CF_RETURN_IF_ERROR(tx.Exec(
      "INSERT INTO host_tokens (token_sha256, host_id, expires_at, used_at, created_at) VALUES (?, ?, ?, NULL, ?)",
      {std::string(token_sha256), std::string(host_id), expires_at, now}));
  return Ok();
}

Result<std::optional<std::string>> HostTokenOwner(Tx& tx, std::string_view token_sha256, int64_t now) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT host_id FROM host_tokens WHERE token_sha256 = ? AND used_at IS "
                                            "NULL AND expires_at > ?",
                                            {std::string(token_sha256), now}));
  if (!row) return std::optional<std::string>();
  return std::optional<std::string>(row->Text(0));
}

Result<std::optional<std::string>> SpentHostTokenOwner(Tx& tx, std::string_view token_sha256) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT host_id FROM host_tokens WHERE token_sha256 = ? AND used_at IS "
                                            "NOT NULL",
                                            {std::string(token_sha256)}));
  if (!row) return std::optional<std::string>();
  return std::optional<std::string>(row->Text(0));
}

Result<std::optional<std::string>> SpendHostToken(Tx& tx, std::string_view token_sha256, int64_t now) {
  // One statement, so that two enrollments with the same token cannot both spend it.
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("UPDATE host_tokens SET used_at = ? WHERE token_sha256 = ? AND used_at IS "
                                            "NULL AND expires_at > ? RETURNING host_id",
                                            {now, std::string(token_sha256), now}));
  if (!row) return std::optional<std::string>();
  return std::optional<std::string>(row->Text(0));
}

Result<std::optional<std::string>> GetSetting(Tx& tx, std::string_view name) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT value FROM settings WHERE name = ?", {std::string(name)}));
  if (!row) return std::optional<std::string>();
  return std::optional<std::string>(row->Text(0));
}

Result<void> PutSetting(Tx& tx, std::string_view name, std::string_view value, std::string_view actor, int64_t now) {
  CF_RETURN_IF_ERROR(
      tx.Exec("INSERT INTO settings (name, value, updated_by, updated_at) VALUES (?, ?, ?, ?) ON "
              "CONFLICT (name) DO UPDATE SET value = excluded.value, updated_by = excluded.updated_by, "
              "updated_at = excluded.updated_at",
              {std::string(name), std::string(value), std::string(actor), now}));
  return Ok();
}

Result<std::vector<std::string>> HostCertificateIssuers(Tx& tx) {
  CF_RETURN_IF_ERROR(WriteGatheredCertificates(tx));
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT DISTINCT c.parent_fqdn FROM hosts h JOIN certificates c ON c.serial "
                                          "= h.serial WHERE c.status = 'active' ORDER BY c.parent_fqdn"));
  std::vector<std::string> out;
  for (const auto& r : rows) out.push_back(r.Text(0));
  return out;
}

namespace {

constexpr std::string_view kCredentialColumns =
    "id, token_sha256, patterns, max_uses, used, expires_at, revoked_at, last_used_at, created_by, created_at";

Result<std::vector<EnrollmentCredential>> Credentials(Tx& tx, const std::string& where, const Params& params) {
  CF_ASSIGN_OR_RETURN(
      Rows rows,
      tx.Query("SELECT " + std::string(kCredentialColumns) + " FROM enrollment_credentials " + where, params));
  std::vector<EnrollmentCredential> out;
  out.reserve(rows.size());
  for (const auto& r : rows) {
    out.push_back(
        {r.Int(0), r.Text(1), r.Text(2), r.Int(3), r.Int(4), r.Int(5), r.OptInt(6), r.OptInt(7), r.Text(8), r.Int(9)});
  }
  return out;
}

Result<std::optional<EnrollmentCredential>> OneCredential(Tx& tx, const std::string& where, const Params& params) {
  CF_ASSIGN_OR_RETURN(auto found, Credentials(tx, where, params));
  if (found.empty()) return std::optional<EnrollmentCredential>();
  return std::optional<EnrollmentCredential>(std::move(found.front()));
}

}  // namespace

Result<int64_t> InsertEnrollmentCredential(Tx& tx, const EnrollmentCredential& c) {
  CF_ASSIGN_OR_RETURN(auto row,
                      tx.QueryOne("INSERT INTO enrollment_credentials (token_sha256, patterns, max_uses, "
                                  "used, expires_at, revoked_at, last_used_at, created_by, created_at) "
                                  "VALUES (?, ?, ?, 0, ?, NULL, NULL, ?, ?) RETURNING id",
                                  {c.token_sha256, c.patterns, c.max_uses, c.expires_at, c.created_by, c.created_at}));
  return row->Int(0);
}

Result<std::optional<EnrollmentCredential>> FindEnrollmentCredential(Tx& tx, std::string_view token_sha256) {
  return OneCredential(tx, "WHERE token_sha256 = ?", {std::string(token_sha256)});
}

Result<std::optional<EnrollmentCredential>> GetEnrollmentCredential(Tx& tx, int64_t id) {
  return OneCredential(tx, "WHERE id = ?", {id});
}

Result<std::vector<EnrollmentCredential>> ListEnrollmentCredentials(Tx& tx, std::optional<int64_t> before_id,
                                                                    int limit) {
  return Credentials(tx, "WHERE id < ? ORDER BY id DESC LIMIT ?",
                     {before_id.value_or(std::numeric_limits<int64_t>::max()), int64_t{limit}});
}

Result<std::optional<int64_t>> UseEnrollmentCredential(Tx& tx, int64_t id, int64_t now) {
  // One statement, so that concurrent enrollments never take more than max_uses.
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("UPDATE enrollment_credentials SET used = used + 1, last_used_at = ? "
                                            "WHERE id = ? AND revoked_at IS NULL AND expires_at > ? AND used < "
                                            "max_uses RETURNING used",
                                            {now, id, now}));
  if (!row) return std::optional<int64_t>();
  return std::optional<int64_t>(row->Int(0));
}

Result<bool> RevokeEnrollmentCredential(Tx& tx, int64_t id, int64_t now) {
  CF_ASSIGN_OR_RETURN(
      int64_t changed,
      tx.Exec("UPDATE enrollment_credentials SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", {now, id}));
  return changed > 0;
}

}  // namespace certfleet::store
