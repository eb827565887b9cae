#include "broker/broker_service.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <tuple>
#include <unordered_map>

#include "core/crypto.h"
#include "core/log.h"
#include "pki/certificate.h"
#include "registry/codec.h"
#include "store/audit_repo.h"
#include "store/broker_repo.h"
#include "store/certificates_repo.h"
#include "store/registry_repo.h"

namespace certfleet::broker {
namespace json = boost::json;
namespace {

// Chunks of imported certificates whose DER is read for their CN and expiry: one statement
// each, so that a node's first snapshot of millions of them never holds them all at once.
constexpr size_t kDerChunk = 500;

// A stored registry body, read as the registry reads it (registry/codec.h).
Result<registry::Body> BodyOf(registry::Kind kind, const store::NamedBody& row) {
  // Parsed on the stack: a snapshot reads every thing's body.
  unsigned char buffer[4096];
  json::monotonic_resource memory(buffer, sizeof(buffer));
  boost::system::error_code ec;
  json::value body = json::parse(row.body, ec, &memory);
  if (ec || !body.is_object()) return MakeError(ErrorCode::kInternal, "stored object " + row.name + " is not JSON");
  return registry::FromJson(kind, body.get_object());
}

}  // namespace

Result<std::shared_ptr<const View>> BrokerService::Current::view() const {
  std::lock_guard lock(mu_);
  if (!view_) {
    CF_ASSIGN_OR_RETURN(view_, View::Parse(json));
  }
  return view_;
}

BrokerService::BrokerService(store::Store& store, const Clock& clock, Options options)
    : store_(store), clock_(clock), options_(options) {}

BrokerService::~BrokerService() {
  std::thread refresher;
  {
    std::lock_guard lock(refresh_mu_);
    refresher.swap(refresher_);
  }
  if (refresher.joinable()) refresher.join();  // it takes refresh_mu_ as it ends
}

Result<void> BrokerService::AddImportedFacts(store::Tx& tx, std::vector<store::BrokerCertificate>& rows) {
  std::lock_guard lock(facts_mu_);
  std::vector<std::string> missing;
  for (const auto& r : rows) {
    if (r.imported && !imported_facts_.contains(r.fingerprint)) missing.push_back(r.fingerprint);
  }
  for (size_t i = 0; i < missing.size(); i += kDerChunk) {
    const std::vector<std::string> chunk(
        missing.begin() + static_cast<ptrdiff_t>(i),
        missing.begin() + static_cast<ptrdiff_t>(std::min(missing.size(), i + kDerChunk)));
    CF_ASSIGN_OR_RETURN(auto ders, store::ImportedCertificateDers(tx, chunk));
    for (const auto& [fingerprint, der] : ders) {
      ImportedFacts facts;
      // Only the two facts: not Inspect, which encodes the certificate again and hashes it.
      if (auto cert = pki::CertificateFromDer(der); cert.ok()) {
        facts.common_name = pki::NameEntry(X509_get_subject_name(cert->get()), NID_commonName);
        facts.not_after = pki::NotAfterMillis(cert->get());
      }
      imported_facts_.emplace(fingerprint, std::move(facts));
    }
  }
  for (auto& r : rows) {
    if (!r.imported) continue;
    if (auto it = imported_facts_.find(r.fingerprint); it != imported_facts_.end()) {
      r.common_name = it->second.common_name;
      r.not_after = it->second.not_after;
    }
  }
  return Ok();
}

Result<broker::Snapshot> BrokerService::Build(store::Tx& tx, std::optional<std::string_view> fingerprint) {
  broker::Snapshot s;
  CF_ASSIGN_OR_RETURN(auto rows, store::BrokerCertificates(tx, fingerprint));
  CF_RETURN_IF_ERROR(AddImportedFacts(tx, rows));
  // By fingerprint, so that the same registry makes the same snapshot (and ETag).
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    return std::tie(a.fingerprint, a.thing) < std::tie(b.fingerprint, b.thing);
  });
  std::optional<std::string_view> one_ref;
  if (fingerprint) {
    if (rows.empty()) return s;
    one_ref = rows.front().ref;
  }
  CF_ASSIGN_OR_RETURN(auto grants, store::PolicyGrants(tx, one_ref));
  CF_ASSIGN_OR_RETURN(auto policies, store::AllObjects(tx, store::kObjectPolicy));
  std::unordered_map<std::string_view, uint32_t> policy_index;
  for (const auto& p : policies) {
    policy_index.emplace(p.name, static_cast<uint32_t>(s.policies.size()));
    CF_ASSIGN_OR_RETURN(registry::Body policy, BodyOf(registry::Kind::kPolicy, p));
    s.policies.emplace_back(p.name, std::get<registry::Policy>(policy).document.text);
  }
  std::unordered_map<std::string_view, std::vector<uint32_t>> granted;  // certificate ref -> policies
  for (const auto& [policy, ref] : grants) {
    if (auto it = policy_index.find(policy); it != policy_index.end()) granted[ref].push_back(it->second);
  }
  std::vector<store::NamedBody> things;
  if (fingerprint) {
    for (const auto& r : rows) {
      CF_ASSIGN_OR_RETURN(auto found, store::FindObject(tx, store::kObjectThing, r.thing));
      if (found) things.push_back({found->name, found->ref, found->body});
    }
  } else {
    CF_ASSIGN_OR_RETURN(things, store::AllObjects(tx, store::kObjectThing));
  }
  std::unordered_map<std::string_view, const store::NamedBody*> thing_rows;
  for (const auto& t : things) thing_rows.emplace(t.name, &t);
  std::unordered_map<std::string_view, uint32_t> thing_index;

  // Rows come by fingerprint: a certificate attached to several things has a row for each.
  for (const auto& r : rows) {
    if (s.certificates.empty() || s.certificates.back().fingerprint != r.fingerprint) {
      Snapshot::Certificate c;
      c.fingerprint = r.fingerprint;
      c.not_after = r.not_after;
      c.revoke_after = r.revoke_after;
      c.common_name = r.common_name;
      if (auto it = granted.find(r.ref); it != granted.end()) c.policies = it->second;
      s.certificates.push_back(std::move(c));
    } else if (!r.revoke_after || !s.certificates.back().revoke_after) {
      s.certificates.back().revoke_after.reset();  // an active attachment outlives a superseded one
    } else {
      s.certificates.back().revoke_after = std::max(*s.certificates.back().revoke_after, *r.revoke_after);
    }
    auto row = thing_rows.find(r.thing);
    if (row == thing_rows.end()) continue;  // a link to a thing deleted meanwhile
    auto [it, added] = thing_index.emplace(row->first, static_cast<uint32_t>(s.things.size()));
    if (added) {
      CF_ASSIGN_OR_RETURN(registry::Body body, BodyOf(registry::Kind::kThing, *row->second));
      auto& thing = std::get<registry::Thing>(body);
      s.things.push_back({std::move(thing.name), std::move(thing.thing_type), std::move(thing.attributes)});
    }
    s.certificates.back().things.push_back(it->second);
  }
  return s;
}

