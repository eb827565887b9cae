#include "acme/acme_service.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <charconv>

#include "acme/eab.h"
#include "acme/problem.h"
#include "core/crypto.h"
#include "core/text.h"
#include "store/audit_repo.h"
#include "store/group_commit.h"

namespace certfleet::acme {
namespace {

// An account deactivated by another request while this one was checked (RFC 8555 7.3.6: final).
Error Deactivated() { return Problem(ErrorCode::kUnauthenticated, "unauthorized", "the account is deactivated"); }

namespace json = boost::json;

constexpr size_t kNonceRandomBytes = 16;
constexpr size_t kNonceMacBytes = 16;  // a truncated HMAC-SHA256: 128 bits cannot be forged
// Expired used nonces are swept by one request in this many.
constexpr uint64_t kSweepEvery = 128;
constexpr size_t kMaxContacts = 10;
constexpr size_t kMaxContactLength = 320;  // an e-mail address with its "mailto:"

// Contacts as RFC 8555 7.3 allows them here: mailto: URLs with one plain address each.
Result<std::string> ContactJson(const json::value* contact) {
  json::array out;
  if (contact == nullptr || contact->is_null()) return json::serialize(out);
  if (!contact->is_array() || contact->as_array().size() > kMaxContacts) {
    return Problem(ErrorCode::kInvalidArgument, "malformed",
                   fmt::format("contact must be an array of at most {} URLs", kMaxContacts));
  }
  for (const auto& c : contact->as_array()) {
    if (!c.is_string()) return Problem(ErrorCode::kInvalidArgument, "malformed", "a contact is not a string");
    const std::string_view url = c.as_string();
    if (!url.starts_with("mailto:")) {
      return Problem(ErrorCode::kInvalidArgument, "unsupportedContact",
                     fmt::format("only mailto: contacts are accepted, not {}", Escaped(url.substr(0, 64))));
    }
    const std::string_view address = url.substr(7);
    const size_t at = address.find('@');
    const bool plain = url.size() <= kMaxContactLength && at != std::string_view::npos && at > 0 &&
                       at + 1 < address.size() && address.find_first_of(",?;<> \t\r\n", 0) == std::string_view::npos;
    if (!plain) {
      return Problem(ErrorCode::kInvalidArgument, "invalidContact",
                     fmt::format("{} is not one e-mail address", Escaped(url.substr(0, 64))));
    }
    out.emplace_back(url);
  }
  return json::serialize(out);
}

Result<json::object> PayloadObject(const Jws& jws) {
  boost::system::error_code ec;
  json::value v = json::parse(jws.payload, ec);
  if (ec || !v.is_object())
    return Problem(ErrorCode::kInvalidArgument, "malformed", "the payload is not a JSON object");
  return std::move(v.as_object());
}

}  // namespace

std::optional<int64_t> AcmeService::ParseAccountId(std::string_view text) {
  int64_t id = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc() || end != text.data() + text.size() || id <= 0) return std::nullopt;
  return id;
}

AcmeService::AcmeService(store::Store& store, issuance::Issuer& issuer, const Validator& validator, const Clock& clock,
                         Options options)
    : store_(store),
      issuer_(issuer),
      validator_(validator),
      clock_(clock),
      options_(std::move(options)),
      // The embedded store is one node: its nonces need not be shared.
      local_nonces_(store.dialect() == store::Dialect::kSqlite ? std::make_unique<LocalNonces>() : nullptr) {}

std::string AcmeService::Url(std::string_view profile, std::string_view path) const {
  return fmt::format("{}/acme/{}/{}", options_.base_url, profile, path);
}

Result<Profile> AcmeService::FindProfile(std::string_view name) {
  const int64_t now = clock_.NowMillis();
  const uint64_t changes = profile_changes_.load();  // before the store: see ReadCache
  if (auto cached = profiles_.Find(name, now, changes)) return *cached;
  const std::optional<Profile> configured = Configured();
  Result<Profile> found = acme::FindProfile(store_, configured ? &*configured : nullptr, name);
  if (found.ok()) profiles_.Put(name, *found, now, changes);
  return found;
}

