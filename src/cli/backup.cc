// `certfleet backup DIR` and `certfleet restore DIR`: the store (SQLite's online backup, or
// the pg_dump to run), the CA key folder and a manifest with checksums and row counts.
#include "store/backup.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "core/crypto.h"
#include "core/files.h"
#include "core/text.h"
#include "server/server.h"
#include "store/certificates_repo.h"
#include "store/migrations.h"

namespace certfleet::cli {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;

constexpr std::string_view kManifest = "manifest.json";
constexpr std::string_view kSqliteCopy = "certfleet.db";
constexpr std::string_view kPgDump = "certfleet.pgdump";
constexpr int kFormat = 1;
// A CA key file or the master key is a few KiB; the database copy is checked by SQLite.
constexpr size_t kMaxKeyFile = size_t{1} << 20;
constexpr size_t kMaxManifest = size_t{16} << 20;
constexpr size_t kMaxDatabase = size_t{1} << 40;

int Fail(std::string_view command, const Error& e) {
  std::cerr << "certfleet " << command << ": " << e.message << "\n";
  return 1;
}

bool IsSqlite(const Config& config) { return config.Get("db").starts_with("sqlite://"); }

Result<std::string> FileSha256(const fs::path& path, size_t max_bytes) {
  CF_ASSIGN_OR_RETURN(std::string data, ReadFile(path, max_bytes));
  return Sha256Hex(data);
}

json::object CountsJson(const std::vector<std::pair<std::string, int64_t>>& counts) {
  json::object out;
  for (const auto& [table, n] : counts) out[table] = n;
  return out;
}

// Copies the regular files of `from` into `to` (made 0700, files 0600); their names and checksums.
Result<json::array> CopyKeys(const fs::path& from, const fs::path& to) {
  json::array files;
  std::error_code ec;
  if (!fs::exists(from, ec)) return files;
  fs::create_directories(to, ec);
  fs::permissions(to, fs::perms::owner_all, ec);
  for (const auto& entry : fs::directory_iterator(from, ec)) {
    if (!entry.is_regular_file()) continue;
    CF_ASSIGN_OR_RETURN(std::string data, ReadFile(entry.path(), kMaxKeyFile));
    CF_RETURN_IF_ERROR(WriteFileAtomically(to / entry.path().filename(), data, 0600));
    files.push_back(json::object{
        {"path", "keys/" + entry.path().filename().string()}, {"bytes", data.size()}, {"sha256", Sha256Hex(data)}});
  }
  if (ec) return MakeError(ErrorCode::kUnavailable, fmt::format("reading {}: {}", from.string(), ec.message()));
  return files;
}

}  // namespace

