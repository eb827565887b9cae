#pragma once

// The broker snapshot: what a broker needs of the registry to decide every connect, publish,
// subscribe and delivery without asking certfleet, as a value, its JSON form
// (GET /v1/broker/snapshot) and a View that decides from it. Self-contained (the standard
// library, Boost.JSON, core/result.h, core/text.h and registry/policy.h), so that the Mosquitto
// plugin compiles it in as well.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/result.h"
#include "registry/policy.h"

namespace certfleet::broker {

inline constexpr int kSnapshotFormat = 1;

struct Snapshot {
  struct Thing {
    std::string name;
    std::optional<std::string> type;
    std::map<std::string, std::string, std::less<>> attributes;
  };
  // A certificate a device may connect with: attached to a thing, not revoked, its device not
  // disabled. Things and policies are indexes into the lists below.
  struct Certificate {
    std::string fingerprint;  // SHA-256 hex of the DER, lowercase
    std::vector<uint32_t> things;
    std::vector<uint32_t> policies;
    std::optional<int64_t> not_after;        // ms
    std::optional<int64_t> revoke_after;     // ms; a superseded certificate's end of grace
    std::optional<std::string> common_name;  // its subject CN
  };
  std::vector<std::pair<std::string, std::string>> policies;  // (name, document JSON)
  std::vector<Thing> things;
  std::vector<Certificate> certificates;  // by fingerprint
};

std::string ToJson(const Snapshot& snapshot);

// A snapshot made ready to decide: certificates by fingerprint, policies compiled. Thread
// contract: immutable after Parse or Make; share it with a shared_ptr.
class View {
 public:
  static Result<std::shared_ptr<const View>> Parse(std::string_view json);
  static std::shared_ptr<const View> Make(Snapshot snapshot);

  // One client on one certificate: its policy variables and the policies in force for it.
  struct Session {
    registry::Connection connection;
    std::vector<const registry::CompiledPolicy*> policies;  // the View's; valid while it lives
    std::optional<int64_t> ends_at;                         // ms: the certificate's expiry or end of grace, the earlier
  };
  // The session of a client presenting the certificate `fingerprint` (hex, any case) with
  // `client_id`, at `now` (ms); kPermissionDenied saying why when the certificate gets nothing.
  // Without `common_name`, the certificate's own.
  Result<Session> Open(std::string_view fingerprint, std::string_view client_id, std::optional<std::string> common_name,
                       int64_t now) const;
  // The sessions that the thing's usable certificates with subject CN `common_name` give
  // `client_id` (for brokers that do not tell which certificate a client presented, only its
  // CN, as EMQX's HTTP hooks); none without a CN.
  std::vector<Session> OpenByThing(std::string_view thing, std::string_view client_id,
                                   const std::optional<std::string>& common_name, int64_t now) const;
  static registry::Decision Decide(const Session& session, registry::MqttAction action, std::string_view target);

  const Snapshot& snapshot() const { return snapshot_; }
  // Policies that did not compile (written before certfleet evaluated them): they grant
  // nothing, and a certificate one of them with a Deny statement is attached to gets nothing
  // (what it denies cannot be told). "name: why" each.
  const std::vector<std::string>& skipped_policies() const { return skipped_; }

 private:
  Session SessionOf(const Snapshot::Certificate& c, std::string_view client_id,
                    std::optional<std::string> common_name) const;

  Snapshot snapshot_;
  std::vector<std::optional<registry::CompiledPolicy>> compiled_;  // by policy index
  // By policy index: it did not compile and has a Deny statement, which cannot be honoured.
  std::vector<bool> unknown_deny_;
  std::unordered_map<std::string, uint32_t> by_fingerprint_;
  std::unordered_map<std::string, std::vector<uint32_t>> by_thing_;  // thing name -> certificates
  std::vector<std::string> skipped_;
};

}  // namespace certfleet::broker
