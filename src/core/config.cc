#include "core/config.h"

#include <fmt/format.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <charconv>
#include <filesystem>

extern char** environ;

namespace certfleet {
namespace {

constexpr int64_t kMiB = int64_t{1024} * 1024;

constexpr ConfigKey kKeys[] = {
    {"data_dir", ConfigType::kPath, "./var",
     "Folder for the database, TLS files, blobs and outbox of the embedded defaults."},
    {"db", ConfigType::kUrl, "sqlite://{data_dir}/certfleet.db",
     "Store: sqlite://PATH (embedded) or postgresql://user:pass@host:port/db."},
    {"db_pool_size", ConfigType::kInt, "8", "Database connections kept open per node.", 1, 256},
    {"blobs", ConfigType::kUrl, "file://{data_dir}/blobs",
     "Object store certfleet publishes to (each re-signed CRL as crl/<ca fqdn>.crl): file://PATH or "
     "s3://BUCKET?endpoint=...&region=..."},
    {"mail", ConfigType::kUrl, "file://{data_dir}/outbox",
     "Mail: file://PATH writes .eml files; smtp://user:pass@host:port[?tls=required&ca=FILE] or smtps://... sends."},
    {"log_level", ConfigType::kString, "info", "debug, info, warn or error."},
    {"public_url", ConfigType::kString, "",
     "Base URL clients reach this server at, put in certificates (CRL and OCSP); empty: https://<server.listen>."},
    {"master_key", ConfigType::kSecret, "",
     "Master key encrypting CA keys (at least 32 characters); empty: master_key_file."},
    {"master_key_file", ConfigType::kPath, "{data_dir}/master.key",
     "File holding the master key; `certfleet init` creates it (0600)."},
    {"key_dir", ConfigType::kPath, "{data_dir}/keys", "Folder of the encrypted CA keys (PKCS#8, AES-256)."},
    {"auth.token_cache_ms", ConfigType::kInt, "1000",
     "How long a verified API token is remembered; other nodes refuse a revoked token within this. 0: never.", 0,
     60000},
    {"webhooks.urls", ConfigType::kString, "",
     "URLs (comma-separated, http:// or https://) each event of webhooks.events is POSTed to; empty: none."},
    {"webhooks.events", ConfigType::kString, "crl/published,renewal/failed",
     "Event types sent to webhooks (comma-separated): crl/published, renewal/failed, certificates/created, "
     "certificates/revoked."},
    {"webhooks.secret", ConfigType::kSecret, "",
     "Key of each webhook POST's X-Certfleet-Signature (sha256=HMAC-SHA256 of the body, hex); empty: unsigned."},
    {"webhooks.ca", ConfigType::kPath, "", "CA file trusted for https webhooks; empty: the system store."},
    {"webhooks.every_seconds", ConfigType::kInt, "5", "How often pending events are sent to webhooks.", 1, 3600},
    {"ca.crl_hours", ConfigType::kInt, "24",
     "A CRL's validity (nextUpdate); it is re-signed when half of it has passed.", 1, 8760},
    {"ca.ocsp_minutes", ConfigType::kInt, "60", "An OCSP response's validity (nextUpdate) and how long it is cached.",
     1, 10080},
    {"provision.supersede_grace_hours", ConfigType::kInt, "24",
     "W2: hours a device's previous certificate stays valid after it provisions a new one; 0: revoked at once.", 0,
     8760},
    {"provision.retrieve_ttl_seconds", ConfigType::kInt, "86400",
     "W2: seconds a delayed-retrieval URL (Prefer: respond-async) works.", 1, 604800},
    {"provision.device_rate_per_minute", ConfigType::kInt, "10",
     "W2: provisioning requests a device id may make a minute (in bursts as large), per node; 0: no limit.", 0,
     1000000},
    {"provision.address_rate_per_minute", ConfigType::kInt, "6000",
     "W2: provisioning requests one client address may make a minute, per node (a factory's devices may share one); "
     "0: no limit.",
     0, 100000000},
    {"bulk.manifest_dir", ConfigType::kPath, "{data_dir}/imports",
     "W3: where manifests wait for their import (deleted when it ends); shared by the nodes that run imports."},
    {"bulk.verifier_dir", ConfigType::kPath, "",
     "W3: folder of Microchip manifest signer certificates (.crt/.pem); empty: Microchip imports are refused."},
    {"bulk.inbound", ConfigType::kUrl, "file://{data_dir}/inbound",
     "W3: store watched for manifests at imports/<supplier>/<profile>/<file>: file://PATH or s3://BUCKET?...."},
    {"bulk.scan_seconds", ConfigType::kInt, "60", "W3: how often bulk.inbound is looked at for new manifests.", 5,
     86400},
    {"bulk.batch_size", ConfigType::kInt, "2000",
     "W3: manifest entries written per transaction; an interrupted import resumes with the batches not committed.", 1,
     100000},
    {"bulk.writers", ConfigType::kInt, "2",
     "W3: batches an import writes at once, each in its own transaction (PostgreSQL works on each with a core).", 1,
     16},
    {"renewal.cert_path", ConfigType::kString, "/etc/certfleet/certs",
     "W4: folder of a host's certificate ({host_id}.crt) on the host, unless the host names its own."},
    {"renewal.key_path", ConfigType::kString, "/etc/certfleet/private",
     "W4: folder of a host's private key ({host_id}.key) on the host, unless the host names its own."},
    {"renewal.cacert_path", ConfigType::kString, "/etc/certfleet/certs",
     "W4: folder of a host's CA chain (ca_chain_certificate.crt) on the host, unless the host names its own."},
    {"renewal.threshold_days", ConfigType::kInt, "30",
     "W4: a host's certificate is renewed this many days before it expires, unless the host says otherwise.", 1, 365},
    {"renewal.key_type", ConfigType::kString, "ec-p256",
     "W4: the key hosts make (ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096, ed25519), unless the host says."},
    {"renewal.profile", ConfigType::kString, "host",
     "W4: host (serverAuth and clientAuth) or client (clientAuth), unless the host says."},
    {"renewal.reload_command", ConfigType::kString, "",
     "W4: the command agents run after writing a new certificate (empty: none), unless the host names one."},
    {"renewal.ca", ConfigType::kString, "",
     "W4: the intermediate CA (its fqdn) that issues host certificates; empty: agents cannot enroll yet."},
    {"renewal.validity_days", ConfigType::kInt, "90", "W4: how long a host certificate is valid.", 1, 825},
    {"renewal.token_ttl_hours", ConfigType::kInt, "24",
     "W4: how long an agent's enrollment token (certfleet host token) stays valid.", 1, 720},
    {"renewal.schedule", ConfigType::kString, "15 3,15 * * *",
     "W4: when due hosts are renewed (cron in UTC, or @every 10m); POST /v1/renewals/run starts a run at once."},
    {"renewal.concurrency", ConfigType::kInt, "200", "W4: renewals at work at once, over all nodes.", 1, 10000},
    {"renewal.deadline_seconds", ConfigType::kInt, "600",
     "W4: how long an agent has for one attempt (take the task, submit the CSR, deploy, validate).", 5, 86400},
    {"renewal.max_attempts", ConfigType::kInt, "3", "W4: attempts of a renewal before it fails and people are told.", 1,
     20},
    {"renewal.backoff_seconds", ConfigType::kInt, "60",
     "W4: wait before a renewal's second attempt; it doubles for each further one (at most an hour).", 1, 3600},
    {"renewal.grace_seconds", ConfigType::kInt, "86400",
     "W4: how long a host's replaced certificate stays valid before it is revoked (reason superseded).", 0,
     int64_t{90} * 86400},
    {"renewal.notify", ConfigType::kString, "",
     "W4: addresses (comma-separated) mailed when a renewal fails; empty: nobody (the event and log still say)."},
    {"renewal.sender", ConfigType::kString, "certfleet@localhost", "W4: From address of renewal failure mails."},
    {"server.listen", ConfigType::kString, "127.0.0.1:8443",
     "HTTPS listen address host:port (port 0 picks a free port)."},
    {"server.tls_cert", ConfigType::kPath, "{data_dir}/tls/server.pem", "Server certificate chain (PEM)."},
    {"server.tls_key", ConfigType::kPath, "{data_dir}/tls/server.key", "Server private key (PEM)."},
    {"server.tls_sans", ConfigType::kString, "localhost,127.0.0.1",
     "Names and IP addresses `certfleet init` puts in the server certificate, comma-separated."},
    {"server.client_ca", ConfigType::kPath, "",
     "PEM file of CAs whose client certificates are accepted (mTLS routes); empty: none requested."},
    {"server.threads", ConfigType::kInt, "0",
     "Threads serving HTTPS connections and running handlers; 0: twice the CPU cores, at least 4.", 0, 256},
    {"server.body_limit", ConfigType::kInt, "1048576", "Largest request body in bytes; larger ones get 413.", 1024,
     1024 * kMiB},
    {"server.header_timeout", ConfigType::kInt, "10",
     "Seconds a client has to send the TLS handshake and request headers.", 1, 3600},
    {"server.body_timeout", ConfigType::kInt, "60", "Seconds a client has to send the request body.", 1, 3600},
    {"server.idle_timeout", ConfigType::kInt, "60", "Seconds an idle keep-alive connection stays open.", 1, 3600},
    {"server.shutdown_grace", ConfigType::kInt, "5", "Seconds in-flight requests get to finish on SIGTERM/SIGINT.", 0,
     300},
    {"distribution.inbound", ConfigType::kUrl, "file://{data_dir}/inbound",
     "W5 inbound store: file://PATH or s3://BUCKET?endpoint=http(s)://host:port&region=REGION."},
    {"distribution.prefix", ConfigType::kString, "Inbound/", "Where the warehouse folders are in the inbound store."},
    {"distribution.scan_seconds", ConfigType::kInt, "60", "How often the inbound store is scanned for changes.", 5,
     86400},
    {"distribution.send_minutes", ConfigType::kInt, "15", "How often pending files are mailed to the warehouses.", 1,
     10080},
    {"distribution.download_workers", ConfigType::kInt, "10", "Concurrent downloads from the inbound store.", 1, 64},
    {"distribution.zip_max_bytes", ConfigType::kInt, "8000000", "Largest ZIP attached to one mail.", 65536,
     1024 * kMiB},
    {"distribution.mail_max_bytes", ConfigType::kInt, "10000000",
     "Largest whole mail (headers, text and base64 attachment), e.g. SES's 10 MB.", 131072, 1024 * kMiB},
    {"distribution.max_attempts", ConfigType::kInt, "5",
     "Runs a FAILED_EMAIL record is retried in before it stays failed and the operators are told.", 1, 100},
    {"distribution.send_tries", ConfigType::kInt, "3", "Tries per mail within one run when the server is unavailable.",
     1, 10},
    {"distribution.send_backoff_ms", ConfigType::kInt, "1000", "Wait before the second try of a mail; doubles after.",
     0, 600000},
    {"distribution.sender", ConfigType::kString, "certfleet@localhost", "From address of distribution mails."},
    {"distribution.default_recipient", ConfigType::kString, "",
     "Recipient for warehouses without their own (PUT /v1/distribution/warehouses/{name})."},
    {"distribution.operators", ConfigType::kString, "",
     "Address told when records fail for good; empty: nobody (the log and /metrics still show it)."},
    {"distribution.work_dir", ConfigType::kPath, "{data_dir}/tmp/distribution",
     "Folder the ZIPs are built in; each run's files are removed when it ends."},
    {"s3.access_key_id", ConfigType::kString, "", "S3 access key; empty: AWS_ACCESS_KEY_ID."},
    {"s3.secret_access_key", ConfigType::kSecret, "", "S3 secret key; empty: AWS_SECRET_ACCESS_KEY."},
    {"s3.session_token", ConfigType::kSecret, "", "S3 session token; empty: AWS_SESSION_TOKEN."},
    {"jobs.workers", ConfigType::kInt, "4", "Jobs run at once by this node, over all kinds.", 1, 1024},
    {"jobs.lease_seconds", ConfigType::kInt, "60",
     "A running job's lease; renewed while it runs, re-run by another worker once expired.", 5, 86400},
    {"jobs.poll_ms", ConfigType::kInt, "500", "How often idle workers look for due jobs, in milliseconds.", 10, 60000},
    {"jobs.retention_days", ConfigType::kInt, "7",
     "Finished (done) jobs older than this are deleted daily; dead jobs are kept.", 1, 3650},
};

const ConfigKey* FindKey(std::string_view name) {
  for (const auto& k : kKeys) {
    if (k.name == name) return &k;
  }
  return nullptr;
}

Result<void> Validate(const ConfigKey& key, const std::string& value, const std::string& source) {
  if (key.type != ConfigType::kInt) {
    if (value.find('\0') != std::string::npos || value.find('\n') != std::string::npos) {
      return MakeError(ErrorCode::kInvalidArgument,
                       fmt::format("config {} (from {}): control characters", key.name, source));
    }
    return Ok();
  }
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (ec != std::errc() || ptr != value.data() + value.size()) {
    return MakeError(ErrorCode::kInvalidArgument,
                     fmt::format("config {} (from {}): '{}' is not an integer", key.name, source, value));
  }
  if (v < key.min || v > key.max) {
    return MakeError(ErrorCode::kInvalidArgument,
                     fmt::format("config {} (from {}): {} is outside {}..{}", key.name, source, v, key.min, key.max));
  }
  return Ok();
}

// Flattens a TOML table into dotted key -> string value.
Result<void> ReadToml(const toml::table& table, const std::string& prefix, std::map<std::string, std::string>& out) {
  for (const auto& [k, node] : table) {
    std::string name = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (const auto* sub = node.as_table()) {
      CF_RETURN_IF_ERROR(ReadToml(*sub, name, out));
    } else if (auto s = node.value<std::string>(); s && node.is_string()) {
      out[name] = *s;
    } else if (auto i = node.value<int64_t>(); i && node.is_integer()) {
      out[name] = std::to_string(*i);
    } else if (auto b = node.value<bool>(); b && node.is_boolean()) {
      out[name] = *b ? "true" : "false";
    } else {
      return MakeError(ErrorCode::kInvalidArgument,
                       fmt::format("config file: {} must be a string or an integer", name));
    }
  }
  return Ok();
}

std::string ExpandDataDir(std::string value, const std::string& data_dir) {
  const std::string marker = "{data_dir}";
  for (size_t pos; (pos = value.find(marker)) != std::string::npos;) value.replace(pos, marker.size(), data_dir);
  return value;
}

}  // namespace

std::span<const ConfigKey> Config::Keys() { return kKeys; }

std::string Config::EnvName(std::string_view key) {
  std::string out = "CERTFLEET_";
  for (char c : key) out.push_back(c == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  return out;
}

std::string Config::FlagName(std::string_view key) {
  std::string out(key);
  std::replace(out.begin(), out.end(), '.', '-');
  std::replace(out.begin(), out.end(), '_', '-');
  return out;
}

std::map<std::string, std::string> Config::ProcessEnvironment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv(*e);
    if (auto eq = kv.find('='); eq != std::string_view::npos) env.emplace(kv.substr(0, eq), kv.substr(eq + 1));
  }
  return env;
}

