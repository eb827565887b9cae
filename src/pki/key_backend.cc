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

Result<KeyBackend*> KeyBackends::Holding(std::string_view ref) {
  const size_t colon = ref.find(':');
  auto it = colon == std::string_view::npos ? backends_.end() : backends_.find(ref.substr(0, colon));
  if (it == backends_.end()) {
    return MakeError(ErrorCode::kUnavailable,
                     fmt::format("the key {} is held by a key backend that is not configured", ref.substr(0, colon)));
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