int Backup(const Config& config, const std::string& dir, bool include_master_key) {
  auto fail = [](const Error& e) { return Fail("backup", e); };
  const fs::path out(dir);
  std::error_code ec;
  if (fs::exists(out, ec) && !fs::is_empty(out, ec)) {
    return fail(MakeError(ErrorCode::kAlreadyExists, dir + " is not empty: back up into a new folder"));
  }
  fs::create_directories(out, ec);
  fs::permissions(out, fs::perms::owner_all, ec);
  if (ec) return fail(MakeError(ErrorCode::kUnavailable, fmt::format("creating {}: {}", dir, ec.message())));
  auto st = server::OpenStore(config);
  if (!st.ok()) return fail(st.error());
  auto cas = store::Read(**st, [](store::Tx& tx) { return store::ListCas(tx); });
  if (!cas.ok()) return fail(cas.error());
  auto schema = store::SchemaVersion(**st);
  if (!schema.ok()) return fail(schema.error());

  json::object manifest{{"format", kFormat},
                        {"created_at", FormatRfc3339(SystemClock::Instance().NowMillis())},
                        {"schema_version", *schema},
                        {"store", IsSqlite(config) ? "sqlite" : "postgresql"}};
  json::array files;
  // The database first, then the keys: a key file is written before its CA's row commits,
  // so every CA in the copy finds its key among those copied after it.
  if (IsSqlite(config)) {
    const fs::path copy = out / kSqliteCopy;
    if (auto r = store::BackupSqlite(config.Get("db"), copy.string()); !r.ok()) return fail(r.error());
    auto copied = store::Store::Open("sqlite://" + copy.string(), {});
    if (!copied.ok()) return fail(copied.error());
    auto counts = store::RowCounts(**copied);
    if (!counts.ok()) return fail(counts.error());
    manifest["counts"] = CountsJson(*counts);
    copied->reset();
    auto sum = FileSha256(copy, kMaxDatabase);
    if (!sum.ok()) return fail(sum.error());
    files.push_back(
        json::object{{"path", std::string(kSqliteCopy)}, {"bytes", fs::file_size(copy, ec)}, {"sha256", *sum}});
  }
  auto keys = CopyKeys(config.Get("key_dir"), out / "keys");
  if (!keys.ok()) return fail(keys.error());
  for (auto& k : *keys) files.push_back(std::move(k));
  if (include_master_key) {
    auto key = config.Get("master_key").empty() ? ReadFile(config.Get("master_key_file"), kMaxKeyFile)
                                                : Result<std::string>(config.Get("master_key") + "\n");
    if (!key.ok()) return fail(key.error());
    if (auto w = WriteFileAtomically(out / "master.key", *key, 0600); !w.ok()) return fail(w.error());
    files.push_back(json::object{{"path", "master.key"}, {"bytes", key->size()}, {"sha256", Sha256Hex(*key)}});
  }
  int token_keys = 0;
  for (const auto& ca : *cas) token_keys += ca.key_ref.starts_with("pkcs11:") ? 1 : 0;
  manifest["files"] = std::move(files);
  manifest["master_key_included"] = include_master_key;
  manifest["token_keys"] = token_keys;
  if (auto w = WriteFileAtomically(out / kManifest, json::serialize(manifest) + "\n", 0600); !w.ok()) {
    return fail(w.error());
  }

  std::cout << fmt::format("backed up to {}: {} CA key files, manifest {}\n", dir, keys->size(), kManifest);
  if (!IsSqlite(config)) {
    std::cout << fmt::format(
        "the PostgreSQL database is not copied by certfleet; run, now:\n  pg_dump --format=custom --file {} '{}'\n",
        (out / kPgDump).string(), MaskUrlCredentials(config.Get("db")));
  }
  if (!include_master_key) {
    std::cout << fmt::format(
        "the master key is NOT in the backup: keep {} (or CERTFLEET_MASTER_KEY) safe and apart from it; "
        "without it the CA keys in the backup cannot be decrypted\n",
        config.Get("master_key").empty() ? config.Get("master_key_file") : std::string("master_key"));
  } else {
    std::cout << "the master key IS in the backup (master.key): keep the backup as secret as the key itself\n";
  }
  if (token_keys > 0) {
    std::cout << fmt::format("{} CA keys are on the PKCS#11 token: back the token up with its vendor's tools\n",
                             token_keys);
  }
  return 0;
}

