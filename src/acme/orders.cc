// AcmeService's orders, authorizations, challenges and their validation, finalization,
// certificate download and revocation (RFC 8555 7.1.3-7.6).
#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <boost/json.hpp>
#include <set>

#include "acme/acme_service.h"
#include "acme/problem.h"
#include "core/crypto.h"
#include "core/log.h"
#include "core/text.h"
#include "pki/certificate.h"
#include "pki/crl.h"
#include "pki/csr.h"
#include "pki/der.h"
#include "pki/key.h"
#include "pki/profile.h"
#include "store/audit_repo.h"
#include "store/group_commit.h"
#include "store/jobs_repo.h"

namespace certfleet::acme {
namespace {

namespace json = boost::json;

// An order names at most this many identifiers; a certificate carries at most as many names.
constexpr size_t kMaxIdentifiers = 100;
// How long an order and its authorizations wait to be validated and finalized: a week, as
// public CAs give, enough for a client that retries over a weekend.
constexpr std::chrono::hours kOrderLifetime{24 * 7};
// A challenge token: 32 random bytes, 43 base64url characters (RFC 8555 8.1 asks for 128 bits).
constexpr size_t kTokenBytes = 32;
// Orders listed per page of an account's orders.
constexpr int kOrdersPerPage = 100;
// What a client is told to wait before asking again about work under way.
constexpr int kRetryAfterSeconds = 1;
// Revocation reasons an ACME client may give (RFC 8555 7.6 lets the server choose): what a
// subscriber knows of its own certificate, not a CA's reasons.
constexpr int kClientReasons[] = {0, 1, 3, 4, 5};

Error Malformed(std::string detail) { return Problem(ErrorCode::kInvalidArgument, "malformed", std::move(detail)); }
Error Unauthorized(std::string detail) {
  return Problem(ErrorCode::kPermissionDenied, "unauthorized", std::move(detail));
}

Result<json::object> PayloadObject(const Jws& jws) {
  boost::system::error_code ec;
  json::value v = json::parse(jws.payload, ec);
  if (ec || !v.is_object()) return Malformed("the payload is not a JSON object");
  return std::move(v.as_object());
}

json::object ProblemObject(const Error& e) {
  return {{"type", fmt::format("urn:ietf:params:acme:error:{}", e.reason.empty() ? "malformed" : e.reason)},
          {"detail", e.message}};
}

// An identifier of an order as ordered: a wildcard's value keeps its "*.".
struct Ordered {
  Identifier id;  // what is validated: a wildcard's value without "*."
  bool wildcard = false;
  std::string value;  // as ordered and as the certificate names it
};

// A notBefore or notAfter a client sends without asking for it: Go's zero time, which the step
// CLI puts in every order (its request type's time.Time fields are never omitted), or null.
bool UnsetTime(const json::value& v) {
  if (v.is_null()) return true;
  if (!v.is_string()) return false;
  const std::optional<int64_t> at = ParseRfc3339(v.as_string());
  return at && *at == ParseRfc3339("0001-01-01T00:00:00Z");
}

// A POST-as-GET (6.3) has the empty string for its payload.
Result<void> PostAsGet(const Jws& jws) {
  if (!jws.payload_b64.empty()) return Malformed("this resource is read with a POST-as-GET: an empty payload");
  return Ok();
}

Result<Ordered> ParseIdentifier(const json::value& v) {
  if (!v.is_object()) return Malformed("an identifier is not an object");
  const json::value* type = v.as_object().if_contains("type");
  const json::value* value = v.as_object().if_contains("value");
  if (!type || !type->is_string() || !value || !value->is_string()) {
    return Malformed("an identifier needs a string type and value");
  }
  const std::string_view text = value->as_string();
  if (type->as_string() == "ip") {
    std::optional<std::string> address = CanonicalAddress(text);
    if (!address) return Malformed(fmt::format("{} is not an IP address", Escaped(text.substr(0, 64))));
    return Ordered{{"ip", *address}, false, *address};
  }
  if (type->as_string() != "dns") {
    return Problem(ErrorCode::kInvalidArgument, "unsupportedIdentifier",
                   fmt::format("identifiers are dns or ip, not {}", Escaped(type->as_string())));
  }
  std::string name = AsciiLower(text);
  const bool wildcard = name.starts_with("*.");
  std::string base = wildcard ? name.substr(2) : name;
  // A name whose last label is all digits is no domain name (RFC 1123 2.1): resolvers read
  // "10.1" or "167772161" as an address, which the profile's IP ranges would not have allowed.
  const std::string_view last_label = std::string_view(base).substr(base.rfind('.') + 1);
  const bool numeric = !last_label.empty() &&
                       std::all_of(last_label.begin(), last_label.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!pki::IsValidDnsName(base) || numeric || CanonicalAddress(base)) {
    return Problem(ErrorCode::kInvalidArgument, "rejectedIdentifier",
                   fmt::format("{} is not a DNS name certfleet issues for", Escaped(text.substr(0, 256))));
  }
  return Ordered{{"dns", std::move(base)}, wildcard, std::move(name)};
}

Result<std::vector<Ordered>> ParseIdentifiers(const json::value* v) {
  if (!v || !v->is_array() || v->as_array().empty()) return Malformed("identifiers must be a non-empty array");
  if (v->as_array().size() > kMaxIdentifiers) {
    return Problem(ErrorCode::kInvalidArgument, "rejectedIdentifier",
                   fmt::format("an order names at most {} identifiers", kMaxIdentifiers));
  }
  std::vector<Ordered> out;
  std::set<std::pair<std::string, std::string>> seen;
  for (const auto& item : v->as_array()) {
    CF_ASSIGN_OR_RETURN(Ordered o, ParseIdentifier(item));
    if (seen.emplace(o.id.type, o.value).second) out.push_back(std::move(o));
  }
  // The certificate's subject CN is one of them, and a CN has at most 64 characters (RFC 5280).
  if (std::none_of(out.begin(), out.end(), [](const Ordered& o) { return o.value.size() <= pki::kMaxCommonName; })) {
    return Problem(ErrorCode::kInvalidArgument, "rejectedIdentifier",
                   fmt::format("one identifier must have at most {} characters: the certificate's common name",
                               pki::kMaxCommonName));
  }
  return out;
}

// The identifiers' values as the certificate must name them.
Result<std::set<std::string>> OrderNames(const store::AcmeOrderRecord& order) {
  boost::system::error_code ec;
  json::value v = json::parse(order.identifiers, ec);
  if (ec || !v.is_array()) return MakeError(ErrorCode::kInternal, "an order's identifiers are not JSON");
  std::set<std::string> out;
  for (const auto& item : v.as_array()) out.emplace(item.as_object().at("value").as_string());
  return out;
}

bool Expired(const store::AcmeOrderRecord& order, int64_t now) {
  return (order.status == "pending" || order.status == "ready") && order.expires_at <= now;
}

std::string Actor(int64_t account_id) { return fmt::format("acme:account/{}", account_id); }

// An answer known already: a resource, or the error that stopped the request.
AcmeService::MakeAnswer Ready(Result<AcmeAnswer> answer) {
  return [answer = std::move(answer)] { return answer; };
}

}  // namespace

Result<store::AcmeOrderRecord> AcmeService::OwnedOrder(std::string_view profile, int64_t id, const Checked& request) {
  CF_ASSIGN_OR_RETURN(auto order, store::ReadEach(store_, [&](store::Tx& tx) { return store::FindAcmeOrder(tx, id); }));
  return Owned(profile, std::move(order), request);
}

Result<store::AcmeOrderRecord> AcmeService::Owned(std::string_view profile, std::optional<store::AcmeOrderRecord> order,
                                                  const Checked& request) const {
  if (!order || order->profile != profile) return Problem(ErrorCode::kNotFound, "malformed", "no such order");
  if (!request.account || order->account_id != request.account->id) {
    return Unauthorized("the order belongs to another account");
  }
  if (Expired(*order, clock_.NowMillis())) order->status = "invalid";
  return std::move(*order);
}

Result<AcmeAnswer> AcmeService::OrderAnswer(std::string_view profile, const store::AcmeOrderRecord& order, int status) {
  CF_ASSIGN_OR_RETURN(auto authzs,
                      store::ReadEach(store_, [&](store::Tx& tx) { return store::AcmeAuthzsOfOrder(tx, order.id); }));
  std::vector<int64_t> ids;
  ids.reserve(authzs.size());
  for (const auto& a : authzs) ids.push_back(a.id);
  return OrderAnswer(profile, order, ids, status);
}

AcmeAnswer AcmeService::OrderAnswer(std::string_view profile, const store::AcmeOrderRecord& order,
                                    const std::vector<int64_t>& authz_ids, int status) const {
  json::array urls;
  for (const int64_t id : authz_ids) urls.emplace_back(Url(profile, fmt::format("authz/{}", id)));
  AcmeAnswer answer;
  answer.status = status;
  answer.body = {{"status", order.status},
                 {"expires", FormatRfc3339(order.expires_at)},
                 {"identifiers", json::parse(order.identifiers)},
                 {"authorizations", std::move(urls)},
                 {"finalize", Url(profile, fmt::format("order/{}/finalize", order.id))}};
  if (order.serial) answer.body["certificate"] = Url(profile, "cert/" + *order.serial);
  if (order.error) answer.body["error"] = json::parse(*order.error);
  if (order.replaces) answer.body["replaces"] = *order.replaces;
  if (order.not_after) answer.body["notAfter"] = FormatRfc3339(*order.not_after);
  if (order.status == "pending" || order.status == "processing") answer.retry_after = kRetryAfterSeconds;
  answer.location = Url(profile, fmt::format("order/{}", order.id));
  return answer;
}

json::object AcmeService::ChallengeJson(std::string_view profile, const store::AcmeChallengeRecord& c) const {
  json::object out{
      {"type", c.type}, {"url", Url(profile, fmt::format("chall/{}", c.id))}, {"status", c.status}, {"token", c.token}};
  if (c.validated_at) out["validated"] = FormatRfc3339(*c.validated_at);
  if (c.error) out["error"] = json::parse(*c.error);
  return out;
}

Result<AcmeAnswer> AcmeService::AccountOrders(std::string_view profile, int64_t account_id, int64_t cursor,
                                              const Checked& request) {
  CF_RETURN_IF_ERROR(PostAsGet(request.jws));
  if (!request.account || request.account->id != account_id) {
    return Unauthorized("an account's orders are listed only to itself");
  }
  CF_ASSIGN_OR_RETURN(auto ids, store::Read(store_, [&](store::Tx& tx) {
                        return store::ListAcmeOrderIds(tx, account_id, cursor, kOrdersPerPage + 1);
                      }));
  AcmeAnswer answer;
  json::array urls;
  for (size_t i = 0; i < ids.size() && i < kOrdersPerPage; ++i) {
    urls.emplace_back(Url(profile, fmt::format("order/{}", ids[i])));
  }
  if (ids.size() > kOrdersPerPage) {
    answer.links.push_back(
        fmt::format("<{}>;rel=\"next\"",
                    Url(profile, fmt::format("account/{}/orders?cursor={}", account_id, ids[kOrdersPerPage - 1]))));
  }
  answer.body = {{"orders", std::move(urls)}};
  return answer;
}

void AcmeService::NewOrder(std::string_view profile, const Checked& request, Answer answer) {
  // What the order's transaction writes, checked first.
  struct Planned {
    store::AcmeOrderRecord order;
    std::vector<Ordered> identifiers;
    json::array listed;
    std::vector<int64_t> authz_ids;  // written
  };
  auto planned = std::make_shared<Planned>();
  Result<void> checked = [&]() -> Result<void> {
    const store::AcmeAccountRecord& account = *request.account;
    CF_ASSIGN_OR_RETURN(json::object payload, PayloadObject(request.jws));
    if (const json::value* v = payload.if_contains("notBefore"); v && !UnsetTime(*v)) {
      return Malformed("notBefore is not accepted: a certificate is valid from when it is issued");
    }
    CF_ASSIGN_OR_RETURN(planned->identifiers, ParseIdentifiers(payload.if_contains("identifiers")));
    CF_ASSIGN_OR_RETURN(Profile found, FindProfile(profile));
    const int64_t now = clock_.NowMillis();
    if (const json::value* v = payload.if_contains("notAfter"); v && !UnsetTime(*v)) {
      // A shorter life than the profile's (cert-manager's duration, Caddy's lifetime): the
      // certificate ends then; a later end than the profile's validity allows is refused.
      const std::optional<int64_t> at = v->is_string() ? ParseRfc3339(v->as_string()) : std::nullopt;
      const int64_t longest = now + found.validity_days * Millis(std::chrono::hours(24));
      if (!at || *at <= now || *at > longest) {
        return Malformed(
            fmt::format("notAfter must be an RFC 3339 time after now and at most {} days ahead (the "
                        "profile's validity)",
                        found.validity_days));
      }
      planned->order.not_after = *at;
    }
    for (const auto& o : planned->identifiers) CF_RETURN_IF_ERROR(CheckIdentifier(found, o.id.type, o.id.value));
    for (const auto& o : planned->identifiers) {
      planned->listed.push_back(json::object{{"type", o.id.type}, {"value", o.value}});
    }
    std::optional<std::string> replaces;
    if (const json::value* r = payload.if_contains("replaces")) {
      if (!r->is_string() || r->as_string().empty() || r->as_string().size() > 256) {
        return Malformed("replaces must be a certificate identifier (RFC 9773)");
      }
      CF_ASSIGN_OR_RETURN(replaces, CheckReplaces(profile, account.id, r->as_string(), planned->listed));
    }
    store::AcmeOrderRecord& order = planned->order;
    order.account_id = account.id;
    order.profile = std::string(profile);
    order.status = "pending";
    order.identifiers = json::serialize(planned->listed);
    order.expires_at = now + Millis(kOrderLifetime);
    order.replaces = replaces;
    order.created_at = now;
    order.updated_at = now;
    return Ok();
  }();
  if (!checked.ok()) return answer(Ready(checked.error()));
  // The write reads nothing of this service's, so it holds no pointer to it.
  auto write = [planned](store::Tx& tx) -> Result<void> {
    store::AcmeOrderRecord& order = planned->order;
    planned->authz_ids.clear();  // the transaction may run again
    if (order.replaces) {
      // Checked again where it is written: orders replacing one certificate at once, on any
      // node, are taken one after the other, and all but the first are refused.
      CF_RETURN_IF_ERROR(store::LockForTransaction(tx, "acme replaces:" + *order.replaces));
      CF_ASSIGN_OR_RETURN(bool replaced, store::AcmeOrderReplaces(tx, *order.replaces, order.created_at));
      if (replaced) return AlreadyReplaced();
    }
    CF_ASSIGN_OR_RETURN(order.id, store::InsertAcmeOrder(tx, order));
    for (const auto& o : planned->identifiers) {
      store::AcmeAuthzRecord authz{0,          order.id,   order.account_id, o.id.type,
                                   o.id.value, o.wildcard, "pending",        order.expires_at};
      CF_ASSIGN_OR_RETURN(int64_t authz_id, store::InsertAcmeAuthz(tx, authz));
      planned->authz_ids.push_back(authz_id);
      for (const std::string_view type : ChallengeTypesFor(o.id, o.wildcard)) {
        store::AcmeChallengeRecord c{0,         authz_id,     std::string(type), RandomToken(kTokenBytes),
                                     "pending", std::nullopt, std::nullopt};
        CF_RETURN_IF_ERROR(store::InsertAcmeChallenge(tx, c));
      }
    }
    return store::AppendAudit(
        tx, order.created_at, Actor(order.account_id), "acme.order.create", fmt::format("acme-order:{}", order.id),
        json::serialize(json::object{{"profile", order.profile}, {"identifiers", planned->listed}}));
  };
  issuer_.Committer().Submit(std::move(write), [this, planned, answer = std::move(answer)](Result<void> written) {
    answer([this, planned, written = std::move(written)]() -> Result<AcmeAnswer> {
      if (!written.ok()) return written.error();
      return OrderAnswer(planned->order.profile, planned->order, planned->authz_ids, 201);
    });
  });
}

Result<AcmeAnswer> AcmeService::Order(std::string_view profile, int64_t id, const Checked& request) {
  CF_RETURN_IF_ERROR(PostAsGet(request.jws));
  CF_ASSIGN_OR_RETURN(auto order, OwnedOrder(profile, id, request));
  return OrderAnswer(profile, order);
}

Result<AcmeAnswer> AcmeService::Authorization(std::string_view profile, int64_t id, const Checked& request) {
  struct Found {
    std::optional<store::AcmeAuthzRecord> authz;
    std::optional<store::AcmeOrderRecord> order;
    std::vector<store::AcmeChallengeRecord> challenges;  // deactivating leaves them as they are
  };
  // Each statement on its own: what is answered may be a moment apart, as any later look is.
  CF_ASSIGN_OR_RETURN(Found found, store::ReadEach(store_, [&](store::Tx& tx) -> Result<Found> {
                        Found out;
                        CF_ASSIGN_OR_RETURN(out.authz, store::FindAcmeAuthz(tx, id));
                        if (!out.authz) return out;
                        CF_ASSIGN_OR_RETURN(out.order, store::FindAcmeOrder(tx, out.authz->order_id));
                        CF_ASSIGN_OR_RETURN(out.challenges, store::AcmeChallengesOfAuthz(tx, id));
                        return out;
                      }));
  std::optional<store::AcmeAuthzRecord>& authz = found.authz;
  if (!authz) return Problem(ErrorCode::kNotFound, "malformed", "no such authorization");
  CF_ASSIGN_OR_RETURN(auto order, Owned(profile, std::move(found.order), request));
  const int64_t now = clock_.NowMillis();
  if (!request.jws.payload.empty()) {
    CF_ASSIGN_OR_RETURN(json::object payload, PayloadObject(request.jws));
    const json::value* status = payload.if_contains("status");
    if (!status || !status->is_string() || status->as_string() != "deactivated") {
      return Malformed("an authorization can only be deactivated");
    }
    if (authz->status != "pending" && authz->status != "valid") {
      return Malformed(fmt::format("the authorization is {}", authz->status));
    }
    const std::string from = authz->status;
    CF_RETURN_IF_ERROR(issuer_.Committer().Run([&](store::Tx& tx) -> Result<void> {
      CF_ASSIGN_OR_RETURN(bool changed, store::SetAcmeAuthzStatus(tx, id, from, "deactivated"));
      if (!changed) return Malformed("the authorization changed while it was being deactivated: look at it again");
      for (const char* s : {"pending", "ready"}) {
        CF_RETURN_IF_ERROR(store::SetAcmeOrderStatus(tx, order.id, s, "invalid", std::nullopt, std::nullopt, now));
      }
      CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, Actor(order.account_id), "acme.authz.deactivate",
                                            fmt::format("acme-order:{}", order.id),
                                            json::serialize(json::object{{"authorization", id}})));
      return Ok();
    }));
    authz->status = "deactivated";
  }
  std::string status = authz->status;
  // A valid authorization expires too (RFC 8555 7.1.6); what the store keeps is unchanged.
  if ((status == "pending" || status == "valid") && authz->expires_at <= now) status = "expired";
  json::array list;
  bool processing = false;
  for (const auto& c : found.challenges) {
    list.push_back(ChallengeJson(profile, c));
    processing = processing || c.status == "processing";
  }
  AcmeAnswer answer;
  answer.body = {{"identifier", json::object{{"type", authz->identifier_type}, {"value", authz->identifier_value}}},
                 {"status", status},
                 {"expires", FormatRfc3339(authz->expires_at)},
                 {"challenges", std::move(list)}};
  if (authz->wildcard) answer.body["wildcard"] = true;
  if (processing) answer.retry_after = kRetryAfterSeconds;
  return answer;
}

