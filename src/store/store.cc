#include "store/store.h"

#include <charconv>

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

Result<std::optional<Row>> Tx::QueryOne(std::string_view sql, const Params& params) {
  CF_ASSIGN_OR_RETURN(Rows rows, Query(sql, params));
  if (rows.empty()) return std::optional<Row>();
  return std::optional<Row>(std::move(rows.front()));
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

}  // namespace certfleet::store
