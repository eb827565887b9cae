#include "issuance/issuer.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <charconv>
#include <future>
#include <map>
#include <set>

#include "core/crypto.h"
#include "core/log.h"
#include "core/text.h"
#include "pki/certificate.h"
#include "pki/crl.h"
#include "pki/ocsp.h"
#include "store/audit_repo.h"
#include "store/events_repo.h"
#include "store/jobs_repo.h"

namespace certfleet::issuance {
namespace {

// One group in flight per node, as on SQLite: while it commits, the next one gathers, and
// groups close at about twice the size of two in flight (about 40 certificates per commit
// against 20 in bench/postgres/run, 20 against 11 with two nodes on one database), which
// cuts the database's CPU per certificate by a fifth to a third. Nodes sharing the database
// each see their share of the requests, so a group waits up to 1 ms for the next piece
// rather than 300 µs.
store::GroupCommitter::Options CommitOptions(const store::Store& store) {
  store::GroupCommitter::Options options;
  if (store.dialect() == store::Dialect::kPostgres) options.gather_gap = std::chrono::milliseconds(1);
  return options;
}

// The event each revoked certificate writes; its newest id tells every node of revocations.
constexpr std::string_view kRevokedEvent = "certificates/revoked";
// The advisory lock revocations take before appending their events (PostgreSQL).
constexpr int64_t kRevokedEventLock = 0x6365727472766b64;  // "certrvkd"

namespace json = boost::json;

constexpr int64_t kDayMs = 86'400'000;
constexpr int64_t kMaxValidityDays = 36'500;  // a century is past any sane CA lifetime
// Backdating absorbs clock skew between certfleet and the clients checking notBefore.
constexpr int64_t kBackdateMs = int64_t{5} * 60 * 1000;
// Bounds a cascade: a CA with more descendants than this is revoked in steps.
constexpr size_t kMaxCascade = 1'000'000;

int64_t DefaultValidityDays(pki::CertType type) {
  switch (type) {
    case pki::CertType::kRoot:
      return 3650;
    case pki::CertType::kIntermediate:
      return 1825;
    default:
      return 365;
  }
}

// The seed's event Type values.
std::string_view SeedType(pki::CertType type) {
  switch (type) {
    case pki::CertType::kRoot:
      return "Root";
    case pki::CertType::kIntermediate:
      return "Intermediate";
    case pki::CertType::kServer:
      return "Server";
    case pki::CertType::kDevice:
      return "Client";
  }
  return "Server";
}

json::object RecordSummary(const store::CertificateRecord& c) {
  return {{"fqdn", c.fqdn}, {"type", CertTypeName(c.type)}, {"parent_fqdn", c.parent_fqdn}};
}

constexpr std::string_view kRootParent = "Root";  // the parent_fqdn of roots, as in the seed

// The dedupe key of the revocation RevokeSupersededAfter queues for `serial`.
std::string SupersededJobKey(std::string_view serial) { return "revoke-superseded:" + std::string(serial); }

}  // namespace

// What the write and its completion share; they outlive IssueAsync.
struct Issuer::Built {
  Issued out;
  std::shared_ptr<const Parent> parent;
  bool is_ca = false;
  bool one_active = false;  // refused while the name has an active certificate
  pki::PkeyPtr ca_key;      // a new CA's, until the key backend holds it
  std::string key_ref, issuer_key_hash, audit_action, audit_details, event_payload, first_crl, actor;
  int64_t now = 0;
  BeforeChecks before_checks;
  InTransaction in_transaction;
};

Issuer::Issuer(store::Store& store, pki::KeyBackend& keys, const Clock& clock, Options options)
    : store_(store), keys_(keys), clock_(clock), options_(std::move(options)), writes_(store, CommitOptions(store)) {}

const std::string& Issuer::RevocationUrl() const {
  return options_.revocation_url.empty() ? options_.public_url : options_.revocation_url;
}

std::string Issuer::CrlUrl(std::string_view ca_fqdn) const {
  return fmt::format("{}/crl/{}.crl", RevocationUrl(), ca_fqdn);
}

Result<std::shared_ptr<X509>> Issuer::CaCertificate(const store::CertificateRecord& record) {
  {
    std::lock_guard lock(mu_);
    if (auto it = ca_certs_.find(record.serial); it != ca_certs_.end()) return it->second;
  }
  CF_ASSIGN_OR_RETURN(pki::X509Ptr cert, pki::CertificateFromPem(record.certificate_pem));
  std::shared_ptr<X509> shared(cert.release(), X509_free);
  std::lock_guard lock(mu_);
  ca_certs_.emplace(record.serial, shared);
  return shared;
}

Result<std::shared_ptr<const Issuer::Parent>> Issuer::FindParent(const std::string& parent_fqdn) {
  {
    std::lock_guard lock(mu_);
    if (auto it = parents_.find(parent_fqdn); it != parents_.end()) return it->second;
  }
  auto parent = std::make_shared<Parent>();
  CF_RETURN_IF_ERROR(store_.Transact(
      [&](store::Tx& tx) -> Result<void> {
        CF_ASSIGN_OR_RETURN(auto ca, store::FindCa(tx, parent_fqdn));
        if (!ca) {
          CF_ASSIGN_OR_RETURN(auto leaves, store::FindCertificatesByFqdn(tx, parent_fqdn));
          if (!leaves.empty()) {
            return MakeError(ErrorCode::kInvalidArgument, fmt::format("parent {} is a {} certificate, not a CA",
                                                                      parent_fqdn, CertTypeName(leaves.front().type)));
          }
          return MakeError(ErrorCode::kNotFound, fmt::format("no CA {}", parent_fqdn));
        }
        if (ca->key_ref.empty()) {
          return MakeError(ErrorCode::kFailedPrecondition,
                           fmt::format("the CA {} is external: certfleet holds no key to issue with", parent_fqdn));
        }
        CF_ASSIGN_OR_RETURN(auto cert, store::FindCertificate(tx, ca->serial));
        if (!cert) return MakeError(ErrorCode::kInternal, "CA " + parent_fqdn + " has no inventory row");
        if (cert->status != store::CertStatus::kActive) {
          return MakeError(ErrorCode::kFailedPrecondition, fmt::format("the CA {} is revoked", parent_fqdn));
        }
        // A CA revoked alone leaves the CAs below it active, but their chain is broken: nothing
        // new is issued under them.
        CF_ASSIGN_OR_RETURN(store::CertStatus chain, store::ChainStatus(tx, cert->serial));
        if (chain != store::CertStatus::kActive) {
          return MakeError(ErrorCode::kFailedPrecondition,
                           fmt::format("a CA above {} is revoked: its chain is broken", parent_fqdn));
        }
        parent->ca = std::move(*ca);
        parent->cert = std::move(*cert);
        return Ok();
      },
      store::TxMode::kRead));
  CF_ASSIGN_OR_RETURN(parent->x509, CaCertificate(parent->cert));
  CF_ASSIGN_OR_RETURN(std::string above, ChainOf(parent->cert));
  parent->chain_pem = parent->cert.certificate_pem + above;
  std::lock_guard lock(mu_);
  parents_[parent_fqdn] = parent;
  return std::shared_ptr<const Parent>(parent);
}

void Issuer::IssueAsync(IssueRequest request, std::string_view actor, std::function<void(Result<Issued>)> done) {
  auto made = [&]() -> Result<void> {
    CF_ASSIGN_OR_RETURN(auto parent, Validate(request));
    CF_ASSIGN_OR_RETURN(SubjectKey key, MakeKey(request));
    const std::string ca_key_ref = key.ref;
    auto built = Build(std::move(request), parent, std::move(key), actor);
    Result<void> persisted = built.ok() ? Persist(*built, done) : Result<void>(built.error());
    // A new CA's key nothing will point at (once handed over, Persist's completion removes it).
    if (!persisted.ok() && !ca_key_ref.empty()) (void)keys_.Remove(ca_key_ref);
    return persisted;
  }();
  if (!made.ok()) done(made.error());
}

Result<Issued> Issuer::Issue(IssueRequest request, std::string_view actor) {
  std::promise<Result<Issued>> promise;
  std::future<Result<Issued>> future = promise.get_future();
  IssueAsync(std::move(request), actor, [&promise](Result<Issued> r) { promise.set_value(std::move(r)); });
  return future.get();
}

Result<std::shared_ptr<const Issuer::Parent>> Issuer::Validate(const IssueRequest& req) {
  const bool is_ca = pki::IsCa(req.type);
  if (req.name.empty()) return MakeError(ErrorCode::kInvalidArgument, "a certificate needs a name");
  if (req.csr && is_ca) {
    return MakeError(ErrorCode::kInvalidArgument, "CA keys are always made by certfleet; csr_pem is for leaves");
  }
  if (req.subject != store::SubjectKind::kDnsName && is_ca) {
    return MakeError(ErrorCode::kInvalidArgument, "a CA is named by an fqdn, not an id");
  }
  const int64_t days = req.validity_days.value_or(DefaultValidityDays(req.type));
  if (days < 1 || days > kMaxValidityDays) {
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("validity_days must be 1 to {}", kMaxValidityDays));
  }
  if ((req.type == pki::CertType::kRoot) != req.parent.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "a root has no parent, and every other certificate one");
  }
  // A CA's name: a first check that it is free (checked again when writing).
  if (is_ca) {
    CF_ASSIGN_OR_RETURN(auto existing, store::Read(store_, [&](store::Tx& tx) { return store::FindCa(tx, req.name); }));
    if (existing) return MakeError(ErrorCode::kAlreadyExists, fmt::format("a CA {} exists", req.name));
  }
  if (req.type == pki::CertType::kRoot) return std::shared_ptr<const Parent>();
  CF_ASSIGN_OR_RETURN(auto parent, FindParent(req.parent));
  // A certificate cut to its issuer's life would be born expired (notBefore is set back a
  // little for clocks behind).
  if (parent->cert.not_after <= clock_.NowMillis()) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     fmt::format("the CA {} expired at {}", req.parent, FormatRfc3339(parent->cert.not_after)));
  }
  // By the inventory's type, not only the parent's pathLen: a CA activated from a certificate
  // signed outside certfleet may have none.
  if (req.type == pki::CertType::kIntermediate && parent->cert.type != pki::CertType::kRoot) {
    return MakeError(
        ErrorCode::kInvalidArgument,
        fmt::format("the parent {} is an intermediate: it signs server and device certificates only", req.parent));
  }
  return parent;
}

