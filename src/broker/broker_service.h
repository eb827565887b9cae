#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "broker/snapshot.h"
#include "core/clock.h"
#include "core/result.h"
#include "registry/policy.h"
#include "store/broker_repo.h"
#include "store/store.h"

namespace certfleet::broker {

// The registry enforced at MQTT brokers: the snapshot brokers pull (the Mosquitto plugin),
// the answers brokers with HTTP hooks ask for (EMQX), and the operator's "why can this device
// (not) publish". Decisions come from a snapshot held in memory, rebuilt from the store when
// the audit log shows a change of state. Thread-safe.
class BrokerService {
 public:
  struct Options {
    // The least time between two rebuilds, however often the registry changes.
    std::chrono::milliseconds min_rebuild{1000};
    // A snapshot is rebuilt after this even without a change (a safety net).
    std::chrono::milliseconds max_age{std::chrono::minutes(5)};
  };
  BrokerService(store::Store& store, const Clock& clock, Options options);
  ~BrokerService();  // waits for a rebuild under way

  // The snapshot as served: its JSON and its ETag (a hash of the JSON).
  struct Current {
    std::string json;
    std::string etag;
    size_t certificates = 0;  // in it
    // The audit log's head (the sum of its chains' heads, which only grows) the snapshot is
    // known to reflect: raised when a rebuild finds the same snapshot. Sent with it, so that a
    // broker polling several nodes through a balancer takes no snapshot older than its own.
    mutable std::atomic<int64_t> generation{0};
    // Its View, parsed from `json` the first time it is asked for (EMQX's hooks decide from
    // it; a node that only serves the snapshot never builds one).
    Result<std::shared_ptr<const View>> view() const;

   private:
    mutable std::mutex mu_;
    mutable std::shared_ptr<const View> view_;
  };
  // The snapshot there is: when the store cannot be read or the snapshot rebuilt, the last one
  // (EMQX's hooks go on deciding from it).
  Result<std::shared_ptr<const Current>> Latest();
  // The same, confirmed current by the last look at the store: kUnavailable while that failed,
  // so that a broker fetching it (GET /v1/broker/snapshot) does not count it as confirmed
  // (the Mosquitto plugin's plugin_opt_max_stale_s).
  Result<std::shared_ptr<const Current>> Confirmed();

  // POST /v1/policies/evaluate: a certificate (serial or fingerprint), a client id, an action
  // and its topic (or topic filter; none for iot:Connect).
  struct EvaluateRequest {
    std::optional<std::string> serial;
    std::optional<std::string> fingerprint;
    std::string client_id;
    registry::MqttAction action = registry::MqttAction::kConnect;
    std::string topic;
  };
  struct EvaluateAnswer {
    std::string fingerprint;
    std::optional<std::string> serial;
    std::optional<std::string> thing;           // the connection's thing
    std::vector<std::string> policies;          // attached to the certificate
    std::vector<std::string> ignored_policies;  // of those, the ones that grant nothing: "name: why"
    bool connect_allowed = false;               // iot:Connect for the client id
    registry::Decision decision;                // for the action asked
  };
  // Read from the store, not from the snapshot, so that it answers what the next snapshot
  // will say. kNotFound for an unknown certificate.
  Result<EvaluateAnswer> Evaluate(const EvaluateRequest& request);

  // EMQX's HTTP authentication and authorization: the client id names the thing; allowed if
  // one of its usable certificates allows the action (EMQX does not say which certificate the
  // client presented). From the snapshot there is: one that is due for a look at the store is
  // rebuilt in the background (its View parsed there too), so that no hook waits for a rebuild
  // (EMQX times its hooks out); only a node's first snapshot is waited for.
  Result<bool> Authenticate(const std::string& client_id, const std::optional<std::string>& common_name);
  Result<bool> Authorize(const std::string& client_id, const std::optional<std::string>& common_name,
                         registry::MqttAction action, const std::string& topic);
  // Returns once no background rebuild is under way (tests).
  void WaitForRefresh();

 private:
  // The snapshot the hooks decide from (see Authenticate).
  Result<std::shared_ptr<const View>> HookView();
  // A snapshot of all certificates, or of the one `fingerprint`.
  Result<broker::Snapshot> Build(store::Tx& tx, std::optional<std::string_view> fingerprint);
  // The CN and expiry of the imported certificates among `rows`, from their DER (read once
  // per node: an imported certificate never changes).
  Result<void> AddImportedFacts(store::Tx& tx, std::vector<store::BrokerCertificate>& rows);

  store::Store& store_;
  const Clock& clock_;
  const Options options_;
  std::mutex build_mu_;  // held by the one rebuild at a time
  std::mutex mu_;        // guards the five below
  std::shared_ptr<const Current> current_;
  int64_t current_seq_ = -1;      // the audit log's head when current_ was built
  int64_t checked_at_ = 0;        // when the head was last looked at (ms)
  int64_t rebuilt_at_ = 0;        // when the snapshot was last built, changed or not (ms)
  std::optional<Error> failure_;  // why the last look at the store or rebuild failed; none once one succeeds
  struct ImportedFacts {
    std::optional<std::string> common_name;
    std::optional<int64_t> not_after;
  };
  std::mutex refresh_mu_;  // guards the three below
  std::condition_variable refreshed_;
  bool refreshing_ = false;
  std::thread refresher_;                                          // the background rebuild, the last one started
  std::mutex facts_mu_;                                            // guards imported_facts_
  std::unordered_map<std::string, ImportedFacts> imported_facts_;  // by fingerprint
};

}  // namespace certfleet::broker