Result<Config> Config::Load(const Sources& sources) {
  Config cfg;
  for (const auto& k : kKeys) cfg.values_[std::string(k.name)] = Entry{std::string(k.default_value), "default"};

  auto apply = [&](const std::string& name, const std::string& value, const std::string& source) -> Result<void> {
    const ConfigKey* key = FindKey(name);
    if (!key)
      return MakeError(ErrorCode::kInvalidArgument, fmt::format("unknown config key '{}' (from {})", name, source));
    CF_RETURN_IF_ERROR(Validate(*key, value, source));
    cfg.values_[name] = Entry{value, source};
    return Ok();
  };

  std::string file = sources.file;
  if (file.empty()) {
    if (auto it = sources.env.find("CERTFLEET_CONFIG"); it != sources.env.end()) file = it->second;
  }
  bool explicit_file = !file.empty();
  if (!explicit_file && std::filesystem::exists("certfleet.toml")) file = "certfleet.toml";
  if (!file.empty()) {
    if (!std::filesystem::exists(file)) {
      return MakeError(ErrorCode::kInvalidArgument, fmt::format("config file {} does not exist", file));
    }
    toml::table parsed;
    try {
      parsed = toml::parse_file(file);
    } catch (const toml::parse_error& err) {
      return MakeError(ErrorCode::kInvalidArgument,
                       fmt::format("config file {} line {}: {}", file, err.source().begin.line, err.description()));
    }
    std::map<std::string, std::string> flat;
    CF_RETURN_IF_ERROR(ReadToml(parsed, "", flat));
    for (const auto& [name, value] : flat) CF_RETURN_IF_ERROR(apply(name, value, "file"));
    cfg.file_ = file;
  }
  for (const auto& k : kKeys) {
    if (auto it = sources.env.find(EnvName(k.name)); it != sources.env.end()) {
      CF_RETURN_IF_ERROR(apply(std::string(k.name), it->second, "env"));
    }
  }
  for (const auto& [name, value] : sources.overrides) CF_RETURN_IF_ERROR(apply(name, value, "flag"));

  const std::string data_dir = cfg.values_["data_dir"].value;
  for (auto& [name, entry] : cfg.values_) entry.value = ExpandDataDir(entry.value, data_dir);
  static constexpr std::string_view kLevels[] = {"debug", "info", "warn", "error"};
  if (std::find(std::begin(kLevels), std::end(kLevels), cfg.Get("log_level")) == std::end(kLevels)) {
    return MakeError(ErrorCode::kInvalidArgument, "config log_level: use debug, info, warn or error");
  }
  return cfg;
}

