#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace certfleet {

// What went wrong, in terms a caller can act on. HTTP maps each code to one status.
enum class ErrorCode {
  kInvalidArgument,     // the caller's input is wrong (400)
  kUnauthenticated,     // no or bad credentials (401)
  kPermissionDenied,    // authenticated, not allowed (403)
  kNotFound,            // (404)
  kAlreadyExists,       // (409)
  kFailedPrecondition,  // the state of things forbids it now (409)
  kResourceExhausted,   // a limit was hit (413/429)
  kUnavailable,         // a dependency (store, mail, blob) cannot be reached (503)
  kDeadlineExceeded,    // (504)
  kInternal,            // a bug or an environment failure (500)
};

std::string_view ErrorCodeName(ErrorCode code);

// An Error is a failure carried as a value across module boundaries.
struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
  // A protocol's own name for the failure where its clients need one (ACME's problem types,
  // "badNonce"); empty for most errors, whose code says enough.
  std::string reason = {};

  // Returns a copy whose message is prefixed with `context: `.
  Error Wrap(std::string_view context) const { return Error{code, std::string(context) + ": " + message, reason}; }
};

inline Error MakeError(ErrorCode code, std::string message) { return Error{code, std::move(message)}; }

// A Result<T> holds either a T or an Error. Thread contract: like a plain value.
template <typename T>
class [[nodiscard]] Result {
 public:
  using value_type = T;

  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok() && "value() on an error Result");
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(ok() && "value() on an error Result");
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(ok() && "value() on an error Result");
    return std::get<0>(std::move(v_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const {
    assert(!ok() && "error() on an ok Result");
    return std::get<1>(v_);
  }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  using value_type = void;

  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const {
    assert(!ok_ && "error() on an ok Result");
    return error_;
  }

 private:
  Error error_;
  bool ok_ = true;
};

inline Result<void> Ok() { return {}; }

}  // namespace certfleet

// Returns the error of `expr` (a Result) from the enclosing function if it failed.
#define CF_RETURN_IF_ERROR(expr)                     \
  do {                                               \
    auto cf_status_ = (expr);                        \
    if (!cf_status_.ok()) return cf_status_.error(); \
  } while (0)

#define CF_CONCAT_INNER(a, b) a##b
#define CF_CONCAT(a, b) CF_CONCAT_INNER(a, b)
// Declares `lhs` from the value of `expr` (a Result), or returns its error.
#define CF_ASSIGN_OR_RETURN(lhs, expr) CF_ASSIGN_OR_RETURN_IMPL(CF_CONCAT(cf_result_, __LINE__), lhs, expr)
// `lhs` may be a declaration, so it cannot be parenthesized.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define CF_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.error();             \
  lhs = std::move(tmp).value()
// NOLINTEND(bugprone-macro-parentheses)
