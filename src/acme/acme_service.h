#pragma once

#include <atomic>
#include <boost/json/object.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "acme/eab.h"
#include "acme/jws.h"
#include "acme/local_nonces.h"
#include "acme/profiles.h"
#include "acme/validation.h"
#include "core/clock.h"
#include "core/read_cache.h"
#include "core/result.h"
#include "issuance/issuer.h"
#include "jobs/worker_pool.h"
#include "store/acme_repo.h"
#include "store/store.h"

namespace certfleet::acme {

// An answer to an ACME request: a JSON resource with its status and headers.
struct AcmeAnswer {
  int status = 200;
  boost::json::object body;
  std::optional<std::string> location;
  std::vector<std::string> links;  // Link header values: "<url>;rel=\"up\""
  std::optional<int> retry_after;  // seconds, for resources still being worked on
};

// A certificate chain to download (RFC 8555 7.4.2).
struct AcmeCertificate {
  std::string pem;
  std::vector<std::string> links;  // the alternate chains and the index
};

// The ACME server (RFC 8555), being built: nonces, accounts, orders, authorizations,
// challenges (validated by jobs), finalization into certfleet's inventory, certificate
// download and revocation. Errors carry the RFC's problem type in Error::reason
// ("badNonce", "malformed", …). Thread-safe; every state is in the store, so any node answers
// any request.
class AcmeService {
 public:
  struct Options {
    std::string base_url;  // what clients reach certfleet at: the prefix of every ACME URL
    std::string ca;        // the CA that issues (acme.ca); empty: ACME is off
    // How long a nonce may wait for its request (acme.nonce_minutes).
    std::chrono::minutes nonce_ttl{60};
    std::string nonce_key;        // the MAC key of nonces, the same on every node (from the master key)
    std::string master_key;       // seals external account binding keys
    int64_t validity_days = 90;   // of the certificates issued (acme.validity_days)
    int validation_attempts = 5;  // tries of one challenge before it is invalid (acme.validation_attempts)
    Validator::Options validation;
    // Runs a request's continuation on a server thread once its nonce's use has committed (the
    // nonces kept in the store: PostgreSQL); unset: on the store's committing thread.
    std::function<void(std::function<void()>)> post;
    // How long a challenge's POST waits for the first attempt of its validation, run on this
    // node, before it is answered as processing (acme.challenge_wait_ms); 0: not at all.
    std::chrono::milliseconds challenge_wait{2000};
    // Runs a function on a server thread once a delay has passed; unset: challenges are
    // answered at once.
    std::function<void(std::chrono::milliseconds, std::function<void()>)> post_after;
  };
  // The job that validates a challenge; payload {"challenge": id}.
  static constexpr std::string_view kValidateJob = "acme.validate";
  // The scheduled job that runs FailAbandoned.
  static constexpr std::string_view kSweepJob = "acme.sweep";
  // The profile served until ACME profiles are configurable.
  static constexpr std::string_view kDefaultProfile = "default";

  AcmeService(store::Store& store, issuance::Issuer& issuer, const Validator& validator, const Clock& clock,
              Options options);
  // The workers that run validation jobs: a validation asked for here starts on one of them at
  // once (without it, the job waits for any node's worker to poll).
  void UseWorkers(jobs::WorkerPool& workers) { workers_ = &workers; }

  // base_url + "/acme/<profile>/<path>".
  std::string Url(std::string_view profile, std::string_view path) const;
  // A profile kept in the store, else acme.ca's "default"; kNotFound (reason malformed) for
  // one that is not served. Read from the store at most once a second per profile: a change
  // made on another node is seen within a second, one made here at once.
  Result<Profile> FindProfile(std::string_view name);
  boost::json::object Directory(const Profile& profile) const;

  // /v1/acme/profiles: the stored profiles and acme.ca's "default" (unless one is stored under
  // that name). PutProfile creates or replaces one (the CA must hold its key), audited as
  // acme.profile.put; DeleteProfile as acme.profile.delete.
  Result<std::vector<Profile>> ListProfiles();
  struct PutAnswer {
    Profile profile;
    bool created = false;
  };
  Result<PutAnswer> PutProfile(std::string_view name, const boost::json::object& body, std::string_view actor);
  Result<void> DeleteProfile(std::string_view name, std::string_view actor);
  // External account binding credentials for the profile (POST /v1/acme/eab).
  Result<EabCredentials> NewEab(std::string_view profile, std::string_view actor);

  // A fresh nonce (RFC 8555 7.2); made without a write.
  std::string NewNonce() const;

