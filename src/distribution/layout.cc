#include "distribution/layout.h"

#include <cctype>
#include <vector>

#include "blob/blob_store.h"
#include "store/distribution_repo.h"

namespace certfleet::distribution {
namespace {

constexpr size_t kMaxWarehouseName = 64;
constexpr size_t kEuiHexDigits = 16;  // an EUI-64
constexpr size_t kEuiSuffix = 5;      // gateway files are named by the EUI's last five digits
constexpr size_t kMaxSharedName = 128;

bool IsNameChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'; }

bool IsHex(std::string_view s) {
  for (char c : s) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  }
  return true;
}

// servertrust_<…>.pem or endpoints_<…>.json, with a plain name in between.
bool IsSharedFile(std::string_view name) {
  if (name.size() > kMaxSharedName) return false;
  for (const auto& [head, tail] : {std::pair<std::string_view, std::string_view>{"servertrust_", ".pem"},
                                   std::pair<std::string_view, std::string_view>{"endpoints_", ".json"}}) {
    if (name.size() > head.size() + tail.size() && name.starts_with(head) && name.ends_with(tail)) {
      const std::string_view middle = name.substr(head.size(), name.size() - head.size() - tail.size());
      bool plain = true;
      for (char c : middle) plain = plain && IsNameChar(c);
      if (plain) return true;
    }
  }
  return false;
}

}  // namespace

bool IsWarehouseName(std::string_view name) {
  if (name.empty() || name.size() > kMaxWarehouseName || name.front() == '.') return false;
  for (char c : name) {
    if (!IsNameChar(c)) return false;
  }
  return true;
}

std::variant<InboundFile, std::string> Classify(std::string_view key, std::string_view prefix) {
  if (!key.starts_with(prefix)) return std::string("outside the inbound prefix");
  if (!blob::CheckKey(key).ok()) return std::string("not a safe object key");
  std::vector<std::string_view> parts;
  std::string_view rest = key.substr(prefix.size());
  while (!rest.empty()) {
    const size_t slash = rest.find('/');
    parts.push_back(rest.substr(0, slash));
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
  }
  if (parts.empty() || !IsWarehouseName(parts[0])) return std::string("not under a warehouse folder");
  if (parts.size() == 2) {
    if (!IsSharedFile(parts[1])) return std::string("not a servertrust_*.pem or endpoints_*.json file");
    return InboundFile{std::string(parts[0]), std::string(store::kSharedFiles), std::string(parts[1])};
  }
  if (parts.size() == 3) {
    const std::string_view eui = parts[1];
    const std::string_view file = parts[2];
    if (eui.size() != kEuiHexDigits || !IsHex(eui)) return std::string("the gateway folder is not a 16-digit EUI");
    const std::string_view stem = file.substr(0, file.rfind('.'));
    const std::string_view ext = file.substr(stem.size());
    if (!EqualsIgnoreCase(stem, eui.substr(kEuiHexDigits - kEuiSuffix)) || (ext != ".pem" && ext != ".key")) {
      return std::string("a gateway file must be <last 5 of EUI>.pem or .key");
    }
    return InboundFile{std::string(parts[0]), std::string(eui), std::string(file)};
  }
  return std::string("wrong depth for the layout");
}

}  // namespace certfleet::distribution