std::optional<Profile> AcmeService::Configured() const {
  if (options_.ca.empty()) return std::nullopt;
  return ConfiguredProfile(options_.ca, options_.validity_days);
}

json::object AcmeService::Directory(const Profile& profile) const {
  const std::string& name = profile.name;
  return {{"newNonce", Url(name, "new-nonce")},
          {"newAccount", Url(name, "new-account")},
          {"newOrder", Url(name, "new-order")},
          {"revokeCert", Url(name, "revoke-cert")},
          {"keyChange", Url(name, "key-change")},
          {"renewalInfo", Url(name, "renewal-info")},
          {"meta", json::object{{"externalAccountRequired", profile.eab_required}}}};
}

Result<std::vector<Profile>> AcmeService::ListProfiles() {
  CF_ASSIGN_OR_RETURN(auto stored, store::Read(store_, [](store::Tx& tx) { return store::ListAcmeProfiles(tx); }));
  std::vector<Profile> out;
  bool default_stored = false;
  for (const auto& r : stored) {
    out.push_back(ProfileFromRecord(r));
    default_stored = default_stored || r.name == kDefaultProfile;
  }
  if (auto configured = Configured(); configured && !default_stored) out.insert(out.begin(), *configured);
  return out;
}

Result<AcmeService::PutAnswer> AcmeService::PutProfile(std::string_view name, const json::object& body,
                                                       std::string_view actor) {
  CF_ASSIGN_OR_RETURN(Profile profile, ProfileFromJson(name, body));
  const int64_t now = clock_.NowMillis();
  CF_ASSIGN_OR_RETURN(bool created, store::Write(store_, [&](store::Tx& tx) -> Result<bool> {
                        CF_ASSIGN_OR_RETURN(auto ca, store::FindCa(tx, profile.ca));
                        if (!ca || ca->key_ref.empty()) {
                          return MakeError(ErrorCode::kInvalidArgument,
                                           fmt::format("ca {} is not a CA whose key certfleet holds", profile.ca));
                        }
                        CF_ASSIGN_OR_RETURN(bool is_new, store::PutAcmeProfile(tx, ProfileRecord(profile, now)));
                        CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "acme.profile.put",
                                                              fmt::format("acme-profile:{}", profile.name),
                                                              json::serialize(ProfileJson(profile))));
                        return is_new;
                      }));
  ++profile_changes_;
  return PutAnswer{std::move(profile), created};
}

Result<void> AcmeService::DeleteProfile(std::string_view name, std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  Result<void> deleted = store::Write(store_, [&](store::Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(bool deleted, store::DeleteAcmeProfile(tx, name));
    if (!deleted) {
      return MakeError(ErrorCode::kNotFound, fmt::format("no stored ACME profile {} (acme.ca's default is configured, "
                                                         "not stored)",
                                                         Escaped(name)));
    }
    CF_RETURN_IF_ERROR(
        store::AppendAudit(tx, now, actor, "acme.profile.delete", fmt::format("acme-profile:{}", name), "{}"));
    return Ok();
  });
  ++profile_changes_;
  return deleted;
}

Result<EabCredentials> AcmeService::NewEab(std::string_view profile, std::string_view actor) {
  CF_ASSIGN_OR_RETURN(Profile found, FindProfile(profile));
  return CreateEab(store_, clock_, options_.master_key, found.name, actor);
}

std::string AcmeService::NewNonce() const {
  const int64_t expires_at = clock_.NowMillis() + Millis(options_.nonce_ttl);
  if (local_nonces_) return local_nonces_->Make(expires_at);
  std::string body = RandomBytes(kNonceRandomBytes);
  for (int shift = 56; shift >= 0; shift -= 8) body.push_back(static_cast<char>((expires_at >> shift) & 0xff));
  return Base64UrlEncode(body + HmacSha256(options_.nonce_key, body).substr(0, kNonceMacBytes));
}