Result<Issuer::SubjectKey> Issuer::MakeKey(const IssueRequest& req) {
  SubjectKey out;
  if (req.csr) {
    // The CSR may be shared with the caller: the key is copied, not taken.
    if (EVP_PKEY_up_ref(req.csr->public_key.get()) != 1) return pki::OpenSslError("the CSR's key");
    out.key.reset(req.csr->public_key.get(), EVP_PKEY_free);
    return out;
  }
  if (pki::IsCa(req.type)) {
    // Made where it will be kept (a token's keys never leave it), and signed with from there.
    CF_ASSIGN_OR_RETURN(out.ref, keys_.Generate(req.key_type, req.key_backend));
    auto key = keys_.Get(out.ref);
    if (!key.ok()) {
      (void)keys_.Remove(out.ref);
      return key.error();
    }
    out.key = std::move(*key);
    return out;
  }
  CF_ASSIGN_OR_RETURN(pki::PkeyPtr made, pki::GenerateKey(req.key_type));
  CF_ASSIGN_OR_RETURN(std::string pem, pki::PrivateKeyToPem(made.get()));
  out.private_key_pem = std::move(pem);
  out.key.reset(made.release(), EVP_PKEY_free);
  return out;
}

Result<std::shared_ptr<Issuer::Built>> Issuer::Build(IssueRequest req, const std::shared_ptr<const Parent>& parent,
                                                     SubjectKey key, std::string_view actor) {
  const bool is_ca = pki::IsCa(req.type);
  X509* issuer = parent ? parent->x509.get() : nullptr;
  std::shared_ptr<EVP_PKEY> issuer_key;
  if (parent) {
    CF_ASSIGN_OR_RETURN(issuer_key, keys_.Get(parent->ca.key_ref));
  }
  const int64_t now = clock_.NowMillis();
  pki::ProfileInput input;
  input.type = req.type;
  input.fqdn = req.name;
  input.fqdn_is_id = req.subject != store::SubjectKind::kDnsName;
  input.sans = req.sans;
  input.usage = req.usage;
  input.country = req.country;
  input.state = req.state;
  input.organization = req.organization;
  input.not_before_millis = now - kBackdateMs;
  input.not_after_millis =
      req.not_after_millis.value_or(now + req.validity_days.value_or(DefaultValidityDays(req.type)) * kDayMs);
  if (parent) {
    input.crl_url = CrlUrl(parent->ca.fqdn);
    input.ocsp_url = RevocationUrl() + "/ocsp";
  }
  CF_ASSIGN_OR_RETURN(pki::ProfiledSpec profiled, pki::ApplyProfile(input, key.key.get(), issuer));
  CF_ASSIGN_OR_RETURN(
      pki::IssuedCertificate issued,
      pki::IssueCertificate(profiled.spec, key.key.get(), issuer, issuer ? issuer_key.get() : key.key.get(),
                            req.csr ? std::string_view(req.csr->spki_der) : std::string_view()));
  pki::CertificateFacts& facts = issued.facts;

  auto w = std::make_shared<Built>();
  store::CertificateRecord& rec = w->out.record;
  rec.serial = facts.serial_hex;
  rec.fqdn = req.name;
  rec.type = req.type;
  rec.parent_fqdn = parent ? parent->ca.fqdn : std::string(kRootParent);
  if (parent) rec.issuer_serial = parent->cert.serial;
  rec.status = store::CertStatus::kActive;
  rec.not_before = facts.not_before_millis;
  rec.not_after = facts.not_after_millis;
  rec.fingerprint = facts.sha256_fingerprint;
  rec.certificate_pem = std::move(facts.pem);
  rec.created_at = now;
  rec.created_by = actor;
  rec.subject_kind = req.subject;
  w->out.private_key_pem = std::move(key.private_key_pem);
  w->out.validity_clamped = profiled.validity_clamped;
  w->parent = parent;
  w->is_ca = is_ca;
  // A device's certificate named by a fresh UUID or an id has its own rules of uniqueness. A
  // CA's name is unique among CAs (InsertCa), and may not be an active leaf's either.
  w->one_active = (is_ca || req.type != pki::CertType::kDevice) && req.overlap == Overlap::kRefused;
  w->now = now;
  w->actor = std::string(actor);
  w->before_checks = std::move(req.before_checks);
  w->in_transaction = std::move(req.in_transaction);

  // Everything that needs no database is made before the write: writes run one after
  // another while the write lock is held.
  json::object details = RecordSummary(rec);
  details["serial"] = rec.serial;
  for (const auto& [k, v] : req.audit.details) details[k] = v;
  w->audit_details = json::serialize(details);
  w->audit_action = req.audit.action;
  w->event_payload = json::serialize(json::object{{"FQDN", rec.fqdn},
                                                  {"Type", SeedType(req.type)},
                                                  {"ParentFQDN", rec.parent_fqdn},
                                                  {"ValidUntil", FormatRfc3339(rec.not_after)},
                                                  {"Serial", rec.serial}});
  if (is_ca) {
    // How OCSP requests name the CA, and its first CRL, empty, so that its CRL URL answers at once.
    CF_ASSIGN_OR_RETURN(pki::X509Ptr cert, pki::CertificateFromPem(rec.certificate_pem));
    w->issuer_key_hash = HexEncode(pki::IssuerKeyHash(cert.get()));
    CF_ASSIGN_OR_RETURN(w->first_crl,
                        pki::BuildCrl(cert.get(), key.key.get(), {}, 1, now, now + Millis(options_.crl_validity)));
    w->key_ref = std::move(key.ref);
  }
  return w;
}

