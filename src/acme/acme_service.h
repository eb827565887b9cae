#pragma once

#include <atomic>
#include <boost/json/object.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "acme/jws.h"
#include "core/clock.h"
#include "core/result.h"
#include "store/acme_repo.h"
#include "store/store.h"

namespace certfleet::acme {

// The ACME server (RFC 8555), being built: nonces, accounts and the checks every request
// passes. Errors carry the RFC's problem type in Error::reason ("badNonce", "malformed", …).
// Thread-safe; every state is in the store, so any node answers any request.
class AcmeService {
 public:
  struct Options {
    std::string base_url;  // what clients reach certfleet at: the prefix of every ACME URL
    std::string ca;        // the CA that issues (acme.ca); empty: ACME is off
    // How long a nonce may wait for its request (acme.nonce_minutes).
    std::chrono::minutes nonce_ttl{60};
  };
  // The profile served until ACME profiles are configurable.
  static constexpr std::string_view kDefaultProfile = "default";

  AcmeService(store::Store& store, const Clock& clock, Options options);

  bool enabled() const { return !options_.ca.empty(); }
  // base_url + "/acme/<profile>/<path>".
  std::string Url(std::string_view profile, std::string_view path) const;
  // kNotFound (reason malformed) for a profile that is not served.
  Result<void> CheckProfile(std::string_view profile) const;
  boost::json::object Directory(std::string_view profile) const;

  Result<std::string> NewNonce();

  // A request that passed RFC 8555 6.2-6.5: a supported algorithm, its url this request's,
  // the key (jwk for new-account, else the kid's valid account), the signature, a fresh nonce.
  struct Checked {
    Jws jws;
    std::optional<store::AcmeAccountRecord> account;  // for kid requests
  };
  Result<Checked> Check(std::string_view profile, std::string_view path, std::string_view body, bool wants_jwk);

  struct AccountAnswer {
    store::AcmeAccountRecord account;
    bool created = false;
  };
  // newAccount (RFC 8555 7.3): the existing account of the key, or a new one;
  // onlyReturnExisting finds only. Audited as acme.account.create.
  Result<AccountAnswer> NewAccount(std::string_view profile, const Checked& request);
  // POST to the account URL: POST-as-GET, a contact update or deactivation (7.3.2, 7.3.6).
  // The account id at the end of an account URL path segment; nullopt if it is not one.
  static std::optional<int64_t> ParseAccountId(std::string_view text);
  Result<store::AcmeAccountRecord> UpdateAccount(std::string_view profile, int64_t id, const Checked& request);
  boost::json::object AccountJson(std::string_view profile, const store::AcmeAccountRecord& account) const;

 private:
  store::Store& store_;
  const Clock& clock_;
  const Options options_;
  std::atomic<uint64_t> nonces_made_{0};
};

}  // namespace certfleet::acme
