#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace certfleet {

// How a configuration value is checked and shown.
enum class ConfigType { kString, kInt, kUrl /* credentials masked when shown */, kPath, kSecret /* never shown */ };

// One configuration key. Every key can be set in certfleet.toml (`server.listen` is
// `listen` under `[server]`), by the environment (`CERTFLEET_SERVER_LISTEN`) and by a
// flag (`--server-listen`); later sources win: default < file < environment < flag.
struct ConfigKey {
  std::string_view name;
  ConfigType type;
  std::string_view default_value;  // may refer to {data_dir}
  std::string_view help;
  int64_t min = 0;  // for kInt
  int64_t max = 0;  // for kInt
};

// The effective configuration. Immutable after Load; thread-safe to read.
class Config {
 public:
  struct Sources {
    std::string file;                              // empty: ./certfleet.toml if present
    std::map<std::string, std::string> env;        // the process environment
    std::map<std::string, std::string> overrides;  // from flags, by key name
  };

  // The keys core owns (data_dir, log_level, public_url); every module declares its own
  // (ConfigKeys() in its setup.h), and the composition root gives them all to Load.
  static std::span<const ConfigKey> CoreKeys();
  static std::string EnvName(std::string_view key);   // CERTFLEET_SERVER_LISTEN
  static std::string FlagName(std::string_view key);  // server-listen
  // The environment of this process as a map, for Sources::env.
  static std::map<std::string, std::string> ProcessEnvironment();

  // Reads all sources for `keys` (plus CoreKeys) and validates every value; a bad value
  // names its key and source, an unknown key is refused.
  static Result<Config> Load(const Sources& sources, std::span<const ConfigKey> keys);
  // Defaults plus the given values, for tests.
  static Config ForTest(std::span<const ConfigKey> keys, const std::map<std::string, std::string>& values);
  // Every key of this configuration, keys outside a section first.
  std::span<const ConfigKey> keys() const { return keys_; }

  const std::string& Get(std::string_view key) const;
  int64_t GetInt(std::string_view key) const;
  // Where a key's value came from: default, file, env or flag.
  const std::string& SourceOf(std::string_view key) const;
  // Key = value lines as TOML, with credentials in URLs masked.
  std::string Show() const;
  const std::string& file() const { return file_; }

 private:
  struct Entry {
    std::string value;
    std::string source;
  };
  std::vector<ConfigKey> keys_;
  std::map<std::string, Entry, std::less<>> values_;
  std::string file_;
};

// The items of a comma-separated list value, trimmed; empty ones dropped.
std::vector<std::string> SplitList(std::string_view s);

// "postgresql://u:secret@h/db" -> "postgresql://u:***@h/db"; a password in the query
// ("?password=secret", as libpq takes it) too; each URL of a comma-separated list.
std::string MaskUrlCredentials(std::string_view url);

}  // namespace certfleet