Result<void> Issuer::Persist(const std::shared_ptr<Built>& w, std::function<void(Result<Issued>)>& done) {
  auto piece = [this, w](store::Tx& tx) -> Result<void> {
    const store::CertificateRecord& rec = w->out.record;
    // The parent may have been revoked (here or on another node) since it was cached, or be
    // revoked by a cascade while this transaction runs: looked at when it ends, once for the
    // group of certificates it holds.
    if (w->parent) {
      CF_RETURN_IF_ERROR(store::CheckIssuerActive(tx, w->parent->cert.serial,
                                                  fmt::format("the CA {} is revoked", w->parent->ca.fqdn)));
    }
    if (w->before_checks) CF_RETURN_IF_ERROR(w->before_checks(tx));
    if (w->one_active) {
      // Another node may be issuing for the name at this moment, unseen until it commits.
      CF_ASSIGN_OR_RETURN(bool alone, store::TryLockForTransaction(tx, "active name:" + rec.fqdn));
      if (!alone) {
        return MakeError(ErrorCode::kAlreadyExists,
                         fmt::format("a certificate for {} is being issued by another request", rec.fqdn));
      }
      CF_ASSIGN_OR_RETURN(auto active, store::ActiveSerialForFqdn(tx, rec.fqdn));
      if (active) {
        return MakeError(
            ErrorCode::kAlreadyExists,
            fmt::format("an active certificate for {} exists (serial {}); revoke it first", rec.fqdn, *active));
      }
    }
    CF_RETURN_IF_ERROR(store::InsertCertificate(tx, rec));
    if (w->is_ca) {
      Result<void> ca =
          store::InsertCa(tx, store::CaRecord{rec.fqdn, rec.serial, w->key_ref, w->issuer_key_hash, 0, {}, {}, {}});
      if (!ca.ok()) {
        if (ca.error().code == ErrorCode::kAlreadyExists) {
          return MakeError(ErrorCode::kAlreadyExists, fmt::format("a CA {} exists", rec.fqdn));
        }
        return ca.error();
      }
    }
    CF_RETURN_IF_ERROR(
        store::AppendAudit(tx, w->now, w->actor, w->audit_action, "certificate:" + rec.serial, w->audit_details));
    CF_RETURN_IF_ERROR(store::AppendEvent(tx, w->now, "certificates/created", w->event_payload));
    if (w->is_ca) {
      CF_RETURN_IF_ERROR(store::SaveCrl(tx, rec.fqdn, 1, w->first_crl, w->now, w->now + Millis(options_.crl_validity)));
      CF_RETURN_IF_ERROR(QueuePublish(tx, rec.fqdn, 1, w->now));
    }
    if (w->in_transaction) CF_RETURN_IF_ERROR(w->in_transaction(tx, rec));
    return Ok();
  };
  writes_.Submit(std::move(piece), [this, w, done = std::move(done)](const Result<void>& written) {
    if (!written.ok()) {
      if (w->is_ca && !store::MayHaveCommitted(written.error())) (void)keys_.Remove(w->key_ref);
      return done(written.error());
    }
    const store::CertificateRecord& rec = w->out.record;
    if (w->parent) w->out.chain_pem = w->parent->chain_pem;
    log::Info("certificate issued",
              {{"serial", rec.serial}, {"fqdn", rec.fqdn}, {"type", CertTypeName(rec.type)}, {"actor", w->actor}});
    done(std::move(w->out));
  });
  return Ok();
}

