#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "issuance/issuer.h"
#include "mail/mailer.h"
#include "renewal/agent_service.h"
#include "renewal/host_service.h"
#include "store/renewals_repo.h"
#include "store/store.h"

namespace certfleet::renewal {

// What an agent is asked to do: renew its host's certificate with these settings before
// the deadline.
struct RenewalTask {
  int64_t renewal_id = 0;
  int attempt = 0;
  int64_t deadline = 0;  // ms
  std::string host_id;
  HostSettings settings;
};

// What a run started.
struct RunStarted {
  int64_t run_id = 0;
  int64_t queued = 0;  // renewals queued; a host with one open already, or revoked, gets none
};

// Which mails renewal failures send (renewal.notify_mode): a mail per failed host, one
// digest per run when it ends, or both.
enum class NotifyMode { kDigest, kEach, kBoth };
inline constexpr std::string_view kNotifyModeNames[] = {"digest", "each", "both"};

// How a run chooses its hosts.
struct RunScope {
  std::vector<std::string> hosts;  // these hosts, due or not
  bool all = false;                // every host that is not revoked, due or not
  // Neither: the due hosts (renewal date passed, or no certificate), found through the
  // renew_at index.
};

// The renewal workflow of W4: runs queue a renewal per host; at most `concurrency` are at
// work at once; each is offered to its host's agent as a task and advances as the agent
// submits its CSR and reports the new files deployed and validated; an attempt that fails or
// passes its deadline is retried with backoff, and a renewal out of attempts fails, which
// notifies people by mail and as a `renewal/failed` event. Every state lives in the store,
// so a restart loses nothing: overdue attempts time out and are retried. Several nodes may
// share a PostgreSQL database. Thread-safe.
class RenewalService {
 public:
  struct Options {
    // Renewals at work at once, over all nodes: 200, so that a fleet renewed at once does
    // not issue faster than one CA signs while agents wait (renewal.concurrency).
    int concurrency = 200;
    // For the agent to finish an attempt: 10 minutes, well above its 2-minute reload
    // timeout (renewal.deadline_seconds).
    std::chrono::seconds deadline{600};
    int max_attempts = 3;  // of a renewal (renewal.max_attempts)
    // Before the second attempt: a minute, doubled after each, at most an hour, so a host
    // that is down is retried often at first and cheaply later (renewal.backoff_seconds).
    std::chrono::seconds backoff{60};
    std::chrono::seconds backoff_max{3600};
    // Before a superseded certificate is revoked: a day, for services still holding the old
    // one to reload (renewal.grace_seconds).
    std::chrono::seconds grace{86400};
    // How often deadlines and waiting agents are checked: a second, the latency of a
    // long-polling agent hearing of a task another node started.
    std::chrono::milliseconds tick{1000};
    std::vector<std::string> notify;             // mail recipients of failures (renewal.notify); none: nobody
    std::string sender = "certfleet@localhost";  // their From (renewal.sender)
    // Both: a failure is mailed at once, and a CA outage that fails 200 hosts is also one
    // digest at the end of the run (renewal.notify_mode).
    NotifyMode notify_mode = NotifyMode::kBoth;
  };

  RenewalService(store::Store& store, HostService& hosts, AgentService& agents, mail::Mailer* mailer,
                 const Clock& clock, Options options);
  ~RenewalService();  // NOLINT(bugprone-exception-escape): see the definition

  // Queues the renewals of `scope` in a new run. kInvalidArgument names an unknown host.
  Result<RunStarted> StartRun(const RunScope& scope, std::string_view trigger, std::string_view actor);
  // Times out overdue attempts and starts queued renewals in the free slots. Returns how
  // many it started. The background thread runs it; tests call it directly.
  Result<int> Pump();