  // How a request must be signed: with its key (jwk: newAccount), by an account (kid), or
  // either (revokeCert: the certificate's key or the account's).
  enum class Signer { kJwk, kKid, kEither };
  // A request that passed RFC 8555 6.2-6.5: a supported algorithm, its url this request's,
  // the key (jwk, or the kid's valid account), the signature, a fresh nonce.
  struct Checked {
    Jws jws;
    std::optional<store::AcmeAccountRecord> account;  // for kid requests
  };
  // Checks a request without a thread waiting for its nonce's write: `then` gets the result
  // on the calling thread, or, when the nonce's use is written to the store (PostgreSQL),
  // through Options::post once it has committed.
  using Then = std::function<void(Result<Checked>)>;
  void Check(std::string_view profile, std::string_view path, std::string_view body, Signer signer, Then then);

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
  // keyChange (7.3.5): the account's key becomes the inner JWS's key. kAlreadyExists (409,
  // with the other account's id in the message) when another account has that key.
  Result<store::AcmeAccountRecord> ChangeKey(std::string_view profile, const Checked& request);
  boost::json::object AccountJson(std::string_view profile, const store::AcmeAccountRecord& account) const;
  // The account's orders (7.1.2.1), a page of them after `cursor` (an order id).
  Result<AcmeAnswer> AccountOrders(std::string_view profile, int64_t account_id, int64_t cursor,
                                   const Checked& request);

  // An answer given once its write has committed, without a thread waiting for it: `Answer`
  // is called once, from any thread (the store's committing thread after a write), with what
  // makes the answer, which the caller runs where it chooses (a server thread). Errors carry
  // the problem types the other methods' do.
  using MakeAnswer = std::function<Result<AcmeAnswer>()>;
  using Answer = std::function<void(MakeAnswer)>;

  // newOrder (7.4): identifiers dns (wildcards allowed) and ip (RFC 8738), each with a new
  // authorization and its challenges. Audited as acme.order.create.
  void NewOrder(std::string_view profile, const Checked& request, Answer answer);
  Result<AcmeAnswer> Order(std::string_view profile, int64_t id, const Checked& request);
  // POST-as-GET, or {"status": "deactivated"} (7.5.2).
  Result<AcmeAnswer> Authorization(std::string_view profile, int64_t id, const Checked& request);
  // POST-as-GET, or {} to have the challenge validated (7.5.1): a validation job is queued,
  // and the answer waits for its first attempt (Options::challenge_wait): a client that sees
  // the challenge valid or invalid need not poll (lego does not).
  void Challenge(std::string_view profile, int64_t id, const Checked& request, Answer answer);
  // finalize (7.4): the CSR's names must be the order's; the certificate is issued under the
  // profile's CA into the inventory, created by "acme:account/<id>/order/<id>".
  void Finalize(std::string_view profile, int64_t order_id, const Checked& request, Answer answer);
  // The certificate chain (7.4.2): `alternate` 0 ends below the root, 1 includes the root.
  Result<AcmeCertificate> Certificate(std::string_view profile, std::string_view serial, int alternate,
                                      const Checked& request);
  // revokeCert (7.6), signed by the account that ordered the certificate or by its own key.
  Result<void> RevokeCertificate(std::string_view profile, const Checked& request);

  // Runs the validation job of a challenge, try `attempt` of `max_attempts`: the challenge, its
  // authorization and order become valid (the order ready when all its authorizations are) or
  // invalid. A retryable failure before the last attempt is returned, so the job runs again.
  // `done`, if given, runs in the transaction that records the outcome (the job's completion).
  using TxStep = std::function<Result<void>(store::Tx&)>;
  Result<void> Validate(int64_t challenge_id, int attempt, int max_attempts, const TxStep& done = nullptr);
  // Challenges whose validation job ended without deciding them (a node died during the last
  // attempt, or the store failed then) become invalid (serverInternal), as their orders do: their
  // clients stop waiting. Run by the job kSweepJob; returns how many.
  Result<int> FailAbandoned();

  // renewalInfo (RFC 9773 4.2): the window in which to renew the certificate `cert_id` names
  // (earlier when it is revoked or its CA revoked or replaced), with a Retry-After.
  Result<AcmeAnswer> RenewalInfo(std::string_view profile, std::string_view cert_id);

  // For /metrics: orders by status, and validations by outcome since start.
  Result<std::vector<std::pair<std::string, int64_t>>> OrderCounts();
  struct ValidationCounts {
    std::atomic<uint64_t> valid{0};
    std::atomic<uint64_t> invalid{0};
    std::atomic<uint64_t> retried{0};
  };
  const ValidationCounts& validations() const { return validations_; }

