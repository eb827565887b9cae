#include "cli/cli.h"

#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/json/serialize.hpp>
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "core/log.h"
#include "core/text.h"
#include "http/token_service.h"
#include "registry/codec.h"
#include "registry/registry.h"
#include "server/server.h"
#include "store/audit_repo.h"
#include "store/migrations.h"
#include "store/tokens_repo.h"

namespace certfleet::cli {

std::string CliActor() {
  const char* user = std::getenv("USER");
  return fmt::format("cli:{}", user && *user ? user : std::to_string(getuid()));
}

namespace {

int Fail(const Error& e) {
  std::cerr << "certfleet: " << e.message << "\n";
  return 1;
}

int TokenCreate(const Config& config, const Clock& clock, const std::string& role_name, const std::string& name) {
  auto role = store::ParseRole(role_name);
  if (!role.ok()) return Fail(role.error());
  auto st = server::OpenStore(config);
  if (!st.ok()) return Fail(st.error());
  auto token = http::TokenService(**st, clock).Create(*role, name, CliActor());
  if (!token.ok()) return Fail(token.error());
  std::cerr << fmt::format("created {} token {} ({}); it is shown once:\n", role_name, token->record.id,
                           token->record.name);
  std::cout << token->bearer << "\n";
  return 0;
}

int TokenList(const Config& config, const Clock& clock) {
  auto st = server::OpenStore(config);
  if (!st.ok()) return Fail(st.error());
  auto tokens = http::TokenService(**st, clock).List();
  if (!tokens.ok()) return Fail(tokens.error());
  std::cout << fmt::format("{:<14} {:<9} {:<25} {:<8} {}\n", "ID", "ROLE", "CREATED", "STATUS", "NAME");
  for (const auto& t : *tokens) {
    std::cout << fmt::format("{:<14} {:<9} {:<25} {:<8} {}\n", t.id, store::RoleName(t.role),
                             FormatRfc3339(t.created_at), t.revoked_at ? "revoked" : "active", Escaped(t.name));
  }
  return 0;
}

int TokenRevoke(const Config& config, const Clock& clock, const std::string& id) {
  auto st = server::OpenStore(config);
  if (!st.ok()) return Fail(st.error());
  if (auto r = http::TokenService(**st, clock).Revoke(id, CliActor()); !r.ok()) return Fail(r.error());
  std::cerr << "revoked token " << id << "\n";
  return 0;
}

int AuditVerify(const Config& config) {
  auto st = server::OpenStore(config);
  if (!st.ok()) return Fail(st.error());
  auto report = store::VerifyAuditChain(**st);
  if (!report.ok()) return Fail(report.error());
  if (report->first_broken_seq) {
    std::cout << fmt::format("audit chain BROKEN at row {}: {} ({} rows verified before it)\n",
                             *report->first_broken_seq, report->reason, report->rows_checked);
    return 2;
  }
  std::cout << fmt::format("audit chain intact: {} rows verified on {} chain{}\n", report->rows_checked, report->chains,
                           report->chains == 1 ? "" : "s");
  return 0;
}

int RegistrySummary(const Config& config, const Clock& clock) {
  auto st = server::OpenStore(config);
  if (!st.ok()) return Fail(st.error());
  registry::Registry registry(**st, clock);
  auto counts = registry.Summary();
  if (!counts.ok()) return Fail(counts.error());
  std::cout << boost::json::serialize(registry::SummaryJson(*counts)) << "\n";
  return 0;
}

int Migrate(const Config& config) {
  auto st = server::OpenStore(config);  // applies the migrations
  if (!st.ok()) return Fail(st.error());
  auto version = store::SchemaVersion(**st);
  if (!version.ok()) return Fail(version.error());
  std::cout << fmt::format("schema at version {}\n", *version);
  return 0;
}

}  // namespace

int Main(int argc, char** argv) {
  CLI::App app{
      "certfleet: a self-hosted certificate lifecycle platform for device fleets.\n"
      "Every option below is also a key of certfleet.toml and a CERTFLEET_* environment variable."};
  app.require_subcommand(1);
  app.fallthrough();
  Config::Sources sources;
  app.add_option("--config", sources.file,
                 "certfleet.toml to read (default: ./certfleet.toml if present, or $CERTFLEET_CONFIG)");
  std::map<std::string, std::string> flag_values;
  const std::vector<ConfigKey> keys = server::ConfigKeys();
  for (const auto& key : keys) {
    app.add_option("--" + Config::FlagName(key.name), flag_values[std::string(key.name)],
                   fmt::format("{} [{}]", key.help, Config::EnvName(key.name)))
        ->group("Configuration");
  }

  auto* init = app.add_subcommand(
      "init", "Create the data folder, the schema, the server's TLS files and the first admin token.");
  auto* serve =
      app.add_subcommand("serve", "Run the HTTPS API, the job workers and the scheduler until SIGTERM/SIGINT.");
  auto* migrate = app.add_subcommand("migrate", "Apply pending database migrations and print the schema version.");

  auto* token = app.add_subcommand("token", "Manage API tokens.");
  token->require_subcommand(1);
  std::string role, token_name, token_id;
  auto* token_create = token->add_subcommand("create", "Create a token and print it once on stdout.");
  token_create->add_option("--role", role, "admin, operator or reader")->required();
  token_create->add_option("--name", token_name, "A label for the token (who or what uses it)");
  auto* token_list = token->add_subcommand("list", "List tokens (never their secrets).");
  auto* token_revoke = token->add_subcommand("revoke", "Revoke a token at once.");
  token_revoke->add_option("id", token_id, "The token's id (the part after cf_ and before the next _)")->required();

  auto* registry_cmd = app.add_subcommand("registry", "Inspect the registry (things, certificates, policies).");
  registry_cmd->require_subcommand(1);
  auto* registry_summary = registry_cmd->add_subcommand(
      "summary",
      "Print how many things, types, groups, policies, templates and profiles there are, and the "
      "certificates attached to things by source and status (JSON, as GET /v1/registry/summary).");

  auto* audit = app.add_subcommand("audit", "Inspect the audit log.");
  audit->require_subcommand(1);
  auto* audit_verify =
      audit->add_subcommand("verify", "Recompute the audit hash chain and report the first broken row (exit 2).");

  ImportArgs import_args;
  auto* import_cmd = app.add_subcommand(
      "import",
      "Import a supplier manifest into the registry here, with a progress bar, and print the counts (W3). The "
      "server's POST /v1/imports does the same as a job.");
  import_cmd->add_option("file", import_args.file, "The manifest file");
  import_cmd->add_option("--supplier", import_args.supplier, "microchip, infineon, espressif, generated or pem");
  import_cmd->add_option("--profile", import_args.profile, "The profile whose type, groups and policies things get");
  import_cmd->add_option("--bundle-type", import_args.bundle_type, "Infineon: E0E0, E0E1 or E0E2");
  import_cmd->add_option("--verifier-dir", import_args.verifier_dir,
                         "Folder of Microchip signer certificates (default: bulk.verifier_dir)");
  import_cmd->add_option("--resume", import_args.resume_id, "Go on with an interrupted import (its id) instead");

  auto* host = app.add_subcommand("host", "Hosts whose certificates certfleet-agent renews (W4).");
  host->require_subcommand(1);
  std::string host_id;
  auto* host_token = host->add_subcommand(
      "token", "Print a single-use enrollment token for the host's agent (certfleet-agent --bootstrap-token).");
  host_token->add_option("id", host_id, "The host's id (POST /v1/hosts)")->required();
  auto* host_reactivate = host->add_subcommand(
      "reactivate", "Give a revoked or failed host a new start: enrolling again, and print its agent's new token.");
  host_reactivate->add_option("id", host_id, "The host's id")->required();
  renewal::CredentialSpec credential;
  std::string credential_ttl = "24h";
  auto* host_credential = host->add_subcommand(
      "credential",
      "Print a fleet enrollment credential: one secret that enrolls up to --uses hosts whose ids match --pattern "
      "(certfleet-agent --bootstrap-token), until --ttl ends.");
  host_credential
      ->add_option("--pattern", credential.hosts,
                   "A host id, or a pattern with '*' within labels (web-*.example.com); repeat for more")
      ->required();
  host_credential->add_option("--uses", credential.uses, "How many hosts it may enroll")->required();
  host_credential->add_option("--ttl", credential_ttl, "How long it is valid: 90m, 72h, 7d (at most 30d)")
      ->capture_default_str();

  auto* ca_cmd = app.add_subcommand("ca", "The CA hierarchy (W1).");
  ca_cmd->require_subcommand(1);
  CaImportArgs ca_import_args;
  auto* ca_import = ca_cmd->add_subcommand(
      "import",
      "Bring an existing CA in (from OpenSSL, step-ca, cfssl, EJBCA): its key moves into the key backend, its "
      "issuers not held here are recorded as external CAs. Refused: a key that does not match, a certificate that is "
      "not a CA or not valid now, a name already in use.");
  ca_import->add_option("--cert", ca_import_args.cert, "The CA certificate (PEM)");
  ca_import->add_option("--key", ca_import_args.key, "Its private key (PEM, PKCS#8 or traditional; may be encrypted)");
  ca_import->add_option("--pkcs12", ca_import_args.pkcs12, "Or a PKCS#12 file with the key, certificate and chain");
  ca_import->add_option("--password-file", ca_import_args.password_file,
                        "File holding the password of an encrypted key or PKCS#12 file");
  ca_import->add_option("--chain", ca_import_args.chain, "Its issuers up to the root (PEM), unless already here");
  ca_import->add_option("--fqdn", ca_import_args.fqdn, "Its name in the inventory (default: its CN)");
  ca_import->add_option("--key-backend", ca_import_args.key_backend, "db, file or pkcs11 (default: ca.key_backend)");

  auto* migrate_keys = app.add_subcommand(
      "migrate-keys",
      "Move the CA keys of key_dir into the database (sealed with the master key), so that nodes on one PostgreSQL "
      "need no shared folder; each CA is pointed at its new key in an audited transaction (ca.key.move).");

  auto* acme_cmd = app.add_subcommand("acme", "The ACME server.");
  acme_cmd->require_subcommand(1);
  auto* eab_cmd = acme_cmd->add_subcommand("eab", "External account bindings (RFC 8555 7.3.4).");
  eab_cmd->require_subcommand(1);
  std::string eab_profile = "default";
  auto* eab_create = eab_cmd->add_subcommand(
      "create", "Make the kid and MAC key that bind one new ACME account of a profile; printed once on stdout.");
  eab_create->add_option("--profile", eab_profile, "The ACME profile")->capture_default_str();

  std::string backup_dir;
  bool include_master_key = false;
  auto* backup = app.add_subcommand("backup",
                                    "Copy the store (SQLite: an online, consistent copy while serving; PostgreSQL: "
                                    "prints the pg_dump to run into DIR "
                                    "first), the "
                                    "CA key folder and a manifest (checksums, row counts) into a new folder.");
  backup->add_option("dir", backup_dir, "The new (or empty) folder to write")->required();
  backup->add_flag("--include-master-key", include_master_key,
                   "Copy the master key too (then the backup is as secret as the key); by default it is left out");
  auto* restore = app.add_subcommand(
      "restore",
      "Put a backup in place in an empty data folder (PostgreSQL: after pg_restore), checking its checksums and the "
      "restored row counts.");
  restore->add_option("dir", backup_dir, "The backup's folder")->required();

  auto* config_cmd = app.add_subcommand("config", "Inspect the configuration.");
  config_cmd->require_subcommand(1);
  auto* config_show = config_cmd->add_subcommand(
      "show", "Print the effective configuration, secrets masked, with each value's source.");
  auto* config_keys = config_cmd->add_subcommand(
      "keys",
      "Print every configuration key as its module declares it: name, environment variable, default, "
      "range, meaning (tab-separated).");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  sources.env = Config::ProcessEnvironment();
  for (const auto& key : keys) {
    const std::string name(key.name);
    if (app.count("--" + Config::FlagName(key.name)) > 0) sources.overrides[name] = flag_values[name];
  }
  auto config = Config::Load(sources, keys);
  if (!config.ok()) return Fail(config.error());
  log::SetLevel(config->Get("log_level"));
  const Clock& clock = SystemClock::Instance();

  if (*init) return Init(*config, clock);
  if (*serve) return Serve(*config, clock);
  if (*migrate) return Migrate(*config);
  if (*token_create) return TokenCreate(*config, clock, role, token_name);
  if (*token_list) return TokenList(*config, clock);
  if (*token_revoke) return TokenRevoke(*config, clock, token_id);
  if (*audit_verify) return AuditVerify(*config);
  if (*registry_summary) return RegistrySummary(*config, clock);
  if (*host_token) return HostToken(*config, clock, host_id, false);
  if (*host_reactivate) return HostToken(*config, clock, host_id, true);
  if (*host_credential) return HostCredential(*config, clock, credential, credential_ttl);
  if (*ca_import) return CaImport(*config, clock, ca_import_args);
  if (*migrate_keys) return MigrateKeys(*config, clock);
  if (*eab_create) return AcmeEabCreate(*config, clock, eab_profile);
  if (*backup) return Backup(*config, backup_dir, include_master_key);
  if (*restore) return Restore(*config, backup_dir);
  if (*import_cmd) {
    if (import_args.resume_id == 0 &&
        (import_args.file.empty() || import_args.supplier.empty() || import_args.profile.empty())) {
      std::cerr << "certfleet import: give FILE --supplier S --profile P, or --resume ID\n";
      return 2;
    }
    return Import(*config, clock, import_args);
  }
  if (*config_keys) {
    for (const auto& k : config->keys()) {
      const std::string range = k.type == ConfigType::kInt ? fmt::format("{}..{}", k.min, k.max) : "";
      std::cout << fmt::format("{}\t{}\t{}\t{}\t{}\n", k.name, Config::EnvName(k.name), k.default_value, range, k.help);
    }
    return 0;
  }
  if (*config_show) {
    std::cout << "# effective configuration" << (config->file().empty() ? "" : " (file: " + config->file() + ")")
              << "; each value's source follows it\n"
              << config->Show();
    return 0;
  }
  return 1;
}

}  // namespace certfleet::cli