  // The host's task, if a renewal of it awaits its CSR.
  Result<std::optional<RenewalTask>> TaskFor(std::string_view host_id);
  // Calls `ready(true)` once the host has a task, or `ready(false)` after `wait_ms`; from
  // the background thread. Without Start() only Pump() or Stop() answers.
  void WaitForTask(const std::string& host_id, int64_t wait_ms, std::function<void(bool)> ready);

  // The agent's CSR for its task: the certificate is issued and the renewal moves to
  // issued. The same key's CSR again while the renewal is issued gets the certificate issued
  // for it (the agent lost the answer), not a second one. kNotFound for another host's or an
  // unknown renewal, kFailedPrecondition when it does not await a CSR (finished, timed out,
  // or issued for another key).
  Result<Enrolled> SubmitCsr(const store::HostRecord& host, int64_t renewal_id, const std::string& csr_pem);
  // The agent's report: "deployed", "validated" (the host's certificate is now the new
  // one), or "failed" at `step` with `error` (the attempt fails).
  Result<store::RenewalRecord> Report(const store::HostRecord& host, int64_t renewal_id, store::RenewalState state,
                                      std::string_view step, std::string_view error);

  // The host an agent's verified TLS client certificate speaks for (AgentService::Authenticate).
  // An agent seen with a certificate issued after its host's current one has swapped it in:
  // the renewal that issued it, awaiting the agent's report, is validated; one whose attempt
  // ended without the report (lost, or late) leaves it to the host, its revocation taken back
  // and the replaced certificate revoked after the grace (audited as renewal.adopt).
  Result<store::HostRecord> AuthenticateAgent(std::string_view serial, std::string_view fingerprint);

  // Removes a host: its certificate is revoked (cessationOfOperation) when `revoke`, its
  // open renewal ends failed, its enrollment tokens go; its renewals and audit entries stay
  // as history, and its id may be registered again. kNotFound for an unknown host.
  Result<void> DeleteHost(std::string_view host_id, bool revoke, std::string_view actor);
  // Revokes a host's certificate (AgentService::Revoke) and ends its open renewal failed:
  // a queued one never starts, and what its attempt issued is revoked at once.
  Result<store::HostRecord> RevokeHost(std::string_view host_id, std::string_view reason, std::string_view actor);

  Result<store::RenewalRecord> Get(int64_t renewal_id);
  Result<std::vector<store::RenewalRecord>> List(const store::RenewalFilter& filter);
  Result<std::vector<store::RenewalRunSummary>> Runs(std::optional<int64_t> before_id, int limit);

  // Mails the failure of a renewal to `notify` (the notification job). Nothing without
  // recipients or a mailer.
  Result<void> NotifyFailure(int64_t renewal_id);
  // Marks the runs whose renewals have all ended as ended, once over all nodes: for each
  // (with renewals) a renewal/run-finished event and, unless notify_mode is each, a digest
  // job, in the same transaction. Returns how many it ended. The background thread runs it
  // every tick; tests call it directly.
  Result<int> EndRuns();
  // Mails the digest of an ended run (the digest job): hosts renewed, each failed host with
  // its step and error, and the hosts still waiting (renewal date passed). Nothing without
  // recipients or a mailer.
  Result<void> MailDigest(int64_t run_id);

  // What /metrics shows of W4, read from the store (so the same on every node).
  struct Figures {
    std::map<store::RenewalState, int64_t> renewals;  // by state
    std::map<store::HostStatus, int64_t> hosts;       // by status
    int64_t expiring_7d = 0;                          // hosts not revoked expiring within 7 days
    int64_t expiring_30d = 0;
  };
  Result<Figures> CurrentFigures();
  // Durations of the runs this node ended (from start to the last renewal's end), seconds.
  struct RunDurations {
    static constexpr std::array<double, 9> kBuckets = {60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400};
    std::array<uint64_t, kBuckets.size()> counts{};  // cumulative, as Prometheus buckets
    uint64_t count = 0;
    double sum = 0;
  };
  RunDurations EndedRunDurations() const;

