#include "renewal/host_service.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>

#include "core/crypto.h"
#include "core/text.h"
#include "pki/key.h"
#include "pki/profile.h"
#include "store/audit_repo.h"
#include "store/jobs_repo.h"

namespace certfleet::renewal {
namespace {

namespace json = boost::json;

// Enrollment tokens: 32 random bytes, as API tokens.
constexpr size_t kTokenBytes = 32;

Error Invalid(std::string message) { return MakeError(ErrorCode::kInvalidArgument, std::move(message)); }

Result<void> CheckHostId(std::string_view id) {
  if (id.empty() || id.size() > HostService::kMaxHostId) {
    return Invalid(fmt::format("host_id must have 1 to {} characters", HostService::kMaxHostId));
  }
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') {
      return Invalid("host_id may hold letters, digits, '.' and '-' only");
    }
  }
  // A host id names folders and URL segments: "." and ".." (and any empty label) never.
  if (id.front() == '.' || id.back() == '.' || id.find("..") != std::string_view::npos) {
    return Invalid("host_id is labels separated by single dots, like a host name ('.' and '..' are refused)");
  }
  // It is the common name of the host's certificate, which the lint holds to a host name's rules.
  if (id.size() > pki::kMaxCommonName) {
    return Invalid(
        fmt::format("host_id must have at most {} characters: it is the common name of the host's "
                    "certificate (RFC 5280's upper bound)",
                    pki::kMaxCommonName));
  }
  if (!pki::IsValidDnsName(id)) {
    return Invalid("host_id's labels are 1 to 63 letters, digits and '-', none starting or ending with '-'");
  }
  return Ok();
}

Result<void> CheckSans(const std::vector<std::string>& sans) {
  if (sans.size() > HostService::kMaxSans) return Invalid(fmt::format("at most {} sans", HostService::kMaxSans));
  for (const auto& san : sans) {
    if (!pki::IsValidDnsName(san) && !pki::IsIpAddress(san)) {
      return Invalid(fmt::format("san '{}' is neither a DNS name nor an IP address", san.substr(0, 100)));
    }
  }
  return Ok();
}

Result<void> CheckCommand(const std::optional<std::string>& command) {
  if (!command) return Ok();
  if (command->empty() || command->size() > HostService::kMaxCommand) {
    return Invalid(fmt::format("reload_command must have 1 to {} characters", HostService::kMaxCommand));
  }
  for (char c : *command) {
    if (static_cast<unsigned char>(c) < 0x20) return Invalid("reload_command may not hold control characters");
  }
  return Ok();
}

// Every field of a registration, as Create and Update check them.
Result<void> CheckSpec(const HostSpec& spec) {
  CF_RETURN_IF_ERROR(CheckHostId(spec.host_id));
  if (spec.cert_path) CF_RETURN_IF_ERROR(CheckPath("cert_path", *spec.cert_path));
  if (spec.key_path) CF_RETURN_IF_ERROR(CheckPath("key_path", *spec.key_path));
  if (spec.cacert_path) CF_RETURN_IF_ERROR(CheckPath("cacert_path", *spec.cacert_path));
  CF_RETURN_IF_ERROR(CheckSans(spec.sans));
  if (spec.key_type) CF_RETURN_IF_ERROR(CheckKeyType(*spec.key_type));
  if (spec.profile) CF_RETURN_IF_ERROR(CheckProfile(*spec.profile));
  if (spec.renewal_threshold_days) CF_RETURN_IF_ERROR(CheckThresholdDays(*spec.renewal_threshold_days));
  return CheckCommand(spec.reload_command);
}

// A credential's host pattern: a host id, or one whose labels may hold '*' but the last, so
// that no pattern matches every host.
Result<void> CheckHostPattern(std::string_view pattern) {
  std::string as_id(pattern);
  std::replace(as_id.begin(), as_id.end(), '*', 'x');
  if (!CheckHostId(as_id).ok()) {
    return Invalid(fmt::format("'{}' is not a host id or pattern: labels of letters, digits, '-' and '*'",
                               Escaped(pattern.substr(0, HostService::kMaxHostId))));
  }
  const size_t last_dot = pattern.rfind('.');
  if (pattern.find('*') != std::string_view::npos &&
      (last_dot == std::string_view::npos || pattern.find('*', last_dot) != std::string_view::npos)) {
    return Invalid(
        fmt::format("pattern '{}' must end in a label without '*' (like web-*.example.com)", Escaped(pattern)));
  }
  return Ok();
}