Config Config::ForTest(const std::map<std::string, std::string>& values) {
  Sources s;
  s.file = "";
  s.overrides = values;
  auto cfg = Load(s);
  assert(cfg.ok() && "test configuration must be valid");
  return std::move(cfg).value();
}

const std::string& Config::Get(std::string_view key) const {
  auto it = values_.find(key);
  assert(it != values_.end() && "config key must be declared in kKeys");
  return it->second.value;
}

int64_t Config::GetInt(std::string_view key) const {
  const std::string& v = Get(key);
  int64_t out = 0;
  std::from_chars(v.data(), v.data() + v.size(), out);
  return out;
}

const std::string& Config::SourceOf(std::string_view key) const {
  auto it = values_.find(key);
  assert(it != values_.end() && "config key must be declared in kKeys");
  return it->second.source;
}

std::string Config::Show() const {
  std::string out;
  std::string section;
  for (const auto& k : kKeys) {
    std::string_view name = k.name;
    std::string this_section;
    if (auto dot = name.find('.'); dot != std::string_view::npos) {
      this_section = std::string(name.substr(0, dot));
      name = name.substr(dot + 1);
    }
    if (this_section != section) {
      out += fmt::format("\n[{}]\n", this_section);
      section = this_section;
    }
    std::string value = Get(k.name);
    if (k.type == ConfigType::kUrl) value = MaskUrlCredentials(value);
    if (k.type == ConfigType::kSecret && !value.empty()) value = "***";
    std::string shown = k.type == ConfigType::kInt ? value : fmt::format("\"{}\"", value);
    out += fmt::format("{} = {}  # {}\n", name, shown, SourceOf(k.name));
  }
  return out;
}

std::string MaskUrlCredentials(std::string_view url) {
  auto scheme = url.find("://");
  if (scheme == std::string_view::npos) return std::string(url);
  auto authority_start = scheme + 3;
  auto authority_end = url.find_first_of("/?#", authority_start);
  auto at = url.rfind('@', authority_end == std::string_view::npos ? url.size() : authority_end);
  if (at == std::string_view::npos || at < authority_start) return std::string(url);
  auto colon = url.find(':', authority_start);
  if (colon == std::string_view::npos || colon > at) return std::string(url);
  return std::string(url.substr(0, colon + 1)) + "***" + std::string(url.substr(at));
}

std::vector<std::string> SplitList(std::string_view s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(',', start);
    if (end == std::string_view::npos) end = s.size();
    std::string item(s.substr(start, end - start));
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    if (!item.empty()) out.push_back(item);
    start = end + 1;
  }
  return out;
}

}  // namespace certfleet