Result<AcmeService::FoundChallenge> AcmeService::FindChallenge(int64_t id, bool with_account) {
  // Each statement on its own: callers check again whatever they write.
  return store::ReadEach(store_, [&](store::Tx& tx) -> Result<FoundChallenge> {
    FoundChallenge out;
    CF_ASSIGN_OR_RETURN(out.challenge, store::FindAcmeChallenge(tx, id));
    if (!out.challenge) return out;
    CF_ASSIGN_OR_RETURN(out.authz, store::FindAcmeAuthz(tx, out.challenge->authz_id));
    if (!out.authz) return out;
    CF_ASSIGN_OR_RETURN(out.order, store::FindAcmeOrder(tx, out.authz->order_id));
    if (with_account) {
      CF_ASSIGN_OR_RETURN(out.account, store::FindAcmeAccount(tx, out.authz->account_id));
    }
    return out;
  });
}

AcmeAnswer AcmeService::ChallengeAnswer(std::string_view profile, const store::AcmeChallengeRecord& challenge,
                                        int64_t authz_id) const {
  AcmeAnswer answer;
  answer.body = ChallengeJson(profile, challenge);
  answer.links.push_back(fmt::format("<{}>;rel=\"up\"", Url(profile, fmt::format("authz/{}", authz_id))));
  if (challenge.status == "processing") answer.retry_after = kRetryAfterSeconds;
  return answer;
}

