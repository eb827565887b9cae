#include <fmt/format.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <tuple>

#include "cli/commands.h"
#include "core/files.h"
#include "core/log.h"
#include "pki/file/file_key_backend.h"
#include "pki/tls_identity.h"
#include "server/server.h"
#include "store/audit_repo.h"
#include "store/tokens_repo.h"

namespace certfleet::cli {
namespace {

namespace fs = std::filesystem;

// The local TLS certificate lasts this long; `certfleet init` makes a new one once it is deleted.
constexpr int kTlsValidityDays = 825;

constexpr mode_t kPrivate = 0600;
constexpr mode_t kPublic = 0644;

// True if `path` holds a token that is valid in this store (it may have been made for
// another store, e.g. before CERTFLEET_DB pointed to PostgreSQL).
Result<bool> KeptAdminToken(store::Store& st, const fs::path& path) {
  if (!fs::exists(path)) return false;
  std::ifstream in(path);
  std::string bearer;
  std::getline(in, bearer);
  CF_ASSIGN_OR_RETURN(auto token,
                      store::Read(st, [&](store::Tx& tx) { return store::AuthenticateBearer(tx, bearer); }));
  if (!token) std::cerr << fmt::format("admin token: {} is not valid in this store; making a new one\n", path.string());
  return token.has_value();
}

}  // namespace

int Init(const Config& config, const Clock& clock) {
  const fs::path data_dir = config.Get("data_dir");
  std::error_code ec;
  fs::create_directories(data_dir, ec);
  if (ec) {
    std::cerr << fmt::format("certfleet: creating {}: {}\n", data_dir.string(), ec.message());
    return 1;
  }
  fs::permissions(data_dir, fs::perms::owner_all, ec);

  auto st = server::OpenStore(config);
  if (!st.ok()) {
    std::cerr << "certfleet: " << st.error().message << "\n";
    return 1;
  }
  const std::string actor = "cli:init";

  const bool had_master_key = !config.Get("master_key").empty() || fs::exists(config.Get("master_key_file"));
  if (auto key = pki::file::LoadMasterKey(config.Get("master_key"), config.Get("master_key_file"), true); !key.ok()) {
    std::cerr << "certfleet: " << key.error().message << "\n";
    return 1;
  }
  std::cerr << (had_master_key ? "master key: keeping it\n"
                               : fmt::format("master key: wrote {} (0600); back it up: the CA keys need it\n",
                                             config.Get("master_key_file")));

  const fs::path cert_path = config.Get("server.tls_cert");
  const fs::path key_path = config.Get("server.tls_key");
  const fs::path ca_path = data_dir / "tls" / "ca.pem";
  if (fs::exists(cert_path) && fs::exists(key_path)) {
    std::cerr << fmt::format("TLS: keeping {} and {}\n", cert_path.string(), key_path.string());
  } else {
    auto identity = pki::MakeTlsIdentity(SplitList(config.Get("server.tls_sans")), clock.NowMillis(), kTlsValidityDays);
    if (!identity.ok()) {
      std::cerr << "certfleet: server.tls_sans: " << identity.error().message << "\n";
      return 1;
    }
    const std::tuple<const fs::path&, const std::string&, mode_t> files[] = {
        {key_path, identity->server_key_pem, kPrivate},
        {cert_path, identity->server_chain_pem, kPublic},
        {ca_path, identity->ca_pem, kPublic}};
    for (const auto& [path, data, mode] : files) {
      if (auto r = WriteFileAtomically(path, data, mode); !r.ok()) {
        std::cerr << "certfleet: " << r.error().message << "\n";
        return 1;
      }
    }
    Result<void> audited = (*st)->Transact([&](store::Tx& tx) -> Result<void> {
      CF_RETURN_IF_ERROR(store::AppendAudit(tx, clock.NowMillis(), actor, "tls.create", cert_path.string(),
                                            fmt::format(R"({{"sans":"{}"}})", config.Get("server.tls_sans"))));
      return Ok();
    });
    if (!audited.ok()) std::cerr << "certfleet: audit: " << audited.error().message << "\n";
    std::cerr << fmt::format("TLS: wrote {} and {}; clients trust {}\n", cert_path.string(), key_path.string(),
                             ca_path.string());
  }

  const fs::path token_path = data_dir / "admin.token";
  if (auto kept = KeptAdminToken(**st, token_path); !kept.ok()) {
    std::cerr << "certfleet: " << kept.error().message << "\n";
    return 1;
  } else if (*kept) {
    std::cerr << fmt::format("admin token: keeping {}\n", token_path.string());
  } else {
    auto token = store::Write(**st, [&](store::Tx& tx) -> Result<store::NewToken> {
      const int64_t now = clock.NowMillis();
      CF_ASSIGN_OR_RETURN(auto token, store::CreateApiToken(tx, store::Role::kAdmin, "initial admin", actor, now));
      CF_RETURN_IF_ERROR(
          store::AppendAudit(tx, now, actor, "token.create", "token:" + token.record.id, R"({"role":"admin"})"));
      return token;
    });
    Result<void> written = token.ok() ? WriteFileAtomically(token_path, token->bearer + "\n", kPrivate) : token.error();
    if (!written.ok()) {
      std::cerr << "certfleet: " << written.error().message << "\n";
      return 1;
    }
    std::cerr << fmt::format("admin token (shown once, also in {} mode 0600):\n", token_path.string());
    std::cout << token->bearer << "\n";
  }
  std::cerr << fmt::format("initialized {} with store {}\n", data_dir.string(), MaskUrlCredentials(config.Get("db")));
  return 0;
}

}  // namespace certfleet::cli