Result<Issued> Issuer::Rotate(std::string_view fqdn, std::string_view new_fqdn, InTransaction in_transaction,
                              std::string_view actor) {
  const std::string old_fqdn = AsciiLower(fqdn);
  std::string key_backend;  // the successor's key is kept where the old one's is
  CF_ASSIGN_OR_RETURN(auto old, store::Read(store_, [&](store::Tx& tx) -> Result<store::CertificateRecord> {
                        CF_ASSIGN_OR_RETURN(auto ca, store::FindCa(tx, old_fqdn));
                        if (!ca) return MakeError(ErrorCode::kNotFound, fmt::format("no CA {}", fqdn));
                        key_backend = pki::KeyBackendOf(ca->key_ref);
                        CF_ASSIGN_OR_RETURN(auto cert, store::FindCertificate(tx, ca->serial));
                        if (!cert) return MakeError(ErrorCode::kInternal, "CA " + old_fqdn + " has no inventory row");
                        return std::move(*cert);
                      }));
  if (old.type != CertType::kIntermediate) {
    return MakeError(ErrorCode::kInvalidArgument, "only intermediates rotate; a new root is a new hierarchy");
  }
  CF_ASSIGN_OR_RETURN(auto x509, CaCertificate(old));
  IssueRequest request;
  request.type = pki::CertType::kIntermediate;
  request.name = new_fqdn.empty() ? NextGeneration(old_fqdn) : AsciiLower(new_fqdn);
  if (!pki::IsValidDnsName(request.name)) {
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("fqdn '{}' is not a valid DNS name", request.name));
  }
  request.parent = old.parent_fqdn;
  const X509_NAME* subject = X509_get_subject_name(x509.get());
  request.country = pki::NameEntry(subject, NID_countryName);
  request.state = pki::NameEntry(subject, NID_stateOrProvinceName);
  request.organization = pki::NameEntry(subject, NID_organizationName);
  request.in_transaction = std::move(in_transaction);
  request.key_backend = key_backend;
  return Issue(std::move(request), actor);
}

Result<bool> RevokeSupersededAfter(store::Tx& tx, const std::string& serial, int64_t run_at, int64_t now) {
  constexpr int kRevokeAttempts = 10;
  store::NewJob job;
  job.kind = std::string(kRevokeSupersededJob);
  job.payload = boost::json::serialize(boost::json::object{{"serial", serial}});
  job.run_at = run_at;
  job.max_attempts = kRevokeAttempts;
  job.dedupe_key = SupersededJobKey(serial);
  CF_ASSIGN_OR_RETURN(std::optional<int64_t> queued, store::EnqueueJob(tx, job, now));
  return queued.has_value();
}