void AcmeService::Challenge(std::string_view profile, int64_t id, const Checked& request, Answer answer) {
  auto fail = [&answer](Error e) { answer(Ready(std::move(e))); };
  // The write below moves the challenge only if it is still pending.
  auto found = FindChallenge(id, /*with_account=*/false);
  if (!found.ok()) return fail(found.error());
  if (!found->challenge) return fail(Problem(ErrorCode::kNotFound, "malformed", "no such challenge"));
  if (!found->authz) return fail(MakeError(ErrorCode::kInternal, "a challenge has no authorization"));
  auto order = Owned(profile, std::move(found->order), request);
  if (!order.ok()) return fail(order.error());
  const store::AcmeChallengeRecord& challenge = *found->challenge;
  const store::AcmeAuthzRecord& authz = *found->authz;
  // A POST of {} asks for validation (7.5.1); a POST-as-GET only reads.
  if (request.jws.payload.empty() || challenge.status != "pending") {
    return answer(Ready(ChallengeAnswer(profile, challenge, authz.id)));
  }
  // {} by the RFC; anything else is ignored as it allows, if it is a JSON object.
  if (auto payload = PayloadObject(request.jws); !payload.ok()) return fail(payload.error());
  if (authz.status != "pending" || order->status != "pending") {
    return fail(Malformed(fmt::format("the authorization is {} and its order {}", authz.status, order->status)));
  }
  const int64_t now = clock_.NowMillis();
  const store::NewJob job{std::string(kValidateJob), json::serialize(json::object{{"challenge", id}}), now,
                          options_.validation_attempts, fmt::format("{}:{}", kValidateJob, id)};
  struct Started {
    bool moved = false;              // pending -> processing by this request
    std::optional<store::Job> here;  // its validation, for this node's workers
  };
  auto started = std::make_shared<Started>();
  auto write = [id, job, now, started, workers = workers_](store::Tx& tx) -> Result<void> {
    *started = Started{};  // the transaction may run again
    CF_ASSIGN_OR_RETURN(started->moved,
                        store::SetAcmeChallengeStatus(tx, id, "pending", "processing", std::nullopt, std::nullopt));
    if (!started->moved) return Ok();
    if (workers == nullptr) {
      CF_RETURN_IF_ERROR(store::EnqueueJob(tx, job, now));
    } else {
      CF_ASSIGN_OR_RETURN(started->here, workers->EnqueueHere(tx, job));
    }
    return Ok();
  };
  issuer_.Committer().Submit(
      std::move(write), [this, started, challenge, authz_id = authz.id, profile = std::string(profile),
                         answer = std::move(answer)](Result<void> written) mutable {
        if (written.ok() && started->here) {
          if (options_.post_after && options_.challenge_wait.count() > 0) {
            // Waits for the attempt, registered before it can end.
            auto waiter = std::make_shared<Waiter>();
            waiter->answer = std::move(answer);
            waiter->profile = profile;
            waiter->authz_id = authz_id;
            store::AcmeChallengeRecord processing = challenge;
            processing.status = "processing";
            waiter->processing = ChallengeAnswer(profile, processing, authz_id);
            {
              std::lock_guard lock(waiters_mu_);
              waiters_.emplace(challenge.id, waiter);
            }
            workers_->RunHere(std::move(*started->here));
            // The waiter stays in waiters_ until the attempt ends, without the answer.
            options_.post_after(options_.challenge_wait, [waiter] {
              if (Answer taken = waiter->Take()) taken(Ready(waiter->processing));
            });
            return;
          }
          workers_->RunHere(std::move(*started->here));
        }
        answer([this, started, challenge, authz_id, profile, written = std::move(written)]() -> Result<AcmeAnswer> {
          if (!written.ok()) return written.error();
          if (started->moved) {
            store::AcmeChallengeRecord processing = challenge;
            processing.status = "processing";
            return ChallengeAnswer(profile, processing, authz_id);
          }
          // Another request started it first: as it is now.
          CF_ASSIGN_OR_RETURN(auto now_as, store::ReadEach(store_, [&](store::Tx& tx) {
                                return store::FindAcmeChallenge(tx, challenge.id);
                              }));
          if (!now_as) return Problem(ErrorCode::kNotFound, "malformed", "no such challenge");
          return ChallengeAnswer(profile, *now_as, authz_id);
        });
      });
}

