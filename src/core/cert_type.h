#pragma once

// What a certificate is, for every module that keeps or reads certificates (the store's
// inventory, pki's profiles, the workflows).
#include <string_view>

#include "core/enum_names.h"
#include "core/result.h"

namespace certfleet {

enum class CertType { kRoot, kIntermediate, kServer, kDevice };
inline constexpr std::string_view kCertTypeNames[] = {"root", "intermediate", "server", "device"};

constexpr std::string_view CertTypeName(CertType type) { return EnumName(type, kCertTypeNames); }
// kInvalidArgument naming the types otherwise.
inline Result<CertType> ParseCertType(std::string_view name) {
  if (auto t = ParseEnum<CertType>(name, kCertTypeNames)) return *t;
  return MakeError(ErrorCode::kInvalidArgument, "type must be root, intermediate, server or device");
}
constexpr bool IsCa(CertType t) { return t == CertType::kRoot || t == CertType::kIntermediate; }

}  // namespace certfleet