  // Keeps the server trusting agents' certificates: `apply` gets AgentService::TrustBundle
  // now, and again whenever it changes: after SetCa, and as checked every kTrustRefresh (a CA
  // set on another node applies here within that). `apply` runs on the caller's thread or
  // the background thread, never two at once.
  using TrustSink = std::function<Result<void>(const std::string& pem)>;
  Result<void> TrustAgentsThrough(TrustSink apply);
  // Makes `fqdn` the renewal CA on every node (AgentService::SetRenewalCa) and trusts
  // its agents here at once.
  Result<void> SetCa(std::string_view fqdn, std::string_view actor);
  static constexpr std::chrono::seconds kTrustRefresh{15};

  // The background thread: Pump() every tick and whenever a slot frees, and answers
  // WaitForTask. Stop() answers every waiting agent with false.
  void Start();
  void Stop();

  static constexpr std::string_view kRunJob = "renewal.run";
  static constexpr std::string_view kNotifyJob = "renewal.notify";
  static constexpr std::string_view kDigestJob = "renewal.digest";
  // Limits of the input, each with its reason.
  static constexpr size_t kMaxRunHosts = 10'000;  // hosts named in one request; `all` for more
  static constexpr size_t kMaxError = 2048;       // an agent's error message kept in history

 private:
  struct Waiter {
    int64_t until = 0;
    std::function<void(bool)> ready;
  };
  // Fails the attempt in `tx`: retried after backoff, or failed for good (host marked,
  // notification queued). A certificate issued in the attempt is revoked after the grace.
  // `r` is written only if the store still has it in its state at `stored_attempt` (as read);
  // kFailedPrecondition otherwise.
  Result<void> FailAttempt(store::Tx& tx, store::RenewalRecord& r, int stored_attempt, std::string_view step,
                           std::string_view error, std::string_view actor, int64_t now);
  // Makes `serial` the host's certificate (written), the one it replaces revoked after the
  // grace; that one's serial, if any.
  Result<std::optional<std::string>> TakeCertificate(store::Tx& tx, store::HostRecord& h, const std::string& serial,
                                                     int64_t not_after, int64_t now);
  // Makes the certificate of `r` (issued or deployed) the host's, audited as renewal.validate.
  Result<void> Validate(store::Tx& tx, store::HostRecord& h, store::RenewalRecord& r, int64_t now);
  // Queues the revocation (superseded) of `serial` after the grace period.
  Result<void> RevokeLater(store::Tx& tx, const std::string& serial, int64_t now);
  // Ends the host's open renewal, if any, failed with `why`; what its attempt issued is
  // revoked at `revoke_at` (ms), or kept without one. The renewal's id, or nullopt.
  Result<std::optional<int64_t>> EndOpenRenewal(store::Tx& tx, std::string_view host_id, std::string_view why,
                                                std::optional<int64_t> revoke_at, int64_t now);
  // Pump(), returning the hosts whose tasks it started.
  Result<std::vector<std::string>> PumpStarted();
  void Loop();
  // Answers the waiters of `ready_hosts` with true, and with false those whose wait is over
  // (all of them when stopping). With `check_store`, first asks the store which waiting
  // hosts have a task (one another node started).
  void AnswerWaiters(std::vector<std::string> ready_hosts, bool check_store);
  void Wake();
  // Gives trust_sink_ the trust bundle if it changed.
  Result<void> RefreshTrust();

  store::Store& store_;
  HostService& hosts_;
  AgentService& agents_;
  mail::Mailer* mailer_;
  const Clock& clock_;
  const Options options_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::multimap<std::string, Waiter> waiters_;  // by host id
  bool woken_ = false;
  bool stopping_ = false;
  std::thread thread_;

  mutable std::mutex durations_mu_;
  RunDurations durations_;

  std::mutex trust_mu_;
  TrustSink trust_sink_;
  std::string trusted_;  // the bundle trust_sink_ got last
};

}  // namespace certfleet::renewal