Result<void> AcmeService::Validate(int64_t challenge_id, int attempt, int max_attempts, const TxStep& done) {
  Decided decided;
  // However the attempt ends (an exception too), the POSTs waiting for it are answered.
  struct AnswerAtEnd {
    AcmeService& service;
    int64_t id;
    const Decided& decided;
    ~AnswerAtEnd() { service.AnswerWaiters(id, decided); }
  } at_end{*this, challenge_id, decided};
  CF_ASSIGN_OR_RETURN(decided, Attempt(challenge_id, attempt, max_attempts, done));
  return Ok();
}

void AcmeService::AnswerWaiters(int64_t challenge_id, const Decided& decided) {
  std::vector<std::shared_ptr<Waiter>> waiting;
  {
    std::lock_guard lock(waiters_mu_);
    auto [from, to] = waiters_.equal_range(challenge_id);
    for (auto it = from; it != to; ++it) waiting.push_back(std::move(it->second));
    waiters_.erase(from, to);
  }
  for (const auto& w : waiting) {
    Answer taken = w->Take();
    if (!taken) continue;  // its wait ended first
    taken(Ready(decided ? ChallengeAnswer(w->profile, *decided, w->authz_id) : w->processing));
  }
}

Result<AcmeService::Decided> AcmeService::Attempt(int64_t challenge_id, int attempt, int max_attempts,
                                                  const TxStep& done) {
  // The outcome's write locks the order and checks the states again.
  CF_ASSIGN_OR_RETURN(FoundChallenge f, FindChallenge(challenge_id, /*with_account=*/true));
  // Already decided (this job ran before and lost its lease) or gone: nothing to do.
  if (!f.challenge || f.challenge->status != "processing" || !f.authz || !f.order || !f.account) {
    return f.challenge && f.challenge->status != "processing" ? f.challenge : std::nullopt;
  }
  const store::AcmeChallengeRecord& challenge = *f.challenge;
  const store::AcmeAuthzRecord& authz = *f.authz;
  const int64_t now = clock_.NowMillis();
  if (authz.status != "pending" || f.order->status != "pending" || f.order->expires_at <= now) {
    return Invalidate(challenge, authz, Malformed("the order expired or was abandoned before the validation"), done);
  }
  const std::string key_authorization = challenge.token + "." + f.account->thumbprint;
  const Identifier identifier{authz.identifier_type, authz.identifier_value};
  // An http-01 redirect may lead to the names and addresses the order's profile issues for.
  auto may_reach = [this, &profile = f.order->profile](const Identifier& host) {
    auto found = FindProfile(profile);
    return found.ok() && CheckIdentifier(*found, host.type, host.value).ok();
  };
  Result<void> outcome = validator_.Validate(challenge.type, identifier, challenge.token, key_authorization, may_reach);
  if (!outcome.ok()) {
    if (outcome.error().code == ErrorCode::kUnavailable && attempt < max_attempts) {
      ++validations_.retried;
      return outcome.error();  // the job runs again after its backoff
    }
    ++validations_.invalid;
    return Invalidate(challenge, authz, outcome.error(), done);
  }
  bool moved = false;
  CF_RETURN_IF_ERROR(issuer_.Committer().Run([&](store::Tx& tx) -> Result<void> {
    if (done) {
      CF_RETURN_IF_ERROR(done(tx));
    }
    CF_RETURN_IF_ERROR(store::LockAcmeOrder(tx, authz.order_id));
    CF_ASSIGN_OR_RETURN(moved,
                        store::SetAcmeChallengeStatus(tx, challenge.id, "processing", "valid", now, std::nullopt));
    if (!moved) return Ok();
    CF_RETURN_IF_ERROR(store::SetAcmeAuthzStatus(tx, authz.id, "pending", "valid"));
    CF_ASSIGN_OR_RETURN(auto authzs, store::AcmeAuthzsOfOrder(tx, authz.order_id));
    const bool all_valid = std::all_of(authzs.begin(), authzs.end(), [](const auto& a) { return a.status == "valid"; });
    if (all_valid) {
      CF_RETURN_IF_ERROR(
          store::SetAcmeOrderStatus(tx, authz.order_id, "pending", "ready", std::nullopt, std::nullopt, now));
    }
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, "acme:validation", "acme.challenge.valid",
                                          fmt::format("acme-order:{}", authz.order_id),
                                          json::serialize(json::object{{"challenge", challenge.id},
                                                                       {"type", challenge.type},
                                                                       {"identifier", authz.identifier_value},
                                                                       {"order_ready", all_valid}})));
    return Ok();
  }));
  ++validations_.valid;
  if (!moved) return Decided();
  store::AcmeChallengeRecord valid = challenge;
  valid.status = "valid";
  valid.validated_at = now;
  return Decided(std::move(valid));
}