int Restore(const Config& config, const std::string& dir) {
  auto fail = [](const Error& e) { return Fail("restore", e); };
  const fs::path in(dir);
  auto text = ReadFile(in / kManifest, kMaxManifest);
  if (!text.ok()) return fail(text.error().Wrap("the backup's manifest"));
  boost::system::error_code parse_error;
  json::value parsed = json::parse(*text, parse_error);
  if (parse_error || !parsed.is_object() || !parsed.as_object().contains("files")) {
    return fail(MakeError(ErrorCode::kInvalidArgument, dir + "/manifest.json is not a certfleet backup manifest"));
  }
  const json::object& manifest = parsed.as_object();
  // Every file as the backup wrote it, before anything is put in place.
  for (const auto& f : manifest.at("files").as_array()) {
    const std::string name(f.at("path").as_string());
    if (name.find("..") != std::string::npos || name.starts_with("/")) {
      return fail(MakeError(ErrorCode::kInvalidArgument, "the manifest names a file outside the backup: " + name));
    }
    auto sum = FileSha256(in / name, name == kSqliteCopy ? kMaxDatabase : kMaxKeyFile);
    if (!sum.ok()) return fail(sum.error());
    if (*sum != f.at("sha256").as_string()) {
      return fail(MakeError(ErrorCode::kInvalidArgument, fmt::format("{} is damaged: its checksum differs", name)));
    }
  }
  const bool sqlite_backup = manifest.at("store").as_string() == "sqlite";
  if (sqlite_backup != IsSqlite(config)) {
    return fail(MakeError(ErrorCode::kInvalidArgument,
                          fmt::format("the backup is of a {} store and db is not", manifest.at("store").as_string())));
  }
  std::error_code ec;
  const fs::path key_dir = config.Get("key_dir");
  if (fs::exists(key_dir, ec) && !fs::is_empty(key_dir, ec)) {
    return fail(
        MakeError(ErrorCode::kAlreadyExists, key_dir.string() + " holds keys: restore into an empty data folder"));
  }
  if (sqlite_backup) {
    const fs::path db = config.Get("db").substr(std::string_view("sqlite://").size());
    if (fs::exists(db, ec)) {
      return fail(MakeError(ErrorCode::kAlreadyExists, db.string() + " exists: restore into an empty data folder"));
    }
    fs::create_directories(db.parent_path(), ec);
    fs::copy_file(in / kSqliteCopy, db, ec);
    fs::permissions(db, fs::perms::owner_read | fs::perms::owner_write, ec);
    if (ec) return fail(MakeError(ErrorCode::kUnavailable, fmt::format("copying the database: {}", ec.message())));
  }
  // Read as restored, before any migration could make an empty database look like one.
  auto unmigrated = store::Store::Open(config.Get("db"), {});
  if (!unmigrated.ok()) return fail(unmigrated.error());
  if (!store::RowCounts(**unmigrated).ok()) {
    return fail(MakeError(ErrorCode::kFailedPrecondition,
                          fmt::format("the database holds no certfleet data: restore it first with\n  pg_restore "
                                      "--no-owner --dbname '{}' {}",
                                      MaskUrlCredentials(config.Get("db")), (in / kPgDump).string())));
  }
  unmigrated->reset();
  auto st = server::OpenStore(config);
  if (!st.ok()) return fail(st.error());
  auto counts = store::RowCounts(**st);
  if (!counts.ok()) return fail(counts.error());
  if (auto copied = CopyKeys(in / "keys", key_dir); !copied.ok()) return fail(copied.error());
  if (manifest.at("master_key_included").as_bool()) {
    const fs::path target = config.Get("master_key_file");
    auto key = ReadFile(in / "master.key", kMaxKeyFile);
    if (!key.ok()) return fail(key.error());
    auto existing = ReadFile(target, kMaxKeyFile);
    if (existing.ok() && *existing != *key) {
      return fail(MakeError(ErrorCode::kAlreadyExists, target.string() + " holds another master key"));
    }
    if (!existing.ok()) {
      if (auto w = WriteFileAtomically(target, *key, 0600); !w.ok()) return fail(w.error());
    }
  }
  if (manifest.contains("counts")) {
    const json::object& expected = manifest.at("counts").as_object();
    for (const auto& [table, n] : *counts) {
      if (auto it = expected.find(table); it != expected.end() && it->value().as_int64() != n) {
        return fail(MakeError(ErrorCode::kInternal,
                              fmt::format("{} has {} rows, the backup {}", table, n, it->value().as_int64())));
      }
    }
  }
  std::cout << fmt::format("restored {} into {}: ", dir, config.Get("data_dir"));
  for (const auto& [table, n] : *counts) std::cout << fmt::format("{} {}; ", table, n);
  std::cout << "\n";
  if (!manifest.at("master_key_included").as_bool()) {
    std::cout << "the master key was not in the backup: put it at master_key_file (or CERTFLEET_MASTER_KEY) before "
                 "serve\n";
  }
  return 0;
}

}  // namespace certfleet::cli
