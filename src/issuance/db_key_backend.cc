#include "issuance/db_key_backend.h"

#include <fmt/format.h>
#include <openssl/crypto.h>

#include "core/crypto.h"
#include "pki/key.h"
#include "store/audit_repo.h"
#include "store/ca_keys_repo.h"

namespace certfleet::issuance {
namespace {

constexpr std::string_view kPrefix = "db:";
constexpr size_t kRefBytes = 16;  // 128 random bits name a key

std::string SealPurpose(std::string_view ref) { return fmt::format("ca-key:{}", ref); }

Result<void> OnlyDb(std::string_view backend) {
  if (!backend.empty() && backend != "db") {
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("the db key backend does not hold {} keys", backend));
  }
  return Ok();
}

}  // namespace

DbKeyBackend::DbKeyBackend(store::Store& store, const Clock& clock, std::string master_key)
    : store_(store), clock_(clock), master_key_(std::move(master_key)) {}

Result<std::string> DbKeyBackend::Generate(pki::KeyType type, std::string_view backend) {
  CF_RETURN_IF_ERROR(OnlyDb(backend));
  CF_ASSIGN_OR_RETURN(pki::PkeyPtr key, pki::GenerateKey(type));
  return Put(key.get(), backend);
}

Result<std::string> DbKeyBackend::Put(EVP_PKEY* key, std::string_view backend) {
  CF_RETURN_IF_ERROR(OnlyDb(backend));
  const std::string ref = std::string(kPrefix) + HexEncode(RandomBytes(kRefBytes));
  CF_ASSIGN_OR_RETURN(std::string pem, pki::PrivateKeyToPem(key));
  const std::string sealed = SealSecret(master_key_, SealPurpose(ref), pem);
  OPENSSL_cleanse(pem.data(), pem.size());
  CF_RETURN_IF_ERROR(
      store::Write(store_, [&](store::Tx& tx) { return store::InsertCaKey(tx, ref, sealed, clock_.NowMillis()); }));
  return ref;
}

Result<std::shared_ptr<EVP_PKEY>> DbKeyBackend::Get(std::string_view ref) {
  {
    std::lock_guard lock(mu_);
    if (auto it = cache_.find(ref); it != cache_.end()) return it->second;
  }
  CF_ASSIGN_OR_RETURN(auto sealed, store::Read(store_, [&](store::Tx& tx) { return store::FindCaKey(tx, ref); }));
  if (!sealed) return MakeError(ErrorCode::kUnavailable, fmt::format("no CA key {} in the database", ref));
  std::optional<std::string> pem = OpenSecret(master_key_, SealPurpose(ref), *sealed);
  if (!pem) {
    return MakeError(ErrorCode::kUnavailable,
                     fmt::format("CA key {} does not open with this master key (another node's master key?)", ref));
  }
  Result<pki::PkeyPtr> key = pki::PrivateKeyFromPem(*pem);
  OPENSSL_cleanse(pem->data(), pem->size());
  if (!key.ok()) return MakeError(ErrorCode::kInternal, fmt::format("CA key {} is not a private key", ref));
  std::shared_ptr<EVP_PKEY> shared(key->release(), EVP_PKEY_free);
  std::lock_guard lock(mu_);
  cache_.emplace(std::string(ref), shared);
  return shared;
}

Result<void> DbKeyBackend::Remove(std::string_view ref) {
  {
    std::lock_guard lock(mu_);
    if (auto it = cache_.find(ref); it != cache_.end()) cache_.erase(it);
  }
  return store::Write(store_, [&](store::Tx& tx) { return store::DeleteCaKey(tx, ref); });
}

Result<std::vector<std::string>> MoveFileKeys(store::Store& store, pki::KeyBackend& keys, const Clock& clock,
                                              std::string_view to, std::string_view actor) {
  CF_ASSIGN_OR_RETURN(auto cas, store::Read(store, [](store::Tx& tx) { return store::CaKeyRefs(tx, "file:"); }));
  std::vector<std::string> moved;
  for (const auto& ca : cas) {
    const std::string& fqdn = ca.first;  // named, not bound: lambdas below capture them
    const std::string& ref = ca.second;
    Result<std::shared_ptr<EVP_PKEY>> key = keys.Get(ref);
    if (!key.ok()) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       fmt::format("the key of CA {} ({}) does not read: {}", fqdn, ref, key.error().message));
    }
    CF_ASSIGN_OR_RETURN(std::string new_ref, keys.Put(key->get(), to));
    const int64_t now = clock.NowMillis();
    Result<bool> pointed = store::Write(store, [&](store::Tx& tx) -> Result<bool> {
      CF_ASSIGN_OR_RETURN(bool changed, store::MoveCaKeyRef(tx, fqdn, ref, new_ref));
      if (changed) {
        CF_RETURN_IF_ERROR(store::AppendAudit(tx, now, actor, "ca.key.move", "ca:" + fqdn,
                                              fmt::format(R"({{"from":"file","to":"{}"}})", to)));
      }
      return changed;
    });
    if (!pointed.ok() || !*pointed) {
      // The CA kept its key: the copy is not needed (unless the move may have committed).
      if (pointed.ok() || !store::MayHaveCommitted(pointed.error())) static_cast<void>(keys.Remove(new_ref));
      if (!pointed.ok()) return pointed.error();
      continue;
    }
    moved.push_back(fqdn);
  }
  return moved;
}

}  // namespace certfleet::issuance