Result<AcmeService::Decided> AcmeService::Invalidate(const store::AcmeChallengeRecord& challenge,
                                                     const store::AcmeAuthzRecord& authz, const Error& problem,
                                                     const TxStep& done) {
  const int64_t now = clock_.NowMillis();
  const json::object error = ProblemObject(problem);
  json::object subproblem = error;
  subproblem["identifier"] = json::object{{"type", authz.identifier_type}, {"value", authz.identifier_value}};
  const json::object order_error{
      {"type", error.at("type")},
      {"detail", fmt::format("{} of {} failed: {}", challenge.type, authz.identifier_value, problem.message)},
      {"subproblems", json::array{subproblem}}};
  bool moved = false;
  CF_RETURN_IF_ERROR(issuer_.Committer().Run([&](store::Tx& tx) -> Result<void> {
    if (done) {
      CF_RETURN_IF_ERROR(done(tx));
    }
    CF_RETURN_IF_ERROR(store::LockAcmeOrder(tx, authz.order_id));
    CF_ASSIGN_OR_RETURN(moved, store::SetAcmeChallengeStatus(tx, challenge.id, "processing", "invalid", std::nullopt,
                                                             json::serialize(error)));
    if (!moved) return Ok();
    // Another challenge of the authorization may have made it valid already: then the order stays.
    CF_ASSIGN_OR_RETURN(bool failed, store::SetAcmeAuthzStatus(tx, authz.id, "pending", "invalid"));
    if (failed) {
      CF_RETURN_IF_ERROR(store::SetAcmeOrderStatus(tx, authz.order_id, "pending", "invalid",
                                                   json::serialize(order_error), std::nullopt, now));
    }
    CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, "acme:validation", "acme.challenge.invalid",
                                          fmt::format("acme-order:{}", authz.order_id),
                                          json::serialize(json::object{{"challenge", challenge.id},
                                                                       {"type", challenge.type},
                                                                       {"identifier", authz.identifier_value},
                                                                       {"error", error}})));
    return Ok();
  }));
  if (!moved) return Decided();
  store::AcmeChallengeRecord invalid = challenge;
  invalid.status = "invalid";
  invalid.error = json::serialize(error);
  return Decided(std::move(invalid));
}

