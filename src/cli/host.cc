// `certfleet host token ID` and the W4 host options from the configuration.
#include <fmt/format.h>

#include <iostream>

#include "cli/commands.h"

namespace certfleet::cli {

Result<renewal::HostService::Options> HostOptions(const Config& config) {
  renewal::HostService::Options options;
  renewal::HostSettings& d = options.defaults;
  d.cert_path = config.Get("renewal.cert_path");
  d.key_path = config.Get("renewal.key_path");
  d.cacert_path = config.Get("renewal.cacert_path");
  d.key_type = config.Get("renewal.key_type");
  d.profile = config.Get("renewal.profile");
  d.threshold_days = config.GetInt("renewal.threshold_days");
  if (std::string command = config.Get("renewal.reload_command"); !command.empty()) d.reload_command = command;
  CF_RETURN_IF_ERROR(renewal::CheckPath("renewal.cert_path", d.cert_path));
  CF_RETURN_IF_ERROR(renewal::CheckPath("renewal.key_path", d.key_path));
  CF_RETURN_IF_ERROR(renewal::CheckPath("renewal.cacert_path", d.cacert_path));
  CF_RETURN_IF_ERROR(renewal::CheckKeyType(d.key_type));
  CF_RETURN_IF_ERROR(renewal::CheckProfile(d.profile));
  options.token_ttl_ms = config.GetInt("renewal.token_ttl_hours") * 3600 * 1000;
  return options;
}

renewal::RenewalService::Options RenewalOptions(const Config& config) {
  renewal::RenewalService::Options o;
  o.concurrency = static_cast<int>(config.GetInt("renewal.concurrency"));
  o.deadline_ms = config.GetInt("renewal.deadline_seconds") * 1000;
  o.max_attempts = static_cast<int>(config.GetInt("renewal.max_attempts"));
  o.backoff_ms = config.GetInt("renewal.backoff_seconds") * 1000;
  o.grace_ms = config.GetInt("renewal.grace_seconds") * 1000;
  o.notify = SplitList(config.Get("renewal.notify"));
  o.sender = config.Get("renewal.sender");
  return o;
}

int HostToken(const Config& config, const Clock& clock, const std::string& host_id) {
  auto fail = [](const Error& e) {
    std::cerr << "certfleet host token: " << e.message << "\n";
    return 1;
  };
  auto options = HostOptions(config);
  if (!options.ok()) return fail(options.error());
  auto st = OpenStore(config);
  if (!st.ok()) return fail(st.error());
  renewal::HostService hosts(**st, clock, *options);
  auto token = hosts.CreateToken(host_id, CliActor());
  if (!token.ok()) return fail(token.error());
  std::cerr << fmt::format("enrollment token for host {}, single use, valid {} hours; it is shown once:\n", host_id,
                           config.GetInt("renewal.token_ttl_hours"));
  std::cout << *token << "\n";
  return 0;
}

}  // namespace certfleet::cli