Result<std::shared_ptr<const BrokerService::Current>> BrokerService::Latest() {
  const int64_t now = clock_.NowMillis();
  {
    std::lock_guard lock(mu_);
    // The audit log's head is looked at once per min_rebuild at most, however many ask.
    if (current_ && now - checked_at_ < options_.min_rebuild.count()) return current_;
  }
  // One rebuild at a time; meanwhile the others are answered from the snapshot there is.
  std::unique_lock build(build_mu_, std::try_to_lock);
  if (!build.owns_lock()) {
    {
      std::lock_guard lock(mu_);
      if (current_) return current_;
    }
    build.lock();  // the node's first snapshot: wait for it
  }
  {
    std::lock_guard lock(mu_);
    if (current_ && now - checked_at_ < options_.min_rebuild.count()) return current_;  // just built
  }
  auto stale = [this](const Error& e) -> Result<std::shared_ptr<const Current>> {
    std::lock_guard lock(mu_);
    if (!current_) return e;
    log::Warn("the broker snapshot cannot be rebuilt; serving the last one", {{"error", e.message}});
    checked_at_ = clock_.NowMillis();  // tried again after min_rebuild
    failure_ = e;
    return current_;
  };
  auto seq = store::Read(store_, [](store::Tx& tx) { return store::AuditHeadSeq(tx); });
  if (!seq.ok()) return stale(seq.error());
  {
    std::lock_guard lock(mu_);
    checked_at_ = now;
    if (current_ && *seq == current_seq_ && now - rebuilt_at_ < options_.max_age.count()) {
      failure_.reset();
      return current_;
    }
  }
  const auto started = std::chrono::steady_clock::now();
  auto built = store::Read(store_, [&](store::Tx& tx) { return Build(tx, std::nullopt); });
  if (!built.ok()) return stale(built.error());
  const broker::Snapshot& s = *built;
  auto next = std::make_shared<Current>();
  next->json = ToJson(s);
  next->etag = "\"" + Sha256Hex(next->json).substr(0, 32) + "\"";
  next->certificates = s.certificates.size();
  const int64_t build_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
  std::lock_guard lock(mu_);
  next->generation = *seq;
  current_seq_ = *seq;
  rebuilt_at_ = now;
  failure_.reset();
  // Nothing brokers see changed: the same snapshot (and its View, if one was parsed), newer.
  if (current_ && current_->etag == next->etag) {
    current_->generation = std::max(current_->generation.load(), *seq);
    return current_;
  }
  for (const auto& [name, document] : s.policies) {
    auto compiled = registry::CompiledPolicy::Compile(name, document);
    if (!compiled.ok()) {
      log::Warn("a policy grants nothing at brokers: it says what certfleet does not evaluate",
                {{"policy", name}, {"why", compiled.error().message}});
    }
  }
  log::Info("broker snapshot rebuilt",
            {{"certificates", next->certificates}, {"bytes", next->json.size()}, {"build_ms", build_ms}});
  current_ = std::move(next);
  return current_;
}