void AcmeService::UseNonce(std::string_view nonce, std::function<void(Result<void>)> then) {
  const Error bad = Problem(ErrorCode::kInvalidArgument, "badNonce", "the nonce is unknown, used or expired");
  if (local_nonces_) {
    if (!local_nonces_->Use(nonce, clock_.NowMillis())) return then(bad);
    return then(Ok());
  }
  const std::optional<std::string> raw = Base64UrlDecode(nonce);
  constexpr size_t kBodyBytes = kNonceRandomBytes + 8;
  if (!raw || raw->size() != kBodyBytes + kNonceMacBytes) return then(bad);
  // Only the spelling made here: base64url leaves spare bits in the last character, and the
  // store records the nonce as spelled, so another spelling would be a second use.
  if (Base64UrlEncode(*raw) != nonce) return then(bad);
  const std::string_view body = std::string_view(*raw).substr(0, kBodyBytes);
  if (!ConstantTimeEquals(raw->substr(kBodyBytes), HmacSha256(options_.nonce_key, body).substr(0, kNonceMacBytes))) {
    return then(bad);
  }
  int64_t expires_at = 0;
  for (size_t i = kNonceRandomBytes; i < kBodyBytes; ++i)
    expires_at = (expires_at << 8) | static_cast<uint8_t>(body[i]);
  const int64_t now = clock_.NowMillis();
  if (expires_at <= now) return then(bad);
  const bool sweep = nonces_used_.fetch_add(1) % kSweepEvery == 0;
  auto fresh = std::make_shared<bool>(false);
  issuer_.Committer().Submit(
      [sweep, now, expires_at, fresh, nonce = std::string(nonce)](store::Tx& tx) -> Result<void> {
        if (sweep) CF_RETURN_IF_ERROR(store::DeleteExpiredAcmeNonces(tx, now));
        CF_ASSIGN_OR_RETURN(*fresh, store::UseAcmeNonce(tx, nonce, expires_at));
        return Ok();
      },
      [post = options_.post, fresh, bad, then = std::move(then)](Result<void> written) mutable {
        auto go = [fresh, bad, written = std::move(written), then = std::move(then)] {
          if (!written.ok()) return then(written.error());
          then(*fresh ? Ok() : Result<void>(bad));
        };
        if (post) return post(std::move(go));
        go();
      });
}

void AcmeService::Check(std::string_view profile, std::string_view path, std::string_view body, Signer signer,
                        Then then) {
  Result<Checked> checked = CheckSigned(profile, path, body, signer);
  if (!checked.ok()) return then(checked.error());
  auto request = std::make_shared<Checked>(std::move(*checked));
  UseNonce(request->jws.nonce, [request, then = std::move(then)](const Result<void>& used) {
    if (!used.ok()) return then(used.error());
    then(std::move(*request));
  });
}

Result<AcmeService::Checked> AcmeService::CheckSigned(std::string_view profile, std::string_view path,
                                                      std::string_view body, Signer signer) {
  auto parsed = ParseJws(body);
  if (!parsed.ok()) return Problem(ErrorCode::kInvalidArgument, "malformed", parsed.error().message);
  Checked out{std::move(*parsed), std::nullopt};
  const Jws& jws = out.jws;
  if (!SupportedAlgorithm(jws.alg)) {
    return Problem(ErrorCode::kInvalidArgument, "badSignatureAlgorithm",
                   fmt::format("alg {} is not accepted (ES256, ES384, RS256, EdDSA)", Escaped(jws.alg)));
  }
  if (jws.url != options_.base_url + std::string(path)) {
    return Problem(ErrorCode::kUnauthenticated, "unauthorized", "the JWS url is not the URL of this request");
  }
  std::shared_ptr<EVP_PKEY> key;
  if (signer == Signer::kJwk || (signer == Signer::kEither && jws.jwk)) {
    if (!jws.jwk)
      return Problem(ErrorCode::kInvalidArgument, "malformed", "this request is signed with a jwk, not kid");
    auto from_jwk = PublicKeyFromJwk(*jws.jwk);
    if (!from_jwk.ok()) return Problem(ErrorCode::kInvalidArgument, "badPublicKey", from_jwk.error().message);
    key = std::move(*from_jwk);
  } else {
    if (!jws.kid)
      return Problem(ErrorCode::kInvalidArgument, "malformed", "this request is signed with kid, not a jwk");
    const std::string prefix = Url(profile, "account/");
    const std::optional<int64_t> id =
        jws.kid->starts_with(prefix) ? ParseAccountId(std::string_view(*jws.kid).substr(prefix.size())) : std::nullopt;
    if (!id) {
      return Problem(ErrorCode::kInvalidArgument, "accountDoesNotExist", "kid is not an account URL of this profile");
    }
    CF_ASSIGN_OR_RETURN(auto account,
                        store::ReadEach(store_, [&](store::Tx& tx) { return store::FindAcmeAccount(tx, *id); }));
    if (!account || account->profile != profile) {
      return Problem(ErrorCode::kInvalidArgument, "accountDoesNotExist", "no such account");
    }
    if (account->status != "valid") {
      return Problem(ErrorCode::kUnauthenticated, "unauthorized", fmt::format("the account is {}", account->status));
    }
    CF_ASSIGN_OR_RETURN(key, AccountKey(*account));
    out.account = std::move(*account);
  }
  if (auto verified = VerifyJws(jws, key.get()); !verified.ok()) {
    return Problem(ErrorCode::kInvalidArgument, "malformed", verified.error().message);
  }
  return out;
}

