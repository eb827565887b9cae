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

// An order's `replaces` names a certificate another order replaces already (RFC 9773).
inline Error AlreadyReplaced() {
  return Problem(ErrorCode::kAlreadyExists, "alreadyReplaced", "another order replaces this certificate already");
}

}  // namespace certfleet::acme
