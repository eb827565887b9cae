#pragma once

#include <boost/json/value.hpp>
#include <optional>
#include <string_view>

#include "core/crypto.h"
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
// The body as a JSON object, or a 400 Error ("malformed JSON ...", "expected an object", or
// a key given twice in one object, which parsers read differently: the first or the last).
Result<boost::json::object> ParseJsonObject(std::string_view body);

// What a string field may hold: one line (names, ids, paths, commands), or lines (PEM,
// an error report). Control characters other than tab, CR and LF are refused in both.
enum class Text { kLine, kLines };
// Typed fields of a JSON object, with errors that name the field.
Result<std::string> RequiredString(const boost::json::object& o, std::string_view key, size_t max_len,
                                   Text text = Text::kLine);
Result<std::optional<std::string>> OptionalString(const boost::json::object& o, std::string_view key, size_t max_len,
                                                  Text text = Text::kLine);
// The request's media type (type/subtype, lowercased, without parameters); "" if none was sent.
std::string MediaType(const Request& req);
// Tells caches and proxies not to keep the response: it holds a secret (a token, a key).
Response NoStore(Response res);

// A JSON error response for `e`; errors of the server (5xx) are logged with the request id.
Response Fail(const Request& req, const Error& e);
Response Fail(std::string_view request_id, const Error& e);
// The value of query parameter `key` if present; kInvalidArgument if longer than `max_len`.
Result<std::optional<std::string>> QueryParam(const Request& req, std::string_view key, size_t max_len);
// A query parameter naming a value of an enum (core/enum_names.h): nullopt when absent,
// kInvalidArgument listing the names when it is none of them.
template <typename E, size_t N>
Result<std::optional<E>> EnumParam(const Request& req, std::string_view key, const std::string_view (&names)[N]) {
  constexpr size_t kMaxEnumName = 64;
  CF_ASSIGN_OR_RETURN(std::optional<std::string> text, QueryParam(req, key, kMaxEnumName));
  if (!text) return std::optional<E>();
  if (std::optional<E> value = ParseEnum<E>(*text, names)) return value;
  return MakeError(ErrorCode::kInvalidArgument, std::string(key) + " must be " + EnumChoices(names));
}
boost::json::value OptTime(const std::optional<int64_t>& millis);  // RFC 3339 or null
boost::json::value OptStr(const std::optional<std::string>& v);
// {"items": [...], "next": cursor or null}.
boost::json::object PageJson(boost::json::array items, std::optional<std::string> next);
// The opaque cursor after a page (the last row's key, base64url): a full page may have
// more after it, a short one is the last.
template <typename LastKey>
std::optional<std::string> NextCursor(size_t count, int limit, LastKey last_key) {
  if (count != static_cast<size_t>(limit) || count == 0) return std::nullopt;
  return Base64UrlEncode(last_key());
}

// `limit` and `next` of a paginated list: limit 1..1000, default 100.
struct Page {
  int limit = 100;
  std::optional<std::string> after;  // the key `next` carries
};
Result<Page> ParsePage(const Request& req);
// The route's {id} as a positive integer; kInvalidArgument otherwise.
Result<int64_t> PathId(const Request& req);
// A query value as an integer; kInvalidArgument naming it otherwise.
Result<int64_t> ParseInt(std::string_view s, std::string_view name);
// `after` as a number, for lists keyed by a numeric id.
Result<std::optional<int64_t>> AfterNumber(const Page& page);

}  // namespace certfleet::http