Result<int> AcmeService::FailAbandoned() {
  CF_ASSIGN_OR_RETURN(auto abandoned, store::ReadEach(store_, [](store::Tx& tx) {
                        return store::AcmeChallengesOfDeadJobs(tx, kValidateJob);
                      }));
  int failed = 0;
  for (const auto& [id, last_error] : abandoned) {
    CF_ASSIGN_OR_RETURN(FoundChallenge f, FindChallenge(id, /*with_account=*/false));
    if (!f.challenge || !f.authz) continue;
    // What stopped it stays in the log: a store's or a node's trouble is not the client's to read.
    log::Warn("ACME validation abandoned", {{"challenge", id}, {"job_error", last_error}});
    CF_ASSIGN_OR_RETURN(Decided decided,
                        Invalidate(*f.challenge, *f.authz,
                                   Problem(ErrorCode::kInternal, "serverInternal",
                                           "the validation stopped before it was decided; order again"),
                                   nullptr));
    if (decided) {
      ++validations_.invalid;
      ++failed;
    }
  }
  return failed;
}

Result<issuance::IssueRequest> AcmeService::FinalizeRequest(std::string_view profile,
                                                            const store::AcmeOrderRecord& order,
                                                            const Checked& request) {
  if (order.status != "ready") {
    return Problem(ErrorCode::kPermissionDenied, "orderNotReady",
                   fmt::format("the order is {}, not ready to be finalized", order.status));
  }
  CF_ASSIGN_OR_RETURN(json::object payload, PayloadObject(request.jws));
  const json::value* csr_text = payload.if_contains("csr");
  std::optional<std::string> der =
      csr_text && csr_text->is_string() ? Base64UrlDecode(csr_text->as_string()) : std::nullopt;
  if (!der || der->empty() || der->size() > pki::kMaxCsrBytes) {
    return Problem(ErrorCode::kInvalidArgument, "badCSR", "csr must be a DER CSR in base64url");
  }
  auto parsed = pki::ParseCsr(*der);
  if (!parsed.ok()) return Problem(ErrorCode::kInvalidArgument, "badCSR", parsed.error().message);
  auto csr = std::make_shared<const pki::Csr>(std::move(*parsed));
  // Not the account's key (11.1): whoever held the server's key would hold the account.
  if (request.account) {
    CF_ASSIGN_OR_RETURN(std::shared_ptr<EVP_PKEY> account_key, AccountKey(*request.account));
    if (EVP_PKEY_eq(csr->public_key.get(), account_key.get()) == 1) {
      return Problem(ErrorCode::kInvalidArgument, "badCSR",
                     "the CSR's key is the account's key: the certificate needs a key of its own");
    }
  }
  CF_ASSIGN_OR_RETURN(Profile found, FindProfile(profile));
  CF_ASSIGN_OR_RETURN(pki::KeyType key_type, pki::KeyTypeOf(csr->public_key.get()));
  CF_RETURN_IF_ERROR(CheckKeyType(found, pki::KeyTypeName(key_type)));
  // The CSR names exactly the order's identifiers (7.4); its CN, if any, is one of them.
  CF_ASSIGN_OR_RETURN(std::set<std::string> ordered, OrderNames(order));
  std::set<std::string> requested;
  for (const auto& n : csr->dns_names) requested.insert(AsciiLower(n));
  for (const auto& a : csr->ip_addresses) requested.insert(a);
  const std::string cn = CanonicalAddress(csr->common_name).value_or(AsciiLower(csr->common_name));
  if (!cn.empty()) requested.insert(cn);
  if (requested != ordered) {
    auto joined = [](const std::set<std::string>& names) {
      std::string out;
      for (const auto& n : names) out += (out.empty() ? "" : ", ") + Escaped(n);
      return out;
    };
    return Problem(ErrorCode::kInvalidArgument, "badCSR",
                   fmt::format("the CSR names {} but the order {}", joined(requested), joined(ordered)));
  }
  // The certificate's name: its CN if it has one, else the first DNS name that is not a
  // wildcard and fits in a CN, else the first name that fits (newOrder made sure of one).
  std::string name = cn;
  if (name.empty()) {
    auto fits = [](const std::string& n) { return n.size() <= pki::kMaxCommonName; };
    auto plain = std::find_if(ordered.begin(), ordered.end(), [&](const std::string& n) {
      return fits(n) && !n.starts_with("*.") && !CanonicalAddress(n);
    });
    if (plain == ordered.end()) plain = std::find_if(ordered.begin(), ordered.end(), fits);
    name = plain != ordered.end() ? *plain : *ordered.begin();
  }
  issuance::IssueRequest req;
  req.type = pki::CertType::kServer;
  req.name = name;
  req.parent = found.ca;
  for (const auto& n : ordered) {
    if (n != name) req.sans.push_back(n);
  }
  req.csr = csr;
  req.validity_days = found.validity_days;
  if (order.not_after) {
    const int64_t now = clock_.NowMillis();
    if (*order.not_after <= now) return Malformed("the notAfter this order asked for has passed: order again");
    // The profile's validity, which may have shrunk since the order, bounds it still.
    req.not_after_millis = std::min(*order.not_after, now + found.validity_days * Millis(std::chrono::hours(24)));
  }
  req.overlap = issuance::Overlap::kAllowed;  // a renewal overlaps the certificate it replaces
  req.audit.details = {{"acme_account", std::to_string(order.account_id)},
                       {"acme_order", std::to_string(order.id)},
                       {"acme_profile", std::string(profile)}};
  return req;
}