Result<std::shared_ptr<EVP_PKEY>> AcmeService::AccountKey(const store::AcmeAccountRecord& account) {
  {
    std::lock_guard lock(keys_mu_);
    if (auto it = account_keys_.find(account.id); it != account_keys_.end() && it->second.first == account.jwk) {
      return it->second.second;
    }
  }
  boost::system::error_code ec;
  json::value jwk = json::parse(account.jwk, ec);
  if (ec || !jwk.is_object()) return MakeError(ErrorCode::kInternal, "an account's stored key is not JSON");
  CF_ASSIGN_OR_RETURN(pki::PkeyPtr parsed, PublicKeyFromJwk(jwk.as_object()));
  std::shared_ptr<EVP_PKEY> key(parsed.release(), EVP_PKEY_free);
  std::lock_guard lock(keys_mu_);
  if (account_keys_.size() >= kAccountKeysKept) account_keys_.clear();
  account_keys_[account.id] = {account.jwk, key};
  return key;
}

namespace {

// The account a key already has; a deactivated one takes no more requests signed by its key
// (RFC 8555 7.3.6), new-account's included.
Result<AcmeService::AccountAnswer> Existing(store::AcmeAccountRecord account) {
  if (account.status != "valid") {
    return Problem(ErrorCode::kUnauthenticated, "unauthorized",
                   fmt::format("the account with this key is {}", account.status));
  }
  return AcmeService::AccountAnswer{std::move(account), false};
}

}  // namespace

