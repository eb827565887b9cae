#include "pki/key_backend.h"

#include <fmt/format.h>

namespace certfleet::pki {

void KeyBackends::Add(std::string name, std::unique_ptr<KeyBackend> backend) {
  backends_[std::move(name)] = std::move(backend);
}

Result<KeyBackend*> KeyBackends::Named(std::string_view backend) {
  const std::string_view name = backend.empty() ? std::string_view(default_) : backend;
  auto it = backends_.find(name);
  if (it == backends_.end()) {
    std::string known;
    for (const auto& [n, b] : backends_) known += (known.empty() ? "" : ", ") + n;
    return MakeError(ErrorCode::kInvalidArgument,
                     fmt::format("key backend '{}' is not configured (configured: {})", name, known));
  }
  return it->second.get();
}

std::string_view KeyBackendOf(std::string_view ref) { return ref.substr(0, ref.find(':')); }

Result<KeyBackend*> KeyBackends::Holding(std::string_view ref) {
  auto it = backends_.find(KeyBackendOf(ref));
  if (it == backends_.end()) {
    return MakeError(ErrorCode::kUnavailable,
                     fmt::format("the key {} is held by a key backend that is not configured", KeyBackendOf(ref)));
  }
  return it->second.get();
}

Result<std::string> KeyBackends::Generate(KeyType type, std::string_view backend) {
  CF_ASSIGN_OR_RETURN(KeyBackend * b, Named(backend));
  return b->Generate(type, {});
}

Result<std::string> KeyBackends::Put(EVP_PKEY* key, std::string_view backend) {
  CF_ASSIGN_OR_RETURN(KeyBackend * b, Named(backend));
  return b->Put(key, {});
}

Result<std::shared_ptr<EVP_PKEY>> KeyBackends::Get(std::string_view ref) {
  CF_ASSIGN_OR_RETURN(KeyBackend * b, Holding(ref));
  return b->Get(ref);
}

Result<void> KeyBackends::Remove(std::string_view ref) {
  CF_ASSIGN_OR_RETURN(KeyBackend * b, Holding(ref));
  return b->Remove(ref);
}

}  // namespace certfleet::pki
