#include "store/registry_repo.h"

#include <fmt/format.h>

#include <map>
#include <set>

#include "store/certificates_repo.h"

namespace certfleet::store {
namespace {

constexpr std::string_view kObjectColumns = "kind, name, ref, body, created_at, updated_at";
constexpr std::string_view kLinkColumns = "kind, from_name, to_name, state, due_at, created_at";
constexpr Column kObjectTypes[] = {{"kind", "text"}, {"name", "text"},         {"ref", "text"},
                                   {"body", "text"}, {"created_at", "bigint"}, {"updated_at", "bigint"}};
constexpr Column kLinkTypes[] = {{"kind", "text"},  {"from_name", "text"}, {"to_name", "text"},
                                 {"state", "text"}, {"due_at", "bigint"},  {"created_at", "bigint"}};

RegistryObject ObjectFrom(const Row& r) {
  return RegistryObject{r.Text(0), r.Text(1), r.OptText(2), r.Text(3), r.Int(4), r.Int(5)};
}

RegistryLink LinkFrom(const Row& r) {
  return RegistryLink{r.Text(0), r.Text(1), r.Text(2), r.Text(3), r.OptInt(4), r.Int(5)};
}

Result<std::vector<RegistryLink>> Links(Tx& tx, std::string_view where, const Params& params) {
  CF_ASSIGN_OR_RETURN(
      Rows rows,
      tx.Query("SELECT " + std::string(kLinkColumns) + " FROM registry_links WHERE " + std::string(where), params));
  std::vector<RegistryLink> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back(LinkFrom(r));
  return out;
}

Params ObjectRow(const RegistryObject& o) {
  return {o.kind, o.name, OptionalValue(o.ref), o.body, o.created_at, o.updated_at};
}

std::vector<Params> LinkRows(const std::vector<RegistryLink>& links) {
  std::vector<Params> rows;
  rows.reserve(links.size());
  for (const auto& l : links)
    rows.push_back({l.kind, l.from_name, l.to_name, l.state, OptionalValue(l.due_at), l.created_at});
  return rows;
}

}  // namespace

Result<void> InsertObject(Tx& tx, const RegistryObject& o) {
  CF_RETURN_IF_ERROR(tx.Exec(
      "INSERT INTO registry_objects (" + std::string(kObjectColumns) + ") VALUES (?, ?, ?, ?, ?, ?)", ObjectRow(o)));
  return Ok();
}

Result<void> InsertObjectsIfMissing(Tx& tx, const std::vector<RegistryObject>& objects) {
  std::vector<Params> rows;
  rows.reserve(objects.size());
  for (const auto& o : objects) rows.push_back(ObjectRow(o));
  return InsertRows(tx, "registry_objects", kObjectTypes, rows, "ON CONFLICT (kind, name) DO NOTHING");
}

Result<void> PutThings(Tx& tx, const std::vector<RegistryObject>& things) {
  std::vector<Params> rows;
  rows.reserve(things.size());
  for (const auto& o : things) rows.push_back(ObjectRow(o));
  // A thing's ref is its type, which its body repeats.
  const std::string_view set_type =
      tx.postgres() ? "jsonb_set(registry_objects.body::jsonb, '{thing_type}', to_jsonb(excluded.ref))::text"
                    : "json_set(registry_objects.body, '$.thing_type', excluded.ref)";
  return InsertRows(
      tx, "registry_objects", kObjectTypes, rows,
      fmt::format("ON CONFLICT (kind, name) DO UPDATE SET ref = excluded.ref, body = {}, updated_at = "
                  "excluded.updated_at WHERE excluded.ref IS NOT NULL AND registry_objects.ref IS DISTINCT "
                  "FROM excluded.ref",
                  set_type));
}

Result<bool> UpdateObject(Tx& tx, const RegistryObject& o) {
  CF_ASSIGN_OR_RETURN(
      int64_t changed,
      tx.Exec("UPDATE registry_objects SET ref = ?, body = ?, updated_at = ? WHERE kind = ? AND name = ?",
              {OptionalValue(o.ref), o.body, o.updated_at, o.kind, o.name}));
  return changed > 0;
}

Result<std::optional<RegistryObject>> FindObject(Tx& tx, std::string_view kind, std::string_view name) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT " + std::string(kObjectColumns) +
                                                " FROM registry_objects WHERE kind = ? AND name = ?",
                                            {std::string(kind), std::string(name)}));
  if (!row) return std::optional<RegistryObject>();
  return std::optional<RegistryObject>(ObjectFrom(*row));
}