// The record's settings from `spec` (its host_id aside).
void ApplySpec(store::HostRecord& h, const HostSpec& spec) {
  h.cert_path = spec.cert_path;
  h.key_path = spec.key_path;
  h.cacert_path = spec.cacert_path;
  h.sans = json::serialize(json::value_from(spec.sans));
  h.key_type = spec.key_type;
  h.profile = spec.profile;
  h.threshold_days = spec.renewal_threshold_days;
  h.reload_command = spec.reload_command;
}

}  // namespace

json::object SpecJson(const HostSpec& spec) {
  auto opt = [](const auto& v) { return v ? json::value_from(*v) : json::value(nullptr); };
  return {{"cert_path", opt(spec.cert_path)},
          {"key_path", opt(spec.key_path)},
          {"cacert_path", opt(spec.cacert_path)},
          {"sans", json::value_from(spec.sans)},
          {"key_type", opt(spec.key_type)},
          {"profile", opt(spec.profile)},
          {"renewal_threshold_days", opt(spec.renewal_threshold_days)},
          {"reload_command", opt(spec.reload_command)}};
}

Error NoSuchHost(std::string_view host_id) {
  return MakeError(ErrorCode::kNotFound, fmt::format("no host {}", host_id.substr(0, HostService::kMaxHostId)));
}

Result<void> CheckPath(std::string_view field, std::string_view path) {
  if (path.empty() || path.size() > HostService::kMaxPath || path.front() != '/') {
    return Invalid(fmt::format("{} must be an absolute path of at most {} characters", field, HostService::kMaxPath));
  }
  for (char c : path) {
    if (static_cast<unsigned char>(c) < 0x20) return Invalid(fmt::format("{} may not hold control characters", field));
  }
  for (size_t start = 1; start <= path.size();) {
    const size_t end = std::min(path.find('/', start), path.size());
    if (path.substr(start, end - start) == "..") return Invalid(fmt::format("{} may not hold '..'", field));
    start = end + 1;
  }
  return Ok();
}

Result<void> CheckKeyType(std::string_view key_type) {
  if (!pki::ParseKeyType(key_type).ok()) {
    return Invalid(fmt::format("key_type '{}' is not one of ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096, ed25519",
                               key_type.substr(0, 40)));
  }
  return Ok();
}

Result<void> CheckProfile(std::string_view profile) {
  if (profile != "host" && profile != "client") return Invalid("profile must be host or client");
  return Ok();
}

Result<void> CheckThresholdDays(int64_t days) {
  if (days < 1 || days > HostService::kMaxThresholdDays) {
    return Invalid(fmt::format("renewal_threshold_days must be 1 to {}", HostService::kMaxThresholdDays));
  }
  return Ok();
}

Result<store::HostRecord> HostService::NewRecord(const HostSpec& spec, int64_t now) {
  CF_RETURN_IF_ERROR(CheckSpec(spec));
  // Host names compare without case (in DNS and in certificates): a new host in capitals
  // could be another's twin, enrolled by a fleet secret whose pattern matches both.
  if (AsciiLower(spec.host_id) != spec.host_id) {
    return Invalid(
        fmt::format("host_id must be lower case (host names compare without case): {}", AsciiLower(spec.host_id)));
  }
  store::HostRecord h;
  h.host_id = spec.host_id;
  ApplySpec(h, spec);
  h.status = store::HostStatus::kEnrolling;
  h.renew_at = now;  // no certificate yet: due at once
  h.created_at = h.updated_at = now;
  return h;
}

Result<void> HostService::Insert(store::Tx& tx, const store::HostRecord& host, std::string_view actor, int64_t now) {
  Result<void> inserted = store::InsertHost(tx, host);
  if (!inserted.ok() && inserted.error().code == ErrorCode::kAlreadyExists) {
    return MakeError(ErrorCode::kAlreadyExists, fmt::format("host {} exists", host.host_id));
  }
  if (!inserted.ok()) return inserted.error();
  CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "host.create", "host:" + host.host_id,
                                        json::serialize(json::object{{"sans", json::value_from(SpecOf(host).sans)}})));
  return Ok();
}