void AcmeService::Finalize(std::string_view profile, int64_t order_id, const Checked& request, Answer answer) {
  auto order = OwnedOrder(profile, order_id, request);
  auto req = order.ok() ? FinalizeRequest(profile, *order, request) : Result<issuance::IssueRequest>(order.error());
  if (!req.ok()) return answer(Ready(req.error()));
  auto finalized = std::make_shared<const store::AcmeOrderRecord>(std::move(*order));
  const int64_t now = clock_.NowMillis();
  req->in_transaction = [finalized, now](store::Tx& tx, const store::CertificateRecord& cert) -> Result<void> {
    CF_ASSIGN_OR_RETURN(bool moved,
                        store::SetAcmeOrderStatus(tx, finalized->id, "ready", "valid", std::nullopt, cert.serial, now));
    if (!moved) return Problem(ErrorCode::kPermissionDenied, "orderNotReady", "the order was finalized already");
    return Ok();
  };
  const std::string actor = fmt::format("acme:account/{}/order/{}", finalized->account_id, finalized->id);
  issuer_.IssueAsync(
      std::move(*req), actor,
      [this, finalized, profile = std::string(profile), answer = std::move(answer)](Result<issuance::Issued> issued) {
        answer([this, finalized, profile, issued = std::move(issued)]() -> Result<AcmeAnswer> {
          if (!issued.ok()) {
            Error e = issued.error();
            if (e.code == ErrorCode::kInvalidArgument && e.reason.empty()) e.reason = "badCSR";
            return e;
          }
          store::AcmeOrderRecord order = *finalized;
          order.status = "valid";
          order.serial = issued->record.serial;
          return OrderAnswer(profile, order);
        });
      });
}

