#pragma once

#include <boost/json/value.hpp>
#include <string_view>

#include "core/result.h"
#include "http/types.h"

namespace certfleet::http {

// The HTTP status for an error code.
int StatusFor(ErrorCode code);
// {"error": {"code": "...", "message": "..."}} with the given status.
Response ErrorResponse(int status, std::string_view code, std::string_view message);
// The same for an Error, with its status from StatusFor; internal details of 5xx errors
// are logged by the caller, not sent.
Response ErrorResponse(const Error& error);
Response JsonResponse(int status, const boost::json::value& body);
// The body as a JSON object, or a 400 Error ("malformed JSON ..." / "expected an object").
Result<boost::json::object> ParseJsonObject(std::string_view body);

// Typed fields of a JSON object, with errors that name the field.
Result<std::string> RequiredString(const boost::json::object& o, std::string_view key, size_t max_len);
Result<std::optional<std::string>> OptionalString(const boost::json::object& o, std::string_view key, size_t max_len);

// `limit` and `next` of a paginated list: limit 1..1000, default 100.
struct Page {
  int limit = 100;
  std::optional<int64_t> cursor;
};
Result<Page> ParsePage(const Request& req);

}  // namespace certfleet::http