Result<store::HostRecord> HostService::Create(const HostSpec& spec, std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  CF_ASSIGN_OR_RETURN(store::HostRecord h, NewRecord(spec, now));
  CF_RETURN_IF_ERROR(store::Write(store_, [&](store::Tx& tx) { return Insert(tx, h, actor, now); }));
  return h;
}

Result<std::vector<RowResult>> HostService::CreateMany(const std::vector<Result<HostSpec>>& rows,
                                                       std::string_view actor) {
  if (rows.size() > kMaxBulkHosts) {
    return Invalid(fmt::format("{} hosts: at most {} in one request; split the list", rows.size(), kMaxBulkHosts));
  }
  const int64_t now = clock_.NowMillis();
  return store::Write(store_, [&](store::Tx& tx) -> Result<std::vector<RowResult>> {
    std::vector<RowResult> out;
    out.reserve(rows.size());
    for (const auto& row : rows) {
      RowResult& r = out.emplace_back();
      auto reject = [&r](const Error& e) {
        r.outcome = RowOutcome::kRejected;
        r.error = e.message;
      };
      if (!row.ok()) {
        reject(row.error());
        continue;
      }
      r.host_id = row->host_id;
      Result<store::HostRecord> record = NewRecord(*row, now);
      if (!record.ok()) {
        reject(record.error());
        continue;
      }
      CF_ASSIGN_OR_RETURN(auto existing, store::FindHost(tx, row->host_id));
      if (!existing) {
        CF_RETURN_IF_ERROR(Insert(tx, *record, actor, now));
        r.outcome = RowOutcome::kCreated;
      } else if (SpecJson(SpecOf(*existing)) == SpecJson(*row)) {
        r.outcome = RowOutcome::kUnchanged;
      } else {
        reject(MakeError(ErrorCode::kAlreadyExists,
                         fmt::format("host {} exists with other settings; PATCH /v1/hosts/{} changes them",
                                     row->host_id, row->host_id)));
      }
    }
    return out;
  });
}

Result<void> HostService::Lock(store::Tx& tx, std::string_view host_id) {
  return store::LockForTransaction(tx, "renewal host:" + std::string(host_id));
}

Result<store::HostRecord> HostService::Update(std::string_view host_id, const Change& change, std::string_view actor) {
  constexpr int64_t kDayMs = int64_t{24} * 3600 * 1000;
  const int64_t now = clock_.NowMillis();
  return store::Write(store_, [&](store::Tx& tx) -> Result<store::HostRecord> {
    CF_RETURN_IF_ERROR(Lock(tx, host_id));
    CF_ASSIGN_OR_RETURN(auto h, store::FindHost(tx, host_id));
    if (!h) return NoSuchHost(host_id);
    CF_ASSIGN_OR_RETURN(HostSpec spec, change(SpecOf(*h)));
    if (spec.host_id != h->host_id) return Invalid("host_id cannot change; register a new host instead");
    CF_RETURN_IF_ERROR(CheckSpec(spec));
    ApplySpec(*h, spec);
    if (h->not_after) h->renew_at = *h->not_after - SettingsOf(*h).threshold_days * kDayMs;
    h->updated_at = now;
    CF_RETURN_IF_ERROR(store::UpdateHost(tx, *h));
    CF_RETURN_IF_ERROR(
        store::AppendAudit(tx, now, actor, "host.update", "host:" + h->host_id, json::serialize(SpecJson(spec))));
    return std::move(*h);
  });
}

HostSpec HostService::SpecOf(const store::HostRecord& host) {
  HostSpec spec;
  spec.host_id = host.host_id;
  spec.cert_path = host.cert_path;
  spec.key_path = host.key_path;
  spec.cacert_path = host.cacert_path;
  boost::system::error_code ec;
  const json::value stored = json::parse(host.sans, ec);  // written by ApplySpec: a JSON array of strings
  if (!ec && stored.is_array()) {
    for (const auto& s : stored.get_array()) {
      if (s.is_string()) spec.sans.emplace_back(s.get_string());
    }
  }
  spec.key_type = host.key_type;
  spec.profile = host.profile;
  spec.renewal_threshold_days = host.threshold_days;
  spec.reload_command = host.reload_command;
  return spec;
}

