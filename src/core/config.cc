#include "core/config.h"

#include <fmt/format.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <charconv>
#include <filesystem>

#include "core/text.h"

extern char** environ;

namespace certfleet {
namespace {

constexpr ConfigKey kCoreKeys[] = {
    {"data_dir", ConfigType::kPath, "./var",
     "Folder for the database, TLS files, blobs and outbox of the embedded defaults."},
    {"log_level", ConfigType::kString, "info", "debug, info, warn or error."},
    {"public_url", ConfigType::kString, "",
     "Base URL clients reach this server at, put in certificates (CRL and OCSP) unless ca.revocation_url is set; "
     "empty: https://<server.listen>."},
};

const ConfigKey* FindKey(std::span<const ConfigKey> keys, std::string_view name) {
  for (const auto& k : keys) {
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

std::span<const ConfigKey> Config::CoreKeys() { return kCoreKeys; }

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

Result<Config> Config::Load(const Sources& sources, std::span<const ConfigKey> keys) {
  Config cfg;
  cfg.keys_.assign(keys.begin(), keys.end());
  for (const auto& core : kCoreKeys) {
    if (!FindKey(keys, core.name)) cfg.keys_.push_back(core);
  }
  // Keys outside a section first: in TOML (config show) they must come before any [section].
  std::stable_partition(cfg.keys_.begin(), cfg.keys_.end(),
                        [](const ConfigKey& k) { return k.name.find('.') == std::string_view::npos; });
  for (const auto& k : cfg.keys_) {
    auto [it, added] = cfg.values_.emplace(std::string(k.name), Entry{std::string(k.default_value), "default"});
    if (!added) return MakeError(ErrorCode::kInternal, fmt::format("config key {} is declared twice", k.name));
  }

  auto apply = [&](const std::string& name, const std::string& value, const std::string& source) -> Result<void> {
    const ConfigKey* key = FindKey(cfg.keys_, name);
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
  for (const auto& k : cfg.keys_) {
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

Config Config::ForTest(std::span<const ConfigKey> keys, const std::map<std::string, std::string>& values) {
  Sources s;
  s.file = "";
  s.overrides = values;
  auto cfg = Load(s, keys);
  assert(cfg.ok() && "test configuration must be valid");
  return std::move(cfg).value();
}

const std::string& Config::Get(std::string_view key) const {
  auto it = values_.find(key);
  assert(it != values_.end() && "config key must be declared by its module");
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
  assert(it != values_.end() && "config key must be declared by its module");
  return it->second.source;
}

std::string Config::Show() const {
  std::string out;
  std::string section;
  for (const auto& k : keys_) {
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

namespace {

// The password of `url`'s authority (user:password@host) masked.
std::string MaskUserinfo(std::string_view url) {
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

// Every password=… parameter of `url`'s query masked.
std::string MaskQueryPassword(std::string url) {
  constexpr std::string_view kParam = "password=";
  const size_t query = url.find('?');
  if (query == std::string::npos) return url;
  for (size_t at = query; (at = AsciiLower(url).find(kParam, at + 1)) != std::string::npos;) {
    if (url[at - 1] != '?' && url[at - 1] != '&') continue;
    const size_t value = at + kParam.size();
    const size_t end = std::min(url.find_first_of("&#", value), url.size());
    url.replace(value, end - value, "***");
  }
  return url;
}

}  // namespace

std::string MaskUrlCredentials(std::string_view url) {
  if (const size_t comma = url.find(','); comma != std::string_view::npos) {
    return MaskUrlCredentials(url.substr(0, comma)) + "," + MaskUrlCredentials(url.substr(comma + 1));
  }
  return MaskQueryPassword(MaskUserinfo(url));
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
