#pragma once

#include <fmt/format.h>

#include <string>
#include <string_view>

#include "core/result.h"

// What enrollment's files share: its refusals and the sealing purpose of its secrets.
namespace certfleet::enroll::detail {

inline Error Unauthenticated(std::string message) { return MakeError(ErrorCode::kUnauthenticated, std::move(message)); }
inline Error Denied(std::string message) { return MakeError(ErrorCode::kPermissionDenied, std::move(message)); }

inline constexpr std::string_view kSecretRefused = "the enrollment secret is unknown, wrong, used or expired";

// What a secret is sealed for (core's SealSecret): its id, so that sealed values cannot be swapped.
inline std::string SecretPurpose(std::string_view id) { return fmt::format("enroll-secret:{}", id); }

}  // namespace certfleet::enroll::detail
