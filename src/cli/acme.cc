// `certfleet acme eab create`: external account binding credentials for an ACME profile.
#include <fmt/format.h>

#include <iostream>

#include "acme/eab.h"
#include "acme/profiles.h"
#include "acme/setup.h"
#include "cli/commands.h"
#include "pki/file/file_key_backend.h"
#include "server/server.h"

namespace certfleet::cli {

int AcmeEabCreate(const Config& config, const Clock& clock, const std::string& profile) {
  auto fail = [](const Error& e) {
    std::cerr << "certfleet acme eab create: " << e.message << "\n";
    return 1;
  };
  auto st = server::OpenStore(config);
  if (!st.ok()) return fail(st.error());
  auto master_key = pki::file::LoadMasterKey(config.Get("master_key"), config.Get("master_key_file"), false);
  if (!master_key.ok()) return fail(master_key.error());
  const acme::AcmeService::Options options = acme::AcmeOptions(config, config.Get("public_url"), *master_key);
  const std::optional<acme::Profile> configured =
      options.ca.empty() ? std::nullopt : std::optional(acme::ConfiguredProfile(options.ca, options.validity_days));
  auto found = acme::FindProfile(**st, configured ? &*configured : nullptr, profile);
  if (!found.ok()) return fail(found.error());
  auto eab = acme::CreateEab(**st, clock, *master_key, found->name, CliActor());
  if (!eab.ok()) return fail(eab.error());
  // Shown once: the store keeps the key sealed.
  std::cout << fmt::format("kid {}\nhmac_key {}\nprofile {}\n", eab->kid, eab->hmac_key, eab->profile);
  std::cerr << "give the kid and hmac_key to the ACME client (lego --eab --kid … --hmac …); they bind one account\n";
  return 0;
}

}  // namespace certfleet::cli