Result<std::string> HostService::Reactivate(std::string_view host_id, std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  return store::Write(store_, [&](store::Tx& tx) -> Result<std::string> {
    CF_RETURN_IF_ERROR(Lock(tx, host_id));
    CF_ASSIGN_OR_RETURN(auto h, store::FindHost(tx, host_id));
    if (!h) return NoSuchHost(host_id);
    if (h->status != store::HostStatus::kRevoked && h->status != store::HostStatus::kFailed) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       fmt::format("host {} is {}: only a revoked or failed host is reactivated", h->host_id,
                                   store::HostStatusName(h->status)));
    }
    h->status = store::HostStatus::kEnrolling;
    h->renew_at = now;
    h->last_error.reset();
    h->updated_at = now;
    CF_RETURN_IF_ERROR(store::UpdateHost(tx, *h));
    return NewToken(tx, h->host_id, now, "host.reactivate", actor);
  });
}

Result<std::string> HostService::NewToken(store::Tx& tx, const std::string& host_id, int64_t now,
                                          std::string_view action, std::string_view actor) const {
  std::string token = RandomToken(kTokenBytes);
  const int64_t expires_at = now + Millis(options_.token_ttl);
  CF_RETURN_IF_ERROR(store::InsertHostToken(tx, Sha256Hex(token), host_id, expires_at, now));
  CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, action, "host:" + host_id,
                                        json::serialize(json::object{{"expires_at", expires_at}})));
  return token;
}

Result<MintedCredential> HostService::CreateCredential(const CredentialSpec& spec, std::string_view actor) {
  if (spec.hosts.empty() || spec.hosts.size() > kMaxCredentialHosts) {
    return Invalid(fmt::format("hosts must name 1 to {} host ids or patterns", kMaxCredentialHosts));
  }
  for (const auto& pattern : spec.hosts) CF_RETURN_IF_ERROR(CheckHostPattern(pattern));
  if (spec.uses < 1 || spec.uses > kMaxCredentialUses) {
    return Invalid(fmt::format("uses must be 1 to {}", kMaxCredentialUses));
  }
  if (spec.ttl.count() <= 0 || spec.ttl > kMaxCredentialTtl) {
    return Invalid(fmt::format("ttl must be positive and at most {} days", kMaxCredentialTtl.count() / 86400));
  }
  const int64_t now = clock_.NowMillis();
  MintedCredential out;
  out.secret = RandomToken(kTokenBytes);
  store::EnrollmentCredential& c = out.credential;
  c.token_sha256 = Sha256Hex(out.secret);
  c.patterns = json::serialize(json::value_from(spec.hosts));
  c.max_uses = spec.uses;
  c.expires_at = now + Millis(spec.ttl);
  c.created_by = std::string(actor);
  c.created_at = now;
  CF_RETURN_IF_ERROR(store::Write(store_, [&](store::Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(c.id, store::InsertEnrollmentCredential(tx, c));
    CF_RETURN_IF_ERROR(store::AppendAudit(
        tx, now, actor, "credential.create", fmt::format("credential:{}", c.id),
        json::serialize(json::object{
            {"hosts", json::value_from(spec.hosts)}, {"uses", c.max_uses}, {"expires_at", c.expires_at}})));
    return Ok();
  }));
  return out;
}

Result<std::vector<store::EnrollmentCredential>> HostService::ListCredentials(std::optional<int64_t> before_id,
                                                                              int limit) {
  return store::Read(store_, [&](store::Tx& tx) { return store::ListEnrollmentCredentials(tx, before_id, limit); });
}

Result<store::EnrollmentCredential> HostService::RevokeCredential(int64_t id, std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  return store::Write(store_, [&](store::Tx& tx) -> Result<store::EnrollmentCredential> {
    CF_ASSIGN_OR_RETURN(bool revoked, store::RevokeEnrollmentCredential(tx, id, now));
    CF_ASSIGN_OR_RETURN(auto c, store::GetEnrollmentCredential(tx, id));
    if (!c) return MakeError(ErrorCode::kNotFound, fmt::format("no enrollment credential {}", id));
    if (revoked) {
      CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "credential.revoke", fmt::format("credential:{}", id),
                                            json::serialize(json::object{{"used", c->used}})));
    }
    return std::move(*c);
  });
}

