#include "acme/setup.h"

namespace certfleet::acme {
namespace {

constexpr ConfigKey kKeys[] = {
    {"acme.ca", ConfigType::kString, "",
     "ACME (being built): the CA (fqdn) that issues to ACME clients; empty: no ACME directory is served."},
    {"acme.nonce_minutes", ConfigType::kInt, "60", "How long an ACME nonce waits for the request that uses it.", 1,
     1440},
};

}  // namespace

std::span<const ConfigKey> ConfigKeys() { return kKeys; }

AcmeService::Options AcmeOptions(const Config& config, std::string_view public_url) {
  AcmeService::Options o;
  o.base_url = std::string(public_url);
  o.ca = config.Get("acme.ca");
  o.nonce_ttl = std::chrono::minutes(config.GetInt("acme.nonce_minutes"));
  return o;
}

}  // namespace certfleet::acme