Result<bool> DeleteObject(Tx& tx, std::string_view kind, std::string_view name) {
  CF_ASSIGN_OR_RETURN(int64_t changed, tx.Exec("DELETE FROM registry_objects WHERE kind = ? AND name = ?",
                                               {std::string(kind), std::string(name)}));
  return changed > 0;
}

Result<std::vector<RegistryObject>> ListObjects(Tx& tx, const ObjectFilter& filter) {
  std::string sql = "SELECT " + std::string(kObjectColumns) + " FROM registry_objects WHERE kind = ?";
  Params params{filter.kind};
  if (filter.ref) {
    sql += " AND ref = ?";
    params.emplace_back(*filter.ref);
  }
  if (filter.after) {
    sql += " AND name > ?";
    params.emplace_back(*filter.after);
  }
  sql += " ORDER BY name LIMIT ?";
  params.emplace_back(int64_t{filter.limit});
  CF_ASSIGN_OR_RETURN(Rows rows, tx.Query(sql, params));
  std::vector<RegistryObject> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back(ObjectFrom(r));
  return out;
}

Result<void> PutLink(Tx& tx, const RegistryLink& link) { return PutLinks(tx, {link}); }

Result<void> PutLinks(Tx& tx, const std::vector<RegistryLink>& links) {
  return InsertRows(
      tx, "registry_links", kLinkTypes, LinkRows(links),
      "ON CONFLICT (kind, from_name, to_name) DO UPDATE SET state = excluded.state, due_at = excluded.due_at");
}

Result<void> AddLinksIfMissing(Tx& tx, const std::vector<RegistryLink>& links) {
  return InsertRows(tx, "registry_links", kLinkTypes, LinkRows(links),
                    "ON CONFLICT (kind, from_name, to_name) DO NOTHING");
}

Result<bool> DeleteLink(Tx& tx, std::string_view kind, std::string_view from_name, std::string_view to_name) {
  CF_ASSIGN_OR_RETURN(int64_t changed,
                      tx.Exec("DELETE FROM registry_links WHERE kind = ? AND from_name = ? AND to_name = ?",
                              {std::string(kind), std::string(from_name), std::string(to_name)}));
  return changed > 0;
}

Result<int64_t> RetireThingCertificates(Tx& tx, std::string_view thing) {
  return tx.Exec("UPDATE registry_links SET state = ? WHERE kind = ? AND from_name = ? AND state IN (?, ?)",
                 {std::string(kAttachmentRetired), std::string(kThingCertificate), std::string(thing),
                  std::string(kAttachmentActive), std::string(kAttachmentSuperseded)});
}

Result<void> EndLinkDue(Tx& tx, const RegistryLink& link, std::optional<std::string_view> state) {
  CF_RETURN_IF_ERROR(
      tx.Exec("UPDATE registry_links SET due_at = NULL, state = COALESCE(?, state) WHERE kind = ? AND from_name = ? "
              "AND to_name = ?",
              {state ? Value(std::string(*state)) : Value(nullptr), link.kind, link.from_name, link.to_name}));
  return Ok();
}

Result<int64_t> DeleteLinksFrom(Tx& tx, std::string_view kind, std::string_view from_name) {
  return tx.Exec("DELETE FROM registry_links WHERE kind = ? AND from_name = ?",
                 {std::string(kind), std::string(from_name)});
}

Result<int64_t> DeleteLinksTo(Tx& tx, std::string_view kind, std::string_view to_name) {
  return tx.Exec("DELETE FROM registry_links WHERE kind = ? AND to_name = ?",
                 {std::string(kind), std::string(to_name)});
}

Result<std::vector<RegistryLink>> LinksFrom(Tx& tx, std::string_view kind, std::string_view from_name,
                                            std::string_view after, int limit) {
  return Links(tx, "kind = ? AND from_name = ? AND to_name > ? ORDER BY to_name LIMIT ?",
               {std::string(kind), std::string(from_name), std::string(after), int64_t{limit}});
}

Result<std::vector<RegistryLink>> LinksTo(Tx& tx, std::string_view kind, std::string_view to_name, int limit) {
  return Links(tx, "kind = ? AND to_name = ? ORDER BY from_name LIMIT ?",
               {std::string(kind), std::string(to_name), int64_t{limit}});
}

