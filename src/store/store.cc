#include "store/store.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "core/crypto.h"
#include "store/postgres/pg_store.h"
#include "store/sqlite/sqlite_store.h"

namespace certfleet::store {

const std::string& Row::Text(size_t i) const {
  static const std::string kEmpty;
  const auto& c = cells_.at(i);
  return c ? *c : kEmpty;
}

int64_t Row::Int(size_t i) const { return OptInt(i).value_or(0); }

std::optional<int64_t> Row::OptInt(size_t i) const {
  const auto& c = cells_.at(i);
  if (!c) return std::nullopt;
  int64_t v = 0;
  std::from_chars(c->data(), c->data() + c->size(), v);
  return v;
}

Result<void> Tx::WriteGathered(bool last_too) {
  for (const bool last : {false, true}) {
    if (last && !last_too) break;
    for (auto& g : gathered_) {
      if (g.last == last) {
        CF_RETURN_IF_ERROR(g.write(*this));
        g.truncate(0);
      }
    }
  }
  if (last_too) gathered_.clear();
  return Ok();
}

Result<void> Tx::FlushAll(bool last_too, bool answer_last) {
  const bool writes_last =
      last_too && std::any_of(gathered_.begin(), gathered_.end(), [](const auto& g) { return g.last && g.size() > 0; });
  CF_RETURN_IF_ERROR(WriteGathered(last_too));
  if (writes_last && !answer_last) return Ok();
  return Flush();
}

Result<void> Tx::FlushGathered(std::string_view key) {
  for (auto& g : gathered_) {
    if (g.key == key) {
      CF_RETURN_IF_ERROR(g.write(*this));
      g.truncate(0);
    }
  }
  return Ok();
}

Result<void> Tx::Savepoint(std::string_view name) {
  CF_RETURN_IF_ERROR(Exec(fmt::format("SAVEPOINT {}", name)));
  auto& sizes = savepoints_[std::string(name)];
  sizes.clear();
  for (const auto& g : gathered_) sizes.push_back(g.size());
  return Ok();
}

Result<void> Tx::RollbackTo(std::string_view name) {
  CF_RETURN_IF_ERROR(Exec(fmt::format("ROLLBACK TO SAVEPOINT {}", name)));
  const auto it = savepoints_.find(name);
  for (size_t i = 0; i < gathered_.size(); ++i) {
    // A gathering begun after the savepoint keeps nothing.
    gathered_[i].truncate(it != savepoints_.end() && i < it->second.size() ? it->second[i] : 0);
  }
  return Ok();
}

Result<std::optional<Row>> Tx::QueryOne(std::string_view sql, const Params& params) {
  CF_ASSIGN_OR_RETURN(Rows rows, Query(sql, params));
  if (rows.empty()) return std::optional<Row>();
  return std::optional<Row>(std::move(rows.front()));
}

namespace {

// A text element of a PostgreSQL array literal: quoted, with `"` and `\` escaped.
void AppendArrayText(std::string& out, std::string_view s) {
  out.push_back('"');
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
}

void AppendArrayElement(std::string& out, const Value& v) {
  if (std::holds_alternative<std::nullptr_t>(v)) {
    out += "NULL";
  } else if (const auto* i = std::get_if<int64_t>(&v)) {
    out += std::to_string(*i);
  } else {
    AppendArrayText(out, std::get<std::string>(v));
  }
}

// A JSON string for SQLite's json_each: `"` and `\` escaped, control characters as \u00XX.
void AppendJsonString(std::string& out, std::string_view s) {
  out.push_back('"');
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += fmt::format("\\u{:04x}", static_cast<int>(c));
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
}

}  // namespace

Result<void> LockForTransaction(Tx& tx, int64_t key) {
  if (!tx.postgres()) return Ok();
  CF_RETURN_IF_ERROR(tx.Query("SELECT pg_advisory_xact_lock(?)", {key}));
  return Ok();
}

namespace {

int64_t LockKey(std::string_view name) {
  // "certfleet enroll device:<id>" is the key nodes of earlier releases took for a device.
  const std::string digest = Sha256("certfleet " + std::string(name));
  int64_t key = 0;
  for (int i = 0; i < 8; ++i)
    key = static_cast<int64_t>((static_cast<uint64_t>(key) << 8) | static_cast<uint8_t>(digest[i]));
  return key;
}

}  // namespace

Result<void> LockForTransaction(Tx& tx, std::string_view name) {
  if (!tx.postgres()) return Ok();
  return LockForTransaction(tx, LockKey(name));
}

Result<bool> TryLockForTransaction(Tx& tx, std::string_view name) {
  if (!tx.postgres()) return true;
  CF_ASSIGN_OR_RETURN(auto row,
                      tx.QueryOne("SELECT CASE WHEN pg_try_advisory_xact_lock(?) THEN 1 ELSE 0 END", {LockKey(name)}));
  return row && row->Int(0) == 1;
}

Result<void> LockSharedForTransaction(Tx& tx, std::string_view name) {
  if (!tx.postgres()) return Ok();
  return tx.ExecDeferred("SELECT pg_advisory_xact_lock_shared(?)", {LockKey(name)});
}

Result<void> InsertRows(Tx& tx, std::string_view table, std::span<const Column> columns,
                        const std::vector<Params>& rows, std::string_view tail) {
  if (rows.empty()) return Ok();
  std::string names;
  for (const auto& c : columns) names += fmt::format("{}{}", names.empty() ? "" : ", ", c.name);
  if (!tx.postgres()) {
    std::string placeholders;
    for (size_t i = 0; i < columns.size(); ++i) placeholders += i == 0 ? "?" : ", ?";
    const std::string sql = fmt::format("INSERT INTO {} ({}) VALUES ({}) {}", table, names, placeholders, tail);
    for (const auto& row : rows) CF_RETURN_IF_ERROR(tx.ExecDeferred(sql, row));
    return Ok();
  }
  std::string arrays;
  Params params(columns.size());
  for (size_t i = 0; i < columns.size(); ++i) {
    arrays += fmt::format("{}unnest(?::{}[])", i == 0 ? "" : ", ", columns[i].pg_type);
    std::string literal = "{";
    for (const auto& row : rows) {
      if (literal.size() > 1) literal.push_back(',');
      AppendArrayElement(literal, row.at(i));
    }
    literal.push_back('}');
    params[i] = std::move(literal);
  }
  // unnest in the select list streams the rows (its calls advance together: one row per
  // element); in FROM, PostgreSQL would first copy them all into a tuplestore, and the
  // backend's heap, grown for it and given back at each transaction's end, cost a TLB
  // flush on every core the backend had run on (measured with two nodes: PostgreSQL's CPU
  // a certificate 118-120 us instead of 136-150).
  return tx.ExecDeferred(fmt::format("INSERT INTO {} ({}) SELECT {} {}", table, names, arrays, tail), params);
}

std::string InValues(const Tx& tx, std::string_view column, const std::vector<std::string>& values, Params& params) {
  std::string list;
  for (const auto& v : values) {
    if (!list.empty()) list.push_back(',');
    if (tx.postgres()) {
      AppendArrayText(list, v);
    } else {
      AppendJsonString(list, v);
    }
  }
  if (tx.postgres()) {
    params.emplace_back("{" + list + "}");
    return fmt::format("{} = ANY(?::text[])", column);
  }
  params.emplace_back("[" + list + "]");
  return fmt::format("{} IN (SELECT value FROM json_each(?))", column);
}

Result<std::unique_ptr<Store>> Store::Open(const std::string& url, const Options& options) {
  if (url.starts_with("sqlite://")) return sqlite::OpenSqliteStore(url.substr(9), options);
  if (url.starts_with("postgresql://") || url.starts_with("postgres://")) return postgres::OpenPgStore(url, options);
  return MakeError(ErrorCode::kInvalidArgument, "db must start with sqlite:// or postgresql://");
}

Result<int64_t> Store::Exec(std::string_view sql, const Params& params) {
  return Write(*this, [&](Tx& tx) { return tx.Exec(sql, params); });
}

Result<Rows> Store::Query(std::string_view sql, const Params& params) {
  return Read(*this, [&](Tx& tx) { return tx.Query(sql, params); });
}

Result<int64_t> InsertReturningId(Tx& tx, std::string_view sql, const Params& params) {
  CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne(sql, params));
  if (!row) return MakeError(ErrorCode::kInternal, "an insert returned no id");
  return row->Int(0);
}

}  // namespace certfleet::store