bool MatchesHostPattern(std::string_view pattern, std::string_view host_id) {
  // Label by label; within a label '*' matches any run of characters (never a dot).
  auto label_matches = [](std::string_view p, std::string_view l) {
    // Classic glob with one backtracking point: the last '*' seen.
    size_t pi = 0, li = 0, star = std::string_view::npos, mark = 0;
    while (li < l.size()) {
      if (pi < p.size() && p[pi] == '*') {
        star = pi++;
        mark = li;
      } else if (pi < p.size() && AsciiLower(p.substr(pi, 1)) == AsciiLower(l.substr(li, 1))) {
        ++pi;
        ++li;
      } else if (star != std::string_view::npos) {
        pi = star + 1;
        li = ++mark;
      } else {
        return false;
      }
    }
    while (pi < p.size() && p[pi] == '*') ++pi;
    return pi == p.size();
  };
  while (true) {
    const size_t pd = pattern.find('.');
    const size_t hd = host_id.find('.');
    if ((pd == std::string_view::npos) != (hd == std::string_view::npos)) return false;
    if (!label_matches(pattern.substr(0, pd), host_id.substr(0, hd))) return false;
    if (pd == std::string_view::npos) return true;
    pattern.remove_prefix(pd + 1);
    host_id.remove_prefix(hd + 1);
  }
}

Result<void> CheckCredential(const store::EnrollmentCredential& c, std::string_view host_id, int64_t now) {
  auto denied = [&c](const std::string& why) {
    return MakeError(ErrorCode::kPermissionDenied, fmt::format("enrollment credential {} {}", c.id, why));
  };
  if (c.revoked_at) return denied(fmt::format("was revoked at {}", FormatRfc3339(*c.revoked_at)));
  if (c.expires_at <= now) return denied(fmt::format("expired at {}", FormatRfc3339(c.expires_at)));
  if (c.used >= c.max_uses) return denied(fmt::format("is spent: all {} of its uses are taken", c.max_uses));
  boost::system::error_code ec;
  const json::value patterns = json::parse(c.patterns, ec);  // written by CreateCredential
  if (!ec && patterns.is_array()) {
    for (const auto& p : patterns.get_array()) {
      if (p.is_string() && MatchesHostPattern(p.get_string(), host_id)) return Ok();
    }
  }
  return denied(fmt::format("is not for host {} (its hosts: {})", Escaped(host_id.substr(0, HostService::kMaxHostId)),
                            c.patterns));
}

Result<std::optional<store::HostRecord>> HostService::Find(std::string_view host_id) {
  return store::Read(store_, [&](store::Tx& tx) { return store::FindHost(tx, host_id); });
}

Result<store::HostRecord> HostService::Get(std::string_view host_id) {
  CF_ASSIGN_OR_RETURN(auto h, Find(host_id));
  if (!h) return NoSuchHost(host_id);
  return std::move(*h);
}

Result<std::vector<store::HostRecord>> HostService::List(const store::HostFilter& filter) {
  return store::Read(store_, [&](store::Tx& tx) { return store::ListHosts(tx, filter); });
}

void HostService::SetCertificate(store::HostRecord& host, const std::string& serial, int64_t not_after,
                                 int64_t now) const {
  constexpr int64_t kDayMs = int64_t{24} * 3600 * 1000;
  if (host.status != store::HostStatus::kRevoked) host.status = store::HostStatus::kActive;
  host.serial = serial;
  host.not_after = not_after;
  host.renew_at = not_after - SettingsOf(host).threshold_days * kDayMs;
  host.last_error.reset();
  host.updated_at = now;
}

HostSettings HostService::SettingsOf(const store::HostRecord& host) const {
  const HostSettings& d = options_.defaults;
  return HostSettings{SpecOf(host).sans,
                      host.cert_path.value_or(d.cert_path),
                      host.key_path.value_or(d.key_path),
                      host.cacert_path.value_or(d.cacert_path),
                      host.key_type.value_or(d.key_type),
                      host.profile.value_or(d.profile),
                      host.threshold_days.value_or(d.threshold_days),
                      host.reload_command ? host.reload_command : d.reload_command};
}

Result<std::string> HostService::CreateToken(std::string_view host_id, std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  return store::Write(store_, [&](store::Tx& tx) -> Result<std::string> {
    CF_ASSIGN_OR_RETURN(auto host, store::FindHost(tx, host_id));
    if (!host) return NoSuchHost(host_id);
    if (host->status == store::HostStatus::kRevoked) {
      return MakeError(
          ErrorCode::kFailedPrecondition,
          fmt::format("host {} is revoked; POST /v1/hosts/{}/reactivate gives it a new start", host_id, host_id));
    }
    return NewToken(tx, host->host_id, now, "host.token", actor);
  });
}

}  // namespace certfleet::renewal