Result<AcmeService::AccountAnswer> AcmeService::NewAccount(std::string_view profile, const Checked& request) {
  CF_ASSIGN_OR_RETURN(json::object payload, PayloadObject(request.jws));
  CF_ASSIGN_OR_RETURN(std::string thumbprint, JwkThumbprint(*request.jws.jwk));
  const json::value* only_existing = payload.if_contains("onlyReturnExisting");
  const bool find_only = only_existing && only_existing->is_bool() && only_existing->as_bool();
  CF_ASSIGN_OR_RETURN(std::string contact, ContactJson(payload.if_contains("contact")));
  CF_ASSIGN_OR_RETURN(Profile found, FindProfile(profile));
  // An existing account is found before its binding is looked at: a client that registers
  // again with its key and the (used) binding gets its account (RFC 8555 7.3.1).
  CF_ASSIGN_OR_RETURN(auto existing, store::Read(store_, [&](store::Tx& tx) {
                        return store::FindAcmeAccountByKey(tx, profile, thumbprint);
                      }));
  if (existing) return Existing(std::move(*existing));
  std::optional<std::string> eab_kid;
  if (const json::value* binding = payload.if_contains("externalAccountBinding"); binding && !find_only) {
    CF_ASSIGN_OR_RETURN(eab_kid, VerifyEab(store_, options_.master_key, profile, *binding, request.jws));
  }
  const int64_t now = clock_.NowMillis();
  Result<AccountAnswer> made = store::Write(store_, [&](store::Tx& tx) -> Result<AccountAnswer> {
    CF_ASSIGN_OR_RETURN(auto existing, store::FindAcmeAccountByKey(tx, profile, thumbprint));
    if (existing) return Existing(std::move(*existing));
    if (find_only) return Problem(ErrorCode::kInvalidArgument, "accountDoesNotExist", "no account has this key");
    if (found.eab_required && !eab_kid) {
      return Problem(ErrorCode::kUnauthenticated, "externalAccountRequired",
                     fmt::format("the profile {} needs an external account binding (POST /v1/acme/eab)", profile));
    }
    store::AcmeAccountRecord account{
        0, std::string(profile), thumbprint, json::serialize(*request.jws.jwk), "valid", contact, now};
    CF_ASSIGN_OR_RETURN(account.id, store::InsertAcmeAccount(tx, account));
    if (eab_kid) {
      CF_ASSIGN_OR_RETURN(bool bound, store::UseAcmeEab(tx, *eab_kid, account.id, now));
      if (!bound) {
        return Problem(ErrorCode::kUnauthenticated, "unauthorized", "the external account binding was used already");
      }
    }
    CF_RETURN_IF_ERROR(store::AppendAudit(
        tx, now, fmt::format("acme:account/{}", account.id), "acme.account.create",
        fmt::format("acme-account:{}", account.id),
        json::serialize(json::object{{"profile", profile},
                                     {"thumbprint", thumbprint},
                                     {"contact", json::parse(contact)},
                                     {"eab_kid", eab_kid ? json::value(*eab_kid) : json::value(nullptr)}})));
    return AccountAnswer{std::move(account), true};
  });
  // The same key registered at the same time by another request, which committed first (on
  // PostgreSQL neither saw the other's account): that account is the answer (RFC 8555 7.3.1).
  if (!made.ok() && made.error().code == ErrorCode::kAlreadyExists && made.error().reason.empty()) {
    CF_ASSIGN_OR_RETURN(auto winner, store::Read(store_, [&](store::Tx& tx) {
                          return store::FindAcmeAccountByKey(tx, profile, thumbprint);
                        }));
    if (winner) return Existing(std::move(*winner));
  }
  return made;
}

Result<store::AcmeAccountRecord> AcmeService::UpdateAccount(std::string_view profile, int64_t id,
                                                            const Checked& request) {
  if (!request.account || request.account->id != id) {
    return Problem(ErrorCode::kUnauthenticated, "unauthorized", "an account is changed only with its own key");
  }
  store::AcmeAccountRecord account = *request.account;
  if (request.jws.payload.empty()) return account;  // POST-as-GET
  CF_ASSIGN_OR_RETURN(json::object payload, PayloadObject(request.jws));
  std::string status = account.status;
  if (const json::value* s = payload.if_contains("status")) {
    if (!s->is_string() || s->as_string() != "deactivated") {
      return Problem(ErrorCode::kInvalidArgument, "malformed", "an account's status can only become deactivated");
    }
    status = "deactivated";
  }
  std::string contact = account.contact;
  if (payload.contains("contact")) {
    CF_ASSIGN_OR_RETURN(contact, ContactJson(payload.if_contains("contact")));
  }
  if (status == account.status && contact == account.contact) return account;
  const int64_t now = clock_.NowMillis();
  CF_RETURN_IF_ERROR(store::Write(store_, [&](store::Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(bool changed, store::UpdateAcmeAccount(tx, id, status, contact));
    if (!changed) return Deactivated();
    CF_RETURN_IF_ERROR(store::AppendAudit(
        tx, now, fmt::format("acme:account/{}", id),
        status != account.status ? "acme.account.deactivate" : "acme.account.update",
        fmt::format("acme-account:{}", id),
        json::serialize(json::object{{"profile", profile}, {"contact", json::parse(contact)}, {"status", status}})));
    return Ok();
  }));
  account.status = status;
  account.contact = contact;
  return account;
}