Result<std::shared_ptr<const BrokerService::Current>> BrokerService::Confirmed() {
  CF_ASSIGN_OR_RETURN(auto latest, Latest());
  std::lock_guard lock(mu_);
  if (failure_) {
    return MakeError(ErrorCode::kUnavailable,
                     fmt::format("the broker snapshot cannot be confirmed current: {}", failure_->message));
  }
  return latest;
}

Result<BrokerService::EvaluateAnswer> BrokerService::Evaluate(const EvaluateRequest& request) {
  const int64_t now = clock_.NowMillis();
  return store::Read(store_, [&](store::Tx& tx) -> Result<EvaluateAnswer> {
    CF_ASSIGN_OR_RETURN(auto id, store::FindCertificateIdentity(tx, request.serial, request.fingerprint));
    if (!id) return MakeError(ErrorCode::kNotFound, "no such certificate");
    EvaluateAnswer answer;
    answer.fingerprint = id->fingerprint;
    if (!id->imported) answer.serial = id->ref;
    CF_ASSIGN_OR_RETURN(broker::Snapshot s, Build(tx, id->fingerprint));
    auto view = View::Make(std::move(s));
    auto session = view->Open(id->fingerprint, request.client_id, std::nullopt, now);
    if (!session.ok()) {
      // Say why precisely, from the store.
      CF_ASSIGN_OR_RETURN(auto links, store::LinksTo(tx, store::kThingCertificate, id->ref));
      bool ca_revoked = false;
      if (!id->imported && !id->revoked) {
        CF_ASSIGN_OR_RETURN(store::CertStatus chain, store::ChainStatus(tx, id->ref));
        ca_revoked = chain == store::CertStatus::kRevoked;
      }
      answer.decision.reason =
          id->revoked     ? "the certificate is revoked"
          : ca_revoked    ? "a CA above the certificate is revoked"
          : links.empty() ? "the certificate is attached to no thing"
          : std::all_of(links.begin(), links.end(), [](const auto& l) { return l.state == store::kAttachmentRetired; })
              ? "the certificate is retired from every thing it is attached to"
          : view->snapshot().certificates.empty()
              ? "the device of every thing the certificate is attached to is disabled"
              : session.error().message;
      return answer;
    }
    const broker::Snapshot& one = view->snapshot();
    for (uint32_t p : one.certificates.front().policies) answer.policies.push_back(one.policies[p].first);
    for (const auto& skipped : view->skipped_policies()) {
      for (const auto& name : answer.policies) {
        if (skipped.starts_with(name + ": ")) answer.ignored_policies.push_back(skipped);
      }
    }
    answer.thing = session->connection.thing_name;
    answer.connect_allowed = View::Decide(*session, registry::MqttAction::kConnect, request.client_id).allowed;
    answer.decision = View::Decide(
        *session, request.action, request.action == registry::MqttAction::kConnect ? request.client_id : request.topic);
    return answer;
  });
}

Result<std::shared_ptr<const View>> BrokerService::HookView() {
  std::shared_ptr<const Current> current;
  bool due = false;
  {
    std::lock_guard lock(mu_);
    current = current_;
    due = clock_.NowMillis() - checked_at_ >= options_.min_rebuild.count();
  }
  if (!current) {
    CF_ASSIGN_OR_RETURN(current, Latest());
  } else if (due) {
    std::lock_guard lock(refresh_mu_);
    if (!refreshing_) {
      refreshing_ = true;
      if (refresher_.joinable()) refresher_.join();  // it has ended: refreshing_ was false
      refresher_ = std::thread([this] {
        auto latest = Latest();
        if (latest.ok()) (void)(*latest)->view();
        std::lock_guard done(refresh_mu_);
        refreshing_ = false;
        refreshed_.notify_all();
      });
    }
  }
  return current->view();
}

void BrokerService::WaitForRefresh() {
  std::unique_lock lock(refresh_mu_);
  refreshed_.wait(lock, [this] { return !refreshing_; });
}

Result<bool> BrokerService::Authenticate(const std::string& client_id, const std::optional<std::string>& common_name) {
  CF_ASSIGN_OR_RETURN(auto view, HookView());
  for (const auto& session : view->OpenByThing(client_id, client_id, common_name, clock_.NowMillis())) {
    if (View::Decide(session, registry::MqttAction::kConnect, client_id).allowed) return true;
  }
  return false;
}

Result<bool> BrokerService::Authorize(const std::string& client_id, const std::optional<std::string>& common_name,
                                      registry::MqttAction action, const std::string& topic) {
  CF_ASSIGN_OR_RETURN(auto view, HookView());
  for (const auto& session : view->OpenByThing(client_id, client_id, common_name, clock_.NowMillis())) {
    if (View::Decide(session, action, topic).allowed) return true;
  }
  return false;
}

}  // namespace certfleet::broker