Result<std::vector<RegistryLink>> LinksDue(Tx& tx, std::string_view kind, int64_t now, int limit) {
  return Links(tx, "kind = ? AND due_at <= ? ORDER BY due_at LIMIT ?", {std::string(kind), now, int64_t{limit}});
}

namespace {

// The replacing links as written: one replaced by a later one of the same transaction is
// replaced at once.
std::vector<RegistryLink> ReplacingLinks(const std::vector<LinkReplacement>& replacing) {
  std::vector<RegistryLink> out;
  std::map<std::pair<std::string, std::string>, size_t> latest;  // by (kind, from_name): in out
  for (const auto& r : replacing) {
    const auto key = std::make_pair(r.link.kind, r.link.from_name);
    if (auto it = latest.find(key); it != latest.end()) {
      out[it->second].state = r.replaced_state;
      out[it->second].due_at = r.replaced_due_at;
    }
    latest[key] = out.size();
    out.push_back(r.link);
  }
  return out;
}

Result<void> WriteProvisioning(Tx& tx, std::vector<ProvisioningWrites>& writes) {
  if (writes.empty()) return Ok();
  std::vector<Params> objects;
  std::vector<RegistryLink> links;
  std::vector<LinkReplacement> replacing;
  for (auto& w : writes) {
    for (const auto& o : w.objects) objects.push_back(ObjectRow(o));
    links.insert(links.end(), w.links.begin(), w.links.end());
    replacing.push_back(std::move(w.replacing));
  }
  CF_RETURN_IF_ERROR(InsertRows(tx, "registry_objects", kObjectTypes, objects, "ON CONFLICT (kind, name) DO NOTHING"));
  // The links replaced, a statement per from_name: one for them all (UPDATE … FROM unnest)
  // would be planned once per connection, while the table is small, as a scan of all of it.
  std::set<std::pair<std::string, std::string>> replaced;
  for (const auto& r : replacing) {
    if (!replaced.emplace(r.link.kind, r.link.from_name).second) continue;
    CF_RETURN_IF_ERROR(tx.ExecDeferred(
        "UPDATE registry_links SET state = ?, due_at = ? WHERE kind = ? AND from_name = ? AND state = ?",
        {r.replaced_state, OptionalValue(r.replaced_due_at), r.link.kind, r.link.from_name, r.link.state}));
  }
  CF_RETURN_IF_ERROR(PutLinks(tx, ReplacingLinks(replacing)));
  return AddLinksIfMissing(tx, links);
}

constexpr std::string_view kProvisioningGathering = "provisioning";

}  // namespace

Result<void> GatherProvisioningWrites(Tx& tx, ProvisioningWrites writes) {
  tx.Gathered<ProvisioningWrites>(kProvisioningGathering, WriteProvisioning).push_back(std::move(writes));
  return Ok();
}

Result<void> FlushProvisioningWrites(Tx& tx) { return tx.FlushGathered(kProvisioningGathering); }

Result<RegistryCounts> CountRegistry(Tx& tx) {
  RegistryCounts out;
  CF_ASSIGN_OR_RETURN(Rows objects,
                      tx.Query("SELECT kind, COUNT(*) FROM registry_objects GROUP BY kind ORDER BY kind"));
  for (const auto& r : objects) out.objects.emplace_back(r.Text(0), r.Int(1));
  CF_RETURN_IF_ERROR(WriteGatheredCertificates(tx));
  CF_ASSIGN_OR_RETURN(
      Rows issued,
      tx.Query("SELECT c.status, COUNT(DISTINCT c.serial) FROM registry_links l JOIN certificates c ON c.serial = "
               "l.to_name WHERE l.kind = ? GROUP BY c.status ORDER BY c.status",
               {std::string(kThingCertificate)}));
  for (const auto& r : issued) out.certificates.push_back({"certfleet", r.Text(0), r.Int(1)});
  // A supplier's certificate is active while it is attached (see the registry's thing view).
  CF_ASSIGN_OR_RETURN(Rows imported, tx.Query("SELECT source, COUNT(*) FROM imported_certificates GROUP BY source "
                                              "ORDER BY source"));
  for (const auto& r : imported) out.certificates.push_back({r.Text(0), "active", r.Int(1)});
  return out;
}

}  // namespace certfleet::store