Result<bool> KeepSuperseded(store::Tx& tx, const std::string& serial) {
  return store::CancelWaitingJob(tx, SupersededJobKey(serial));
}

std::string NextGeneration(std::string_view fqdn) {
  const size_t dot = std::min(fqdn.find('.'), fqdn.size());
  std::string_view label = fqdn.substr(0, dot);
  int generation = 1;
  if (const size_t g = label.rfind("-g"); g != std::string_view::npos && g + 2 < label.size()) {
    std::string_view digits = label.substr(g + 2);
    int n = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (ec == std::errc() && end == digits.data() + digits.size() && n >= 2) {
      generation = n;
      label = label.substr(0, g);
    }
  }
  return fmt::format("{}-g{}{}", label, generation + 1, fqdn.substr(dot));
}

Result<std::vector<store::CertificateRecord>> Issuer::List(const store::CertificateFilter& filter) {
  return store::Read(store_, [&](store::Tx& tx) { return store::ListCertificates(tx, filter); });
}

Result<store::CertificateRecord> Issuer::Get(std::string_view id) {
  const std::string key = AsciiLower(id);
  const std::optional<std::string> serial = pki::CanonicalSerial(id);
  return store::Read(store_, [&](store::Tx& tx) -> Result<store::CertificateRecord> {
    if (serial) {
      CF_ASSIGN_OR_RETURN(auto by_serial, store::FindCertificate(tx, *serial));
      if (by_serial) return *by_serial;
    }
    CF_ASSIGN_OR_RETURN(auto by_fqdn, store::FindCertificatesByFqdn(tx, key));
    if (!by_fqdn.empty()) return by_fqdn.front();
    return MakeError(ErrorCode::kNotFound, fmt::format("no certificate with serial or fqdn {}", id));
  });
}

Result<std::string> Issuer::ChainOf(const store::CertificateRecord& record) {
  return store::Read(store_, [&](store::Tx& tx) -> Result<std::string> {
    std::string chain;
    std::optional<std::string> next = record.issuer_serial;
    for (int depth = 0; next && depth < 8; ++depth) {
      CF_ASSIGN_OR_RETURN(auto issuer, store::FindCertificate(tx, *next));
      if (!issuer) break;
      chain += issuer->certificate_pem;
      next = issuer->issuer_serial;
    }
    return chain;
  });
}

Result<void> Issuer::ResignCrl(store::Tx& tx, std::string_view ca_fqdn, int64_t now) {
  CF_RETURN_IF_ERROR(store::LockCaForCrl(tx, ca_fqdn));
  CF_ASSIGN_OR_RETURN(auto ca, store::FindCa(tx, ca_fqdn));
  if (!ca) return MakeError(ErrorCode::kNotFound, fmt::format("no CA {}", ca_fqdn));
  CF_ASSIGN_OR_RETURN(auto cert_row, store::FindCertificate(tx, ca->serial));
  if (!cert_row) return MakeError(ErrorCode::kInternal, "CA without inventory row");
  CF_ASSIGN_OR_RETURN(auto cert, CaCertificate(*cert_row));
  CF_ASSIGN_OR_RETURN(auto key, keys_.Get(ca->key_ref));
  CF_ASSIGN_OR_RETURN(auto revoked, store::RevokedChildren(tx, ca->serial));
  std::vector<pki::RevokedEntry> entries;
  entries.reserve(revoked.size());
  for (const auto& r : revoked)
    entries.push_back({r.serial, r.revoked_at.value_or(now), r.revocation_reason.value_or(0)});
  const int64_t number = ca->crl_number + 1;
  CF_ASSIGN_OR_RETURN(std::string der,
                      pki::BuildCrl(cert.get(), key.get(), entries, number, now, now + Millis(options_.crl_validity)));
  CF_RETURN_IF_ERROR(store::SaveCrl(tx, ca_fqdn, number, der, now, now + Millis(options_.crl_validity)));
  return QueuePublish(tx, ca_fqdn, number, now);
}

Result<void> Issuer::QueuePublish(store::Tx& tx, std::string_view ca_fqdn, int64_t number, int64_t now) {
  // Published after the commit, by a job, so that a failing blob store delays it, never loses it.
  store::NewJob publish;
  publish.kind = std::string(kCrlPublishJob);
  publish.payload = json::serialize(json::object{{"ca", ca_fqdn}});
  publish.run_at = now;
  publish.max_attempts = kPublishAttempts;
  publish.dedupe_key = fmt::format("crl-publish:{}:{}", ca_fqdn, number);
  CF_RETURN_IF_ERROR(store::EnqueueJob(tx, publish, now));
  return Ok();
}