 private:
  std::optional<Profile> Configured() const;
  // The account's public key, parsed once per key: the account's row is still read on every
  // request (its status and key may change on any node), the key is reused while it is the same.
  Result<std::shared_ptr<EVP_PKEY>> AccountKey(const store::AcmeAccountRecord& account);
  // The certificate an ARI certificate id names, with the order that got it (of `profile`).
  struct Identified {
    store::AcmeOrderRecord order;
    store::CertificateRecord certificate;
    std::string id;  // the certificate's id as the certificate spells it (no leading zero octets)
  };
  Result<Identified> IdentifyCertificate(std::string_view profile, std::string_view cert_id);
  // A new order's `replaces`: a certificate of the account, not replaced by another order,
  // sharing one of the order's `identifiers` (as orders list them). Returns the id in its one
  // spelling, which orders keep.
  Result<std::string> CheckReplaces(std::string_view profile, int64_t account_id, std::string_view cert_id,
                                    const boost::json::array& identifiers);
  // Check's steps: everything but the nonce, which is used last, so that a forged request
  // cannot use up another client's nonce.
  Result<Checked> CheckSigned(std::string_view profile, std::string_view path, std::string_view body, Signer signer);
  // badNonce unless `nonce` was made here (by any node), is unexpired and was not used before;
  // `then` as Check's.
  void UseNonce(std::string_view nonce, std::function<void(Result<void>)> then);
  // The order, if it belongs to the account of `request` and the profile; expired pending
  // orders are answered as invalid.
  Result<store::AcmeOrderRecord> OwnedOrder(std::string_view profile, int64_t id, const Checked& request);
  // The same check of an order read already (nullopt: none).
  Result<store::AcmeOrderRecord> Owned(std::string_view profile, std::optional<store::AcmeOrderRecord> order,
                                       const Checked& request) const;
  AcmeAnswer ChallengeAnswer(std::string_view profile, const store::AcmeChallengeRecord& challenge,
                             int64_t authz_id) const;
  // A challenge with its authorization and order (and the account, if asked), each if found.
  struct FoundChallenge {
    std::optional<store::AcmeChallengeRecord> challenge;
    std::optional<store::AcmeAuthzRecord> authz;
    std::optional<store::AcmeOrderRecord> order;
    std::optional<store::AcmeAccountRecord> account;
  };
  Result<FoundChallenge> FindChallenge(int64_t id, bool with_account);
  Result<AcmeAnswer> OrderAnswer(std::string_view profile, const store::AcmeOrderRecord& order, int status = 200);
  // The same for an order whose authorizations' ids are known (no read).
  AcmeAnswer OrderAnswer(std::string_view profile, const store::AcmeOrderRecord& order,
                         const std::vector<int64_t>& authz_ids, int status) const;
  // The checks and issuance request of a finalize, before anything is written.
  Result<void> AuthorizedForAll(int64_t account_id, X509* cert);
  Result<issuance::IssueRequest> FinalizeRequest(std::string_view profile, const store::AcmeOrderRecord& order,
                                                 const Checked& request);
  boost::json::object ChallengeJson(std::string_view profile, const store::AcmeChallengeRecord& c) const;
  // One attempt of Validate: the challenge as it decided it, nullopt if it is still
  // processing (an error: the job tries again) or another decided it.
  using Decided = std::optional<store::AcmeChallengeRecord>;
  Result<Decided> Attempt(int64_t challenge_id, int attempt, int max_attempts, const TxStep& done);
  // Records a failed validation: the challenge, its authorization and order become invalid.
  Result<Decided> Invalidate(const store::AcmeChallengeRecord& challenge, const store::AcmeAuthzRecord& authz,
                             const Error& problem, const TxStep& done);
  // A challenge's POST waiting for its validation's attempt: answered once, by the attempt's
  // end or by the wait's end, whichever comes first.
  struct Waiter {
    Answer answer;  // holds the client's connection: let go of as soon as it is taken
    std::string profile;
    int64_t authz_id = 0;
    AcmeAnswer processing;  // the answer if the wait ends first
    std::atomic<bool> answered{false};
    // The answer for the first caller, nullptr for the other.
    Answer Take() { return answered.exchange(true) ? nullptr : std::move(answer); }
  };
  // Answers the POSTs waiting for `challenge_id` with the attempt's decision, or as processing.
  void AnswerWaiters(int64_t challenge_id, const Decided& decided);

  store::Store& store_;
  issuance::Issuer& issuer_;
  const Validator& validator_;
  const Clock& clock_;
  const Options options_;
  jobs::WorkerPool* workers_ = nullptr;
  std::atomic<uint64_t> nonces_used_{0};
  const std::unique_ptr<LocalNonces> local_nonces_;  // on SQLite; null on PostgreSQL
  // Parsed account keys by account id, with the JWK text they came from; emptied when full.
  static constexpr size_t kAccountKeysKept = 10'000;
  std::mutex keys_mu_;
  std::map<int64_t, std::pair<std::string, std::shared_ptr<EVP_PKEY>>> account_keys_;
  ValidationCounts validations_;
  std::mutex waiters_mu_;
  std::multimap<int64_t, std::shared_ptr<Waiter>> waiters_;  // by challenge id; guarded by waiters_mu_
  // Served profiles, by name (so as many as there are); its changes are profile_changes_,
  // counted by PutProfile and DeleteProfile.
  static constexpr int64_t kProfileReadMs = 1000;
  static constexpr size_t kMaxCachedProfiles = 1000;
  ReadCache<Profile> profiles_{kProfileReadMs, kMaxCachedProfiles};
  std::atomic<uint64_t> profile_changes_{0};
};

}  // namespace certfleet::acme
