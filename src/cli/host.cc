// `certfleet host token ID` and `certfleet host reactivate ID`.
#include <fmt/format.h>

#include <iostream>

#include "cli/commands.h"
#include "renewal/setup.h"
#include "server/server.h"

namespace certfleet::cli {

int HostToken(const Config& config, const Clock& clock, const std::string& host_id, bool reactivate) {
  auto fail = [reactivate](const Error& e) {
    std::cerr << "certfleet host " << (reactivate ? "reactivate" : "token") << ": " << e.message << "\n";
    return 1;
  };
  auto options = renewal::HostOptions(config);
  if (!options.ok()) return fail(options.error());
  auto st = server::OpenStore(config);
  if (!st.ok()) return fail(st.error());
  renewal::HostService hosts(**st, clock, *options);
  auto token = reactivate ? hosts.Reactivate(host_id, CliActor()) : hosts.CreateToken(host_id, CliActor());
  if (!token.ok()) return fail(token.error());
  std::cerr << fmt::format("enrollment token for host {}, single use, valid {} hours; it is shown once:\n", host_id,
                           config.GetInt("renewal.token_ttl_hours"));
  std::cout << *token << "\n";
  return 0;
}

}  // namespace certfleet::cli