Result<store::AcmeAccountRecord> AcmeService::ChangeKey(std::string_view profile, const Checked& request) {
  store::AcmeAccountRecord account = *request.account;
  auto inner = ParseJws(request.jws.payload, JwsRole::kInner);
  if (!inner.ok()) return Problem(ErrorCode::kInvalidArgument, "malformed", inner.error().message);
  if (!SupportedAlgorithm(inner->alg)) {
    return Problem(ErrorCode::kInvalidArgument, "badSignatureAlgorithm",
                   fmt::format("alg {} is not accepted (ES256, ES384, RS256, EdDSA)", Escaped(inner->alg)));
  }
  if (inner->url != request.jws.url) {
    return Problem(ErrorCode::kInvalidArgument, "malformed", "the inner JWS's url is not the outer one's");
  }
  auto new_key = PublicKeyFromJwk(*inner->jwk);
  if (!new_key.ok()) return Problem(ErrorCode::kInvalidArgument, "badPublicKey", new_key.error().message);
  if (auto verified = VerifyJws(*inner, new_key->get()); !verified.ok()) {
    return Problem(ErrorCode::kInvalidArgument, "malformed", "the inner JWS: " + verified.error().message);
  }
  CF_ASSIGN_OR_RETURN(json::object payload, PayloadObject(*inner));
  const json::value* named = payload.if_contains("account");
  const json::value* old_key = payload.if_contains("oldKey");
  if (!named || !named->is_string() || named->as_string() != *request.jws.kid) {
    return Problem(ErrorCode::kInvalidArgument, "malformed", "the inner payload's account is not the signer's");
  }
  if (!old_key || !old_key->is_object()) return Problem(ErrorCode::kInvalidArgument, "malformed", "no oldKey");
  auto old_thumbprint = JwkThumbprint(old_key->as_object());
  if (!old_thumbprint.ok() || *old_thumbprint != account.thumbprint) {
    return Problem(ErrorCode::kInvalidArgument, "malformed", "oldKey is not the account's key");
  }
  CF_ASSIGN_OR_RETURN(std::string thumbprint, JwkThumbprint(*inner->jwk));
  const std::string jwk = json::serialize(*inner->jwk);
  const int64_t now = clock_.NowMillis();
  // The other account that has the key: its URL is the conflict's message (the route's Location).
  auto held_by = [&](int64_t id) {
    return Problem(ErrorCode::kAlreadyExists, "malformed", Url(profile, fmt::format("account/{}", id)));
  };
  bool raced = false;  // another node gave the key to an account after the look below
  Result<void> changed_key = store::Write(store_, [&](store::Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(auto holder, store::FindAcmeAccountByKey(tx, profile, thumbprint));
    if (holder) return held_by(holder->id);
    Result<bool> changed = store::ChangeAcmeAccountKey(tx, account.id, thumbprint, jwk);
    raced = !changed.ok() && changed.error().code == ErrorCode::kAlreadyExists;
    if (!changed.ok()) return changed.error();
    if (!*changed) return Deactivated();
    CF_RETURN_IF_ERROR(store::AppendAudit(
        tx, now, fmt::format("acme:account/{}", account.id), "acme.account.key_change",
        fmt::format("acme-account:{}", account.id),
        json::serialize(
            json::object{{"profile", profile}, {"old_thumbprint", account.thumbprint}, {"thumbprint", thumbprint}})));
    return Ok();
  });
  if (raced) {
    CF_ASSIGN_OR_RETURN(auto holder, store::Read(store_, [&](store::Tx& tx) {
                          return store::FindAcmeAccountByKey(tx, profile, thumbprint);
                        }));
    if (holder) return held_by(holder->id);
    return Problem(ErrorCode::kUnavailable, "serverInternal", "the key was being given to another account: try again");
  }
  if (!changed_key.ok()) return changed_key.error();
  account.thumbprint = thumbprint;
  account.jwk = jwk;
  return account;
}

json::object AcmeService::AccountJson(std::string_view profile, const store::AcmeAccountRecord& account) const {
  boost::system::error_code ec;
  json::value contact = json::parse(account.contact, ec);
  return {{"status", account.status},
          {"contact", ec ? json::value(json::array()) : contact},
          {"orders", Url(profile, fmt::format("account/{}/orders", account.id))},
          {"createdAt", FormatRfc3339(account.created_at)}};
}

}  // namespace certfleet::acme
