// `certfleet host token ID`, `certfleet host reactivate ID` and `certfleet host credential`.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <iostream>

#include "cli/commands.h"
#include "core/text.h"
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

int HostCredential(const Config& config, const Clock& clock, renewal::CredentialSpec spec, const std::string& ttl) {
  auto fail = [](const Error& e) {
    std::cerr << "certfleet host credential: " << e.message << "\n";
    return 1;
  };
  auto parsed = ParseDuration("--ttl", ttl, renewal::HostService::kMaxCredentialTtl);
  if (!parsed.ok()) return fail(parsed.error());
  spec.ttl = *parsed;
  auto options = renewal::HostOptions(config);
  if (!options.ok()) return fail(options.error());
  auto st = server::OpenStore(config);
  if (!st.ok()) return fail(st.error());
  renewal::HostService hosts(**st, clock, *options);
  auto minted = hosts.CreateCredential(spec, CliActor());
  if (!minted.ok()) return fail(minted.error());
  const store::EnrollmentCredential& c = minted->credential;
  std::cerr << fmt::format(
      "enrollment credential {}: enrolls up to {} new hosts matching {}, until {}; it is shown once:\n", c.id,
      c.max_uses, fmt::join(spec.hosts, " "), FormatRfc3339(c.expires_at));
  std::cout << minted->secret << "\n";
  return 0;
}

}  // namespace certfleet::cli