Result<void> Issuer::PublishCrl(std::string_view ca_fqdn, blob::BlobStore& blob) {
  const std::string fqdn = AsciiLower(ca_fqdn);
  CF_ASSIGN_OR_RETURN(auto ca, store::Read(store_, [&](store::Tx& tx) { return store::FindCa(tx, fqdn); }));
  if (!ca || !ca->crl_der) return MakeError(ErrorCode::kInvalidArgument, fmt::format("no CRL of CA {}", ca_fqdn));
  const std::string key = "crl/" + fqdn + ".crl";
  CF_RETURN_IF_ERROR(blob.Put(key, *ca->crl_der));
  const int64_t now = clock_.NowMillis();
  const json::object event{{"ca", fqdn},
                           {"crl_number", ca->crl_number},
                           {"key", key},
                           {"store", blob.Describe()},
                           {"url", CrlUrl(fqdn)},
                           {"this_update", FormatRfc3339(ca->crl_this_update.value_or(now))},
                           {"next_update", FormatRfc3339(ca->crl_next_update.value_or(now))}};
  return store::Write(store_, [&](store::Tx& tx) -> Result<void> {
    return store::AppendEvent(tx, now, "crl/published", json::serialize(event));
  });
}

Result<Revoked> Issuer::Revoke(std::string_view serial, std::string_view reason_name, bool cascade,
                               std::string_view actor) {
  CF_ASSIGN_OR_RETURN(int reason, pki::ParseRevocationReason(reason_name.empty() ? "unspecified" : reason_name));
  const std::optional<std::string> canonical = pki::CanonicalSerial(serial);
  if (!canonical) return MakeError(ErrorCode::kNotFound, fmt::format("no certificate with serial {}", serial));
  const std::string& key = *canonical;
  const int64_t now = clock_.NowMillis();
  // The CAs whose CRLs list a newly revoked certificate, with their CRL's number then.
  std::map<std::string, int64_t> crls;
  auto result = store::Write(store_, [&](store::Tx& tx) -> Result<Revoked> {
    crls.clear();
    CF_ASSIGN_OR_RETURN(auto cert, store::FindCertificate(tx, key));
    if (!cert) return MakeError(ErrorCode::kNotFound, fmt::format("no certificate with serial {}", serial));
    Revoked out;
    std::vector<store::CertificateRecord> touched;  // newly revoked ones
    std::vector<store::CascadeChild> queue{{cert->serial, IsCa(cert->type)}};
    for (size_t i = 0; i < queue.size() && i < kMaxCascade; ++i) {
      // A CA's children are read under its lock: none being written at the time is missed.
      if (cascade && queue[i].ca) CF_RETURN_IF_ERROR(store::LockIssuer(tx, queue[i].serial));
      CF_ASSIGN_OR_RETURN(bool revoked, store::RevokeCertificate(tx, queue[i].serial, now, reason));
      if (revoked) {
        ++out.newly_revoked;
        CF_ASSIGN_OR_RETURN(auto row, store::FindCertificate(tx, queue[i].serial));
        touched.push_back(std::move(*row));
      }
      if (cascade && queue[i].ca) {
        CF_ASSIGN_OR_RETURN(auto children, store::CascadeChildren(tx, queue[i].serial));
        queue.insert(queue.end(), children.begin(), children.end());
      }
    }
    if (out.newly_revoked == 0) {
      out.record = *cert;
      return out;  // already revoked: nothing to do
    }
    // Every CRL that lists a newly revoked certificate is re-signed after the commit, by a job
    // if not at once: the revocation does not wait on the CA's key.
    for (const auto& t : touched) {
      if (t.type == CertType::kRoot) continue;
      if (crls.contains(t.parent_fqdn)) continue;
      // Under the CRL's lock: a CRL numbered above this one is signed after the commit.
      CF_RETURN_IF_ERROR(store::LockCaForCrl(tx, t.parent_fqdn));
      CF_ASSIGN_OR_RETURN(auto ca, store::FindCa(tx, t.parent_fqdn));
      if (!ca || ca->key_ref.empty()) continue;  // an external CA's is not ours
      crls.emplace(t.parent_fqdn, ca->crl_number);
      store::NewJob resign;
      resign.kind = std::string(kCrlResignJob);
      resign.payload = json::serialize(json::object{{"ca", t.parent_fqdn}, {"crl_number", ca->crl_number}});
      resign.run_at = now;
      resign.max_attempts = kPublishAttempts;
      resign.dedupe_key = fmt::format("crl-resign:{}:{}", t.parent_fqdn, ca->crl_number);
      CF_RETURN_IF_ERROR(store::EnqueueJob(tx, resign, now));
    }
    // Revocation events take their ids in the order their transactions commit: every node's
    // OCSP cache goes stale when the newest id moves (RevocationsSeen), and an id taken before
    // another but committed after it would not move it.
    CF_RETURN_IF_ERROR(store::LockForTransaction(tx, kRevokedEventLock));
    for (const auto& t : touched) {
      json::object details = RecordSummary(t);
      details["reason"] = reason_name.empty() ? "unspecified" : std::string(reason_name);
      details["cascade_from"] = t.serial == cert->serial ? json::value(nullptr) : json::value(cert->serial);
      CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "certificate.revoke", "certificate:" + t.serial,
                                            json::serialize(details)));
      CF_RETURN_IF_ERROR(store::AppendEvent(
          tx, now, kRevokedEvent,
          json::serialize(json::object{{"FQDN", t.fqdn}, {"Serial", t.serial}, {"Reason", details["reason"]}})));
    }
    CF_ASSIGN_OR_RETURN(auto updated, store::FindCertificate(tx, key));
    out.record = std::move(*updated);
    return out;
  });
  if (result.ok() && result->newly_revoked > 0) {
    {
      std::lock_guard lock(mu_);
      ocsp_cache_.clear();
      ocsp_order_.clear();
      parents_.clear();
    }
    for (const auto& [fqdn, number] : crls) {
      if (Result<void> done = ResignCrlAfter(fqdn, number); !done.ok()) {
        log::Warn("a CRL could not be re-signed after a revocation; a job tries again",
                  {{"ca", fqdn}, {"error", done.error().message}});
      }
    }
  }
  return result;
}

