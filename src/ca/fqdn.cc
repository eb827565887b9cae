#include "ca/fqdn.h"

#include <fmt/format.h>
#include <libpsl.h>

#include <algorithm>
#include <charconv>

namespace certfleet::ca {
namespace {

const psl_ctx_t* Psl() {
  static const psl_ctx_t* ctx = [] {
    const psl_ctx_t* latest = psl_latest(nullptr);
    return latest ? latest : psl_builtin();
  }();
  return ctx;
}

}  // namespace

std::optional<std::string> RegistrableDomain(std::string_view fqdn) {
  std::string name(fqdn);
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  const char* reg = psl_registrable_domain(Psl(), name.c_str());
  if (!reg) return std::nullopt;
  return std::string(reg);
}

int LabelsBelow(std::string_view fqdn, std::string_view domain) {
  if (fqdn.size() <= domain.size()) return 0;
  std::string_view head = fqdn.substr(0, fqdn.size() - domain.size());
  return static_cast<int>(std::count(head.begin(), head.end(), '.'));
}

std::string DefaultServerParent(std::string_view fqdn, std::string_view registrable) {
  if (LabelsBelow(fqdn, registrable) >= 2) return std::string(fqdn.substr(fqdn.find('.') + 1));
  return std::string(registrable);
}

std::string NextGeneration(std::string_view fqdn) {
  const size_t dot = std::min(fqdn.find('.'), fqdn.size());
  std::string_view label = fqdn.substr(0, dot);
  int generation = 1;
  if (const size_t g = label.rfind("-g"); g != std::string_view::npos && g + 2 < label.size()) {
    std::string_view digits = label.substr(g + 2);
    int n = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (ec == std::errc() && end == digits.data() + digits.size() && n >= 2) {
      generation = n;
      label = label.substr(0, g);
    }
  }
  return fmt::format("{}-g{}{}", label, generation + 1, fqdn.substr(dot));
}

}  // namespace certfleet::ca
