#include "store/ca_keys_repo.h"

namespace certfleet::store {

Result<void> InsertCaKey(Tx& tx, std::string_view ref, std::string_view key_sealed, int64_t now) {
  CF_RETURN_IF_ERROR(tx.Exec("INSERT INTO ca_keys (ref, key_sealed, created_at) VALUES (?, ?, ?)",
                             {std::string(ref), std::string(key_sealed), now}));
  return Ok();
}

Result<std::optional<std::string>> FindCaKey(Tx& tx, std::string_view ref) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT key_sealed FROM ca_keys WHERE ref = ?", {std::string(ref)}));
  if (!row) return std::optional<std::string>();
  return std::optional<std::string>(row->Text(0));
}

Result<void> DeleteCaKey(Tx& tx, std::string_view ref) {
  CF_RETURN_IF_ERROR(tx.Exec("DELETE FROM ca_keys WHERE ref = ?", {std::string(ref)}));
  return Ok();
}

Result<std::vector<std::pair<std::string, std::string>>> CaKeyRefs(Tx& tx, std::string_view prefix) {
  CF_ASSIGN_OR_RETURN(auto rows, tx.Query("SELECT fqdn, key_ref FROM cas WHERE key_ref LIKE ? ORDER BY fqdn",
                                          {std::string(prefix) + "%"}));
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(rows.size());
  for (const Row& r : rows) out.emplace_back(r.Text(0), r.Text(1));
  return out;
}

Result<bool> MoveCaKeyRef(Tx& tx, std::string_view fqdn, std::string_view from, std::string_view to) {
  CF_ASSIGN_OR_RETURN(int64_t n, tx.Exec("UPDATE cas SET key_ref = ? WHERE fqdn = ? AND key_ref = ?",
                                         {std::string(to), std::string(fqdn), std::string(from)}));
  return n == 1;
}

}  // namespace certfleet::store