Result<void> Issuer::ResignCrlAfter(std::string_view ca_fqdn, int64_t crl_number) {
  return store::Write(store_, [&](store::Tx& tx) -> Result<void> {
    CF_RETURN_IF_ERROR(store::LockCaForCrl(tx, ca_fqdn));
    CF_ASSIGN_OR_RETURN(auto ca, store::FindCa(tx, ca_fqdn));
    if (!ca || ca->crl_number > crl_number) return Ok();  // signed since
    return ResignCrl(tx, ca_fqdn, clock_.NowMillis());
  });
}

Result<Issuer::CurrentCrl> Issuer::Crl(std::string_view ca_fqdn) {
  const std::string fqdn = AsciiLower(ca_fqdn);
  CF_ASSIGN_OR_RETURN(auto ca, store::Read(store_, [&](store::Tx& tx) { return store::FindCa(tx, fqdn); }));
  if (!ca) return MakeError(ErrorCode::kNotFound, fmt::format("no CA {}", ca_fqdn));
  if (ca->key_ref.empty()) {
    return MakeError(ErrorCode::kNotFound,
                     fmt::format("the CA {} is external: whoever holds its key publishes its CRL", ca_fqdn));
  }
  const int64_t now = clock_.NowMillis();
  auto current = [](const store::CaRecord& r) {
    return CurrentCrl{*r.crl_der, r.crl_this_update.value_or(0), r.crl_next_update.value_or(0)};
  };
  if (ca->crl_der && ca->crl_next_update && *ca->crl_next_update > now) return current(*ca);
  return store::Write(store_, [&](store::Tx& tx) -> Result<CurrentCrl> {
    CF_RETURN_IF_ERROR(ResignCrl(tx, fqdn, now));
    CF_ASSIGN_OR_RETURN(auto fresh, store::FindCa(tx, fqdn));
    return current(*fresh);
  });
}

Result<int> Issuer::RefreshDueCrls() {
  const int64_t now = clock_.NowMillis();
  const int64_t due_before = now + Millis(options_.crl_validity) / 2;
  CF_ASSIGN_OR_RETURN(auto due,
                      store::Read(store_, [&](store::Tx& tx) { return store::CasWithCrlDue(tx, due_before); }));
  // Each CA in a transaction of its own: one whose key cannot be used (its token down, say)
  // holds up no other's CRL.
  int resigned = 0;
  std::optional<Error> failed;
  for (const auto& fqdn : due) {
    Result<void> done = store::Write(store_, [&](store::Tx& tx) { return ResignCrl(tx, fqdn, now); });
    if (done.ok()) {
      ++resigned;
      continue;
    }
    log::Error("a CA's CRL could not be re-signed", {{"ca", fqdn}, {"error", done.error().message}});
    if (!failed) failed = done.error();
  }
  if (failed) return *failed;  // the job runs again for what is still due
  return resigned;
}

