// `certfleet backup DIR` and `certfleet restore DIR`: the store (SQLite's online backup, or a
// pg_dump the operator runs first), the CA key folder and a manifest with checksums.
#include "store/backup.h"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <array>
#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "cli/commands.h"
#include "core/crypto.h"
#include "core/files.h"
#include "core/text.h"
#include "pki/key_backend.h"
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
constexpr std::string_view kKeysFolder = "keys/";
constexpr int kFormat = 1;
// A CA key file or the master key is a few KiB; anything larger is not one.
constexpr size_t kMaxKeyFile = size_t{1} << 20;
constexpr size_t kMaxManifest = size_t{16} << 20;
// Databases are hashed in pieces of this size, never held whole.
constexpr size_t kHashChunk = size_t{1} << 20;

int Fail(std::string_view command, const Error& e) {
  std::cerr << "certfleet " << command << ": " << e.message << "\n";
  return 1;
}

bool IsSqlite(const Config& config) { return config.Get("db").starts_with("sqlite://"); }

// SHA-256 of a file of any size, read a piece at a time.
Result<std::string> FileSha256(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return MakeError(ErrorCode::kNotFound, fmt::format("cannot read {}", path.string()));
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return MakeError(ErrorCode::kInternal, "SHA-256 is not available");
  }
  std::string buffer(kHashChunk, '\0');
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    if (in.gcount() > 0) EVP_DigestUpdate(ctx.get(), buffer.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) return MakeError(ErrorCode::kUnavailable, fmt::format("reading {}", path.string()));
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &len);
  return HexEncode(std::string_view(reinterpret_cast<const char*>(digest), len));
}

json::object FileEntry(const std::string& name, const fs::path& path, const std::string& sha256) {
  std::error_code ec;
  return {{"path", name}, {"bytes", fs::file_size(path, ec)}, {"sha256", sha256}};
}

bool EmptyOrOnly(const fs::path& dir, std::string_view allowed) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().filename() != allowed) return false;
  }
  return true;
}

// What restore reads of a manifest, every field checked.
struct Manifest {
  bool sqlite = true;
  bool master_key_included = false;
  std::vector<std::pair<std::string, std::string>> files;  // name, sha256
  std::vector<std::pair<std::string, int64_t>> counts;     // SQLite backups only
};

Result<Manifest> ParseManifest(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  const json::object* o = ec ? nullptr : v.if_object();
  auto bad = [](std::string_view why) {
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("not a certfleet backup manifest: {}", why));
  };
  if (!o) return bad("not a JSON object");
  const json::value* format = o->if_contains("format");
  if (!format || !format->is_int64() || format->as_int64() != kFormat) return bad("format is not 1");
  Manifest m;
  const json::value* store = o->if_contains("store");
  if (!store || !store->is_string()) return bad("no store");
  m.sqlite = store->as_string() == "sqlite";
  const json::value* master = o->if_contains("master_key_included");
  if (!master || !master->is_bool()) return bad("no master_key_included");
  m.master_key_included = master->as_bool();
  const json::value* files = o->if_contains("files");
  if (!files || !files->is_array()) return bad("no files");
  for (const auto& f : files->as_array()) {
    const json::object* e = f.if_object();
    const json::value* path = e ? e->if_contains("path") : nullptr;
    const json::value* sha = e ? e->if_contains("sha256") : nullptr;
    if (!path || !sha || !path->is_string() || !sha->is_string()) return bad("a file without path or sha256");
    const std::string name(path->as_string());
    const bool known = name == kSqliteCopy || name == kPgDump || name == "master.key" ||
                       (name.starts_with(kKeysFolder) && name.find('/', kKeysFolder.size()) == std::string::npos &&
                        name.find("..") == std::string::npos && name.size() > kKeysFolder.size());
    if (!known) return bad("it names a file a backup does not have: " + name);
    m.files.emplace_back(name, std::string(sha->as_string()));
  }
  if (const json::value* counts = o->if_contains("counts"); counts && counts->is_object()) {
    for (const auto& [table, n] : counts->as_object()) {
      if (!n.is_int64()) return bad("a count that is not a number");
      m.counts.emplace_back(std::string(table), n.as_int64());
    }
  }
  return m;
}

// What restore has written so far, taken back if it cannot finish.
class Undo {
 public:
  void Add(fs::path p) { paths_.push_back(std::move(p)); }
  void Keep() { paths_.clear(); }
  ~Undo() {
    std::error_code ec;
    for (const auto& p : paths_) fs::remove(p, ec);
  }
  Undo() = default;
  Undo(const Undo&) = delete;
  Undo& operator=(const Undo&) = delete;

 private:
  std::vector<fs::path> paths_;
};

}  // namespace

