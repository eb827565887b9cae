#pragma once

#include <string>
#include <string_view>

#include "core/result.h"

namespace certfleet::acme {

// An error that is an RFC 8555 problem: `type` is the last part of its
// "urn:ietf:params:acme:error:" URN ("badNonce", "incorrectResponse", …).
inline Error Problem(ErrorCode code, std::string_view type, std::string detail) {
  Error e = MakeError(code, std::move(detail));
  e.reason = std::string(type);
  return e;
}

}  // namespace certfleet::acme