std::string Issuer::Ocsp(std::string_view request_der) {
  auto request = pki::ParseOcspRequest(request_der);
  if (!request.ok()) return pki::OcspErrorResponse(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  const bool has_nonce = OCSP_REQUEST_get_ext_by_NID(request->req.get(), NID_id_pkix_OCSP_Nonce, -1) >= 0;
  // Keyed by whole CertIDs: only requests whose CertIDs are exactly the CA's are cached (see
  // below), so every client that asks rightly gets a response that names what it asked.
  std::string cache_key;
  for (const auto& q : request->questions) {
    cache_key += HexEncode(q.issuer_name_hash) + ":" + HexEncode(q.issuer_key_hash) + ":" + q.serial_hex + ";";
  }
  const int64_t now = clock_.NowMillis();
  if (!has_nonce) {
    // An answer cached before a revocation that any node made since is not served.
    const int64_t seen = RevocationsSeen(now);
    std::lock_guard lock(mu_);
    if (auto it = ocsp_cache_.find(cache_key);
        it != ocsp_cache_.end() && it->second.expires_at > now && it->second.revocations == seen) {
      return it->second.der;
    }
  }
  bool all_known = true;  // every question names a certificate of this CA by its exact CertID
  int64_t revocations = 0;
  auto answered = store::Read(store_, [&](store::Tx& tx) -> Result<std::string> {
    all_known = true;
    // Read first: a revocation committed after it makes this answer stale, and so unserved.
    CF_ASSIGN_OR_RETURN(revocations, store::LastEventIdOf(tx, kRevokedEvent));
    CF_ASSIGN_OR_RETURN(auto responder, OcspResponder(tx, request->questions.front()));
    if (!responder) return std::string();  // not ours to answer for
    const auto& [ca, ca_cert] = *responder;
    std::vector<pki::OcspAnswer> answers;
    for (const auto& q : request->questions) {
      pki::OcspAnswer a;
      // A CertID that does not name this CA exactly (a wrong name hash, another CA's key)
      // is answered "unknown": RFC 6960 matches responses to requests by the whole CertID.
      if (NamesCa(q, ca_cert.get())) {
        CF_ASSIGN_OR_RETURN(auto cert, store::FindCertificate(tx, q.serial_hex));
        if (cert && cert->issuer_serial == ca.serial) {
          a.status = cert->status == store::CertStatus::kRevoked ? pki::OcspStatus::kRevoked : pki::OcspStatus::kGood;
          a.revoked_at_millis = cert->revoked_at.value_or(0);
          a.reason = cert->revocation_reason.value_or(0);
        }
      }
      all_known = all_known && a.status != pki::OcspStatus::kUnknown;
      answers.push_back(a);
    }
    CF_ASSIGN_OR_RETURN(auto key, keys_.Get(ca.key_ref));
    return pki::BuildOcspResponse(*request, ca_cert.get(), key.get(), answers, now,
                                  now + Millis(options_.ocsp_validity));
  });
  if (!answered.ok()) {
    log::Error("OCSP", {{"error", answered.error().message}});
    return pki::OcspErrorResponse(OCSP_RESPONSE_STATUS_INTERNALERROR);
  }
  if (answered->empty()) return pki::OcspErrorResponse(OCSP_RESPONSE_STATUS_UNAUTHORIZED);
  // Unknown serials are answered afresh each time: anyone may ask about any number of them.
  if (!has_nonce && all_known) CacheOcsp(std::move(cache_key), *answered, now, revocations);
  return *answered;
}

namespace {

// The digests a CertID may name its issuer with (RFC 6960 4.1.1: the client's choice).
bool CertIdDigest(int nid) { return nid == NID_sha1 || nid == NID_sha256 || nid == NID_sha384 || nid == NID_sha512; }

}  // namespace

bool Issuer::NamesCa(const pki::OcspQuestion& q, X509* ca) {
  return CertIdDigest(q.hash_nid) && q.issuer_key_hash == pki::IssuerKeyHash(ca, q.hash_nid) &&
         q.issuer_name_hash == pki::IssuerNameHash(ca, q.hash_nid);
}

Result<std::optional<std::pair<store::CaRecord, std::shared_ptr<X509>>>> Issuer::OcspResponder(
    store::Tx& tx, const pki::OcspQuestion& q) {
  using Found = std::optional<std::pair<store::CaRecord, std::shared_ptr<X509>>>;
  if (!CertIdDigest(q.hash_nid)) return Found();
  // The issuer of the certificate asked about, then (SHA-1 being how the CAs are indexed) the
  // CAs with the CertID's key: the first whose name and key the CertID names exactly.
  std::vector<store::CaRecord> candidates;
  CF_ASSIGN_OR_RETURN(auto cert, store::FindCertificate(tx, q.serial_hex));
  if (cert && cert->issuer_serial) {
    CF_ASSIGN_OR_RETURN(auto issuer, store::FindCertificate(tx, *cert->issuer_serial));
    if (issuer) {
      CF_ASSIGN_OR_RETURN(auto ca, store::FindCa(tx, issuer->fqdn));
      if (ca && ca->serial == issuer->serial) candidates.push_back(std::move(*ca));
    }
  }
  if (q.hash_nid == NID_sha1) {
    CF_ASSIGN_OR_RETURN(auto same_key, store::FindCasByKeyHash(tx, HexEncode(q.issuer_key_hash)));
    candidates.insert(candidates.end(), same_key.begin(), same_key.end());
  }
  Found by_key;  // else the first with the CertID's key, which answers "unknown" to a wrong name
  for (auto& ca : candidates) {
    if (ca.key_ref.empty()) continue;  // an external CA: its key signs its answers elsewhere
    CF_ASSIGN_OR_RETURN(auto ca_row, store::FindCertificate(tx, ca.serial));
    if (!ca_row) return MakeError(ErrorCode::kInternal, "CA " + ca.fqdn + " has no inventory row");
    CF_ASSIGN_OR_RETURN(auto ca_cert, CaCertificate(*ca_row));
    if (NamesCa(q, ca_cert.get())) return Found(std::pair(std::move(ca), std::move(ca_cert)));
    if (!by_key && q.issuer_key_hash == pki::IssuerKeyHash(ca_cert.get(), q.hash_nid)) {
      by_key.emplace(std::move(ca), std::move(ca_cert));
    }
  }
  return by_key;
}

int64_t Issuer::RevocationsSeen(int64_t now) {
  {
    std::lock_guard lock(mu_);
    if (now - revocations_checked_at_ < kRevocationCheckMs) return revocations_seen_;
    revocations_checked_at_ = now;
  }
  auto latest = store::Read(store_, [](store::Tx& tx) { return store::LastEventIdOf(tx, kRevokedEvent); });
  std::lock_guard lock(mu_);
  const int64_t seen = latest.ok() ? *latest : -1;
  // Another node revoked: its CAs may be among them, so the issuing CAs are read again too.
  if (seen != revocations_seen_) parents_.clear();
  revocations_seen_ = seen;
  return seen;
}

void Issuer::CacheOcsp(std::string key, const std::string& der, int64_t now, int64_t revocations) {
  if (options_.ocsp_cache_entries == 0) return;
  const int64_t expires_at = now + Millis(options_.ocsp_validity) / 2;
  std::lock_guard lock(mu_);
  // Every entry lives as long, so the oldest inserted expires first: evict from the front.
  while (!ocsp_order_.empty() &&
         (ocsp_order_.size() >= options_.ocsp_cache_entries || ocsp_order_.front().second <= now)) {
    auto it = ocsp_cache_.find(ocsp_order_.front().first);
    if (it != ocsp_cache_.end() && it->second.expires_at == ocsp_order_.front().second) ocsp_cache_.erase(it);
    ocsp_order_.pop_front();
  }
  ocsp_order_.emplace_back(key, expires_at);
  ocsp_cache_[std::move(key)] = CachedOcsp{der, expires_at, revocations};
}

}  // namespace certfleet::issuance