int Backup(const Config& config, const std::string& dir, bool include_master_key) {
  auto fail = [](const Error& e) { return Fail("backup", e); };
  const fs::path out(dir);
  const bool sqlite = IsSqlite(config);
  std::error_code ec;
  // PostgreSQL: the operator's pg_dump comes first, so that every CA it holds finds its key
  // among those copied after it.
  if (fs::exists(out, ec) && !EmptyOrOnly(out, sqlite ? std::string_view() : kPgDump)) {
    return fail(MakeError(ErrorCode::kAlreadyExists, dir + " is not empty: back up into a new folder"));
  }
  fs::create_directories(out, ec);
  fs::permissions(out, fs::perms::owner_all, ec);
  if (ec) return fail(MakeError(ErrorCode::kUnavailable, fmt::format("creating {}: {}", dir, ec.message())));
  if (!sqlite && !fs::exists(out / kPgDump, ec)) {
    std::cout << fmt::format(
        "a PostgreSQL store is dumped by pg_dump, first; run\n  pg_dump --format=custom --file {} '{}'\nthen "
        "certfleet backup {} again to add the CA keys and the manifest\n",
        (out / kPgDump).string(), MaskUrlCredentials(config.Get("db")), dir);
    return 1;
  }
  if (!sqlite) {
    // pg_dump's custom format opens with "PGDMP": an empty file (a pg_dump that failed, a full
    // disk) or anything else gets no manifest that would vouch for it.
    std::ifstream dump(out / kPgDump, std::ios::binary);
    std::array<char, 5> magic{};
    dump.read(magic.data(), magic.size());
    if (dump.gcount() != static_cast<std::streamsize>(magic.size()) ||
        std::string_view(magic.data(), magic.size()) != "PGDMP") {
      return fail(MakeError(ErrorCode::kInvalidArgument,
                            fmt::format("{} is not a pg_dump archive in the custom format: run pg_dump again",
                                        (out / kPgDump).string())));
    }
    fs::permissions(out / kPgDump, fs::perms::owner_read | fs::perms::owner_write, ec);
  }
  auto st = server::OpenStore(config);
  if (!st.ok()) return fail(st.error());
  auto cas = store::Read(**st, [](store::Tx& tx) { return store::ListCas(tx); });
  if (!cas.ok()) return fail(cas.error());
  auto schema = store::SchemaVersion(**st);
  if (!schema.ok()) return fail(schema.error());

  json::object manifest{{"format", kFormat},
                        {"created_at", FormatRfc3339(SystemClock::Instance().NowMillis())},
                        {"schema_version", *schema},
                        {"store", sqlite ? "sqlite" : "postgresql"}};
  json::array files;
  // The database first, then the keys: a key file is written before its CA's row commits,
  // so every CA in the copy finds its key among those copied after it.
  const fs::path database = out / (sqlite ? kSqliteCopy : kPgDump);
  if (sqlite) {
    if (auto r = store::BackupSqlite(config.Get("db"), database.string()); !r.ok()) return fail(r.error());
    auto copied = store::Store::Open("sqlite://" + database.string(), {});
    if (!copied.ok()) return fail(copied.error());
    auto counts = store::RowCounts(**copied);
    if (!counts.ok()) return fail(counts.error());
    json::object by_table;
    for (const auto& [table, n] : *counts) by_table[table] = n;
    manifest["counts"] = std::move(by_table);
  }
  auto sum = FileSha256(database);
  if (!sum.ok()) return fail(sum.error());
  files.push_back(FileEntry(database.filename().string(), database, *sum));
  size_t key_files = 0;
  const fs::path key_dir = config.Get("key_dir");
  if (fs::exists(key_dir, ec)) {
    fs::create_directories(out / kKeysFolder, ec);
    fs::permissions(out / kKeysFolder, fs::perms::owner_all, ec);
    for (const auto& entry : fs::directory_iterator(key_dir, ec)) {
      if (!entry.is_regular_file() || entry.is_symlink()) continue;
      auto data = ReadFile(entry.path(), kMaxKeyFile);
      if (!data.ok()) return fail(data.error());
      const std::string name = std::string(kKeysFolder) + entry.path().filename().string();
      if (auto w = WriteFileAtomically(out / name, *data, 0600); !w.ok()) return fail(w.error());
      files.push_back(FileEntry(name, out / name, Sha256Hex(*data)));
      ++key_files;
    }
  }
  if (include_master_key) {
    auto key = config.Get("master_key").empty() ? ReadFile(config.Get("master_key_file"), kMaxKeyFile)
                                                : Result<std::string>(config.Get("master_key") + "\n");
    if (!key.ok()) return fail(key.error());
    if (auto w = WriteFileAtomically(out / "master.key", *key, 0600); !w.ok()) return fail(w.error());
    files.push_back(FileEntry("master.key", out / "master.key", Sha256Hex(*key)));
  }
  int token_keys = 0;
  for (const auto& ca : *cas) token_keys += pki::KeyBackendOf(ca.key_ref) == "pkcs11" ? 1 : 0;
  manifest["files"] = std::move(files);
  manifest["master_key_included"] = include_master_key;
  manifest["token_keys"] = token_keys;
  if (auto w = WriteFileAtomically(out / kManifest, json::serialize(manifest) + "\n", 0600); !w.ok()) {
    return fail(w.error());
  }

  std::cout << fmt::format("backed up to {}: the {} database, {} CA key files, {}\n", dir, sqlite ? "SQLite" : "dumped",
                           key_files, kManifest);
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
  auto manifest = ParseManifest(*text);
  if (!manifest.ok()) return fail(manifest.error());
  // Everything checked before anything is written: the files as the backup wrote them, the
  // store's kind, an empty place to restore to.
  for (const auto& [name, sha256] : manifest->files) {
    if (fs::is_symlink(in / name)) return fail(MakeError(ErrorCode::kInvalidArgument, name + " is a symbolic link"));
    auto sum = FileSha256(in / name);
    if (!sum.ok()) return fail(sum.error());
    if (*sum != sha256) {
      return fail(MakeError(ErrorCode::kInvalidArgument, fmt::format("{} is damaged: its checksum differs", name)));
    }
  }
  if (manifest->sqlite != IsSqlite(config)) {
    return fail(MakeError(ErrorCode::kInvalidArgument, fmt::format("the backup is of a {} store and db is not",
                                                                   manifest->sqlite ? "SQLite" : "PostgreSQL")));
  }
  std::error_code ec;
  const fs::path key_dir = config.Get("key_dir");
  if (fs::exists(key_dir, ec) && !fs::is_empty(key_dir, ec)) {
    return fail(
        MakeError(ErrorCode::kAlreadyExists, key_dir.string() + " holds keys: restore into an empty data folder"));
  }
  const fs::path master_key_file = config.Get("master_key_file");
  std::optional<std::string> master_key;
  if (manifest->master_key_included) {
    auto key = ReadFile(in / "master.key", kMaxKeyFile);
    if (!key.ok()) return fail(key.error());
    auto existing = ReadFile(master_key_file, kMaxKeyFile);
    if (existing.ok() && *existing != *key) {
      return fail(MakeError(ErrorCode::kAlreadyExists, master_key_file.string() + " holds another master key"));
    }
    if (!existing.ok() && existing.error().code != ErrorCode::kNotFound) return fail(existing.error());
    if (!existing.ok()) master_key = std::move(*key);
  }

  Undo undo;
  if (manifest->sqlite) {
    const fs::path db = config.Get("db").substr(std::string_view("sqlite://").size());
    if (fs::exists(db, ec)) {
      return fail(MakeError(ErrorCode::kAlreadyExists, db.string() + " exists: restore into an empty data folder"));
    }
    fs::create_directories(db.parent_path(), ec);
    undo.Add(db);
    undo.Add(db.string() + "-wal");
    undo.Add(db.string() + "-shm");
    // Whole or not at all: a copy cut short (a full disk, a crash) never stands as the database.
    if (auto copied = CopyFileAtomically(in / kSqliteCopy, db, 0600); !copied.ok()) {
      return fail(MakeError(ErrorCode::kUnavailable, "copying the database: " + copied.error().message));
    }
  } else {
    // Read as restored, before any migration could make an empty database look like one.
    auto unmigrated = store::Store::Open(config.Get("db"), {});
    if (!unmigrated.ok()) return fail(unmigrated.error());
    if (!store::RowCounts(**unmigrated).ok()) {
      return fail(MakeError(ErrorCode::kFailedPrecondition,
                            fmt::format("the database holds no certfleet data: restore it first with\n  pg_restore "
                                        "--no-owner --dbname '{}' {}",
                                        MaskUrlCredentials(config.Get("db")), (in / kPgDump).string())));
    }
  }
  for (const auto& [name, sha256] : manifest->files) {
    if (!name.starts_with(kKeysFolder)) continue;
    auto data = ReadFile(in / name, kMaxKeyFile);
    if (!data.ok()) return fail(data.error());
    const fs::path target = key_dir / name.substr(kKeysFolder.size());
    undo.Add(target);
    if (auto w = WriteFileAtomically(target, *data, 0600); !w.ok()) return fail(w.error());
  }
  fs::permissions(key_dir, fs::perms::owner_all, ec);
  if (master_key) {
    undo.Add(master_key_file);
    if (auto w = WriteFileAtomically(master_key_file, *master_key, 0600); !w.ok()) return fail(w.error());
  }
  auto st = server::OpenStore(config);
  if (!st.ok()) return fail(st.error());
  auto counts = store::RowCounts(**st);
  if (!counts.ok()) return fail(counts.error());
  for (const auto& [table, expected] : manifest->counts) {
    for (const auto& [name, n] : *counts) {
      if (name == table && n != expected) {
        return fail(MakeError(ErrorCode::kInternal, fmt::format("{} has {} rows, the backup {}", table, n, expected)));
      }
    }
  }
  st->reset();
  undo.Keep();
  std::cout << fmt::format("restored {} into {}: ", dir, config.Get("data_dir"));
  for (const auto& [table, n] : *counts) std::cout << fmt::format("{} {}; ", table, n);
  std::cout << "\n";
  if (!manifest->master_key_included) {
    std::cout << "the master key was not in the backup: put it at master_key_file (or CERTFLEET_MASTER_KEY) before "
                 "serve\n";
  }
  return 0;
}

}  // namespace certfleet::cli
