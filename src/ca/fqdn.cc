#include "ca/fqdn.h"

#include <libpsl.h>

#include <algorithm>

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

}  // namespace certfleet::ca