Result<AcmeCertificate> AcmeService::Certificate(std::string_view profile, std::string_view serial, int alternate,
                                                 const Checked& request) {
  CF_RETURN_IF_ERROR(PostAsGet(request.jws));
  CF_ASSIGN_OR_RETURN(auto order,
                      store::ReadEach(store_, [&](store::Tx& tx) { return store::FindAcmeOrderBySerial(tx, serial); }));
  if (!order || order->profile != profile) return Problem(ErrorCode::kNotFound, "malformed", "no such certificate");
  if (!request.account || order->account_id != request.account->id) {
    return Unauthorized("the certificate belongs to another account");
  }
  CF_ASSIGN_OR_RETURN(store::CertificateRecord record, issuer_.Get(serial));
  CF_ASSIGN_OR_RETURN(std::string chain, issuer_.ChainOf(record));
  // The issuers run up to the root, last; the default chain leaves it out.
  const size_t last = chain.rfind("-----BEGIN CERTIFICATE-----");
  if (alternate == 0 && last != std::string::npos) {
    // Read without decoding it: OpenSSL 3.0's d2i_X509 costs ~50 µs, a sixth of a request.
    std::optional<std::string> top = pki::PemBlockBytes(std::string_view(chain).substr(last), PEM_STRING_X509);
    if (!top) return MakeError(ErrorCode::kInternal, "a CA certificate in the inventory is not PEM");
    CF_ASSIGN_OR_RETURN(bool root, pki::IsSelfIssued(*top));
    if (root) chain.resize(last);
  }
  AcmeCertificate out;
  out.pem = record.certificate_pem + chain;
  const std::string other = alternate == 0 ? fmt::format("cert/{}/1", serial) : fmt::format("cert/{}", serial);
  out.links.push_back(fmt::format("<{}>;rel=\"alternate\"", Url(profile, other)));
  return out;
}

// An account that did not order a certificate may revoke it when it holds valid authorizations
// for every name the certificate has (7.6).
Result<void> AcmeService::AuthorizedForAll(int64_t account_id, X509* cert) {
  std::set<std::string> names;
  std::vector<std::string> values;
  for (const std::string& san : pki::SubjectAltNames(cert)) {
    const std::string name = CanonicalAddress(san).value_or(AsciiLower(san));
    names.insert(name);
    values.push_back(name.starts_with("*.") ? name.substr(2) : name);
  }
  const int64_t now = clock_.NowMillis();
  CF_ASSIGN_OR_RETURN(std::set<std::string> authorized, store::Read(store_, [&](store::Tx& tx) {
                        return store::AcmeAuthorizedNames(tx, account_id, values, now);
                      }));
  if (names.empty() || !std::includes(authorized.begin(), authorized.end(), names.begin(), names.end())) {
    return Unauthorized("the certificate was not ordered by this account, which is not authorized for all its names");
  }
  return Ok();
}

Result<void> AcmeService::RevokeCertificate(std::string_view profile, const Checked& request) {
  CF_ASSIGN_OR_RETURN(json::object payload, PayloadObject(request.jws));
  const json::value* cert_text = payload.if_contains("certificate");
  std::optional<std::string> der =
      cert_text && cert_text->is_string() ? Base64UrlDecode(cert_text->as_string()) : std::nullopt;
  const auto* p = der ? reinterpret_cast<const unsigned char*>(der->data()) : nullptr;
  pki::X509Ptr cert(der ? d2i_X509(nullptr, &p, static_cast<long>(der->size())) : nullptr);
  if (!cert) return Malformed("certificate must be a DER certificate in base64url");
  int reason = 0;
  if (const json::value* r = payload.if_contains("reason")) {
    const bool allowed = r->is_int64() && std::find(std::begin(kClientReasons), std::end(kClientReasons),
                                                    r->as_int64()) != std::end(kClientReasons);
    if (!allowed) {
      return Problem(ErrorCode::kInvalidArgument, "badRevocationReason",
                     "reason must be 0 (unspecified), 1 (keyCompromise), 3 (affiliationChanged), 4 (superseded) "
                     "or 5 (cessationOfOperation)");
    }
    reason = static_cast<int>(r->as_int64());
  }
  const std::string serial = AsciiLower(pki::SerialHex(X509_get0_serialNumber(cert.get())));
  auto record = issuer_.Get(serial);
  CF_ASSIGN_OR_RETURN(pki::X509Ptr ours, record.ok() ? pki::CertificateFromPem(record->certificate_pem)
                                                     : Result<pki::X509Ptr>(record.error()));
  if (X509_cmp(ours.get(), cert.get()) != 0) return Problem(ErrorCode::kNotFound, "malformed", "no such certificate");
  CF_ASSIGN_OR_RETURN(
      auto order, store::Read(store_, [&](store::Tx& tx) { return store::FindAcmeOrderBySerial(tx, record->serial); }));
  if (!order || order->profile != profile) {
    // Certificates issued otherwise (the API, enrollment, CAs) are not ACME's to revoke,
    // whoever signs: their owners revoke them where they got them.
    return Unauthorized("the certificate was not issued through this ACME profile");
  }
  std::string actor;
  if (request.account) {
    if (order->account_id != request.account->id) {
      CF_RETURN_IF_ERROR(AuthorizedForAll(request.account->id, cert.get()));
    }
    actor = Actor(request.account->id);
  } else {
    CF_ASSIGN_OR_RETURN(pki::PkeyPtr key, PublicKeyFromJwk(*request.jws.jwk));
    if (EVP_PKEY_eq(key.get(), X509_get0_pubkey(cert.get())) != 1) {
      return Unauthorized("the request is signed by neither an account nor the certificate's key");
    }
    actor = "acme:certificate-key";
  }
  if (record->status == store::CertStatus::kRevoked) {
    return Problem(ErrorCode::kInvalidArgument, "alreadyRevoked", "the certificate is revoked already");
  }
  CF_RETURN_IF_ERROR(issuer_.Revoke(record->serial, pki::RevocationReasonName(reason), false, actor));
  return Ok();
}

Result<std::vector<std::pair<std::string, int64_t>>> AcmeService::OrderCounts() {
  return store::Read(store_, [](store::Tx& tx) { return store::CountAcmeOrders(tx); });
}

}  // namespace certfleet::acme
