#pragma once

#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "store/store.h"
#include "store/tokens_repo.h"

namespace certfleet::http {

// API tokens as operators manage them, through the API (/v1/tokens) and the command line
// (certfleet token ...) alike: each change commits with the same audit entry. Thread-safe.
class TokenService {
 public:
  TokenService(store::Store& store, const Clock& clock) : store_(store), clock_(clock) {}

  // A new token of `role`; its bearer string is in the result only. kInvalidArgument for
  // a name longer than kMaxNameLength or holding control characters.
  Result<store::NewToken> Create(store::Role role, std::string_view name, std::string_view actor);
  Result<std::vector<store::ApiToken>> List();
  // kNotFound when there is no unrevoked token `id`.
  Result<void> Revoke(std::string_view id, std::string_view actor);

  // A token's name says who or what uses it: a line of text.
  static constexpr size_t kMaxNameLength = 200;

 private:
  store::Store& store_;
  const Clock& clock_;
};

}  // namespace certfleet::http
