#include "http/json.h"

#include <fmt/format.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <charconv>
#include <set>
#include <vector>

#include "core/clock.h"
#include "core/json.h"
#include "core/log.h"
#include "core/text.h"

namespace certfleet::http {
namespace {

namespace json = boost::json;

constexpr int kMaxPageLimit = 1000;  // bounds the work and memory of one list request
constexpr int kDefaultPageLimit = 100;

}  // namespace

Result<int64_t> ParseInt(std::string_view s, std::string_view name) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) {
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("{} must be an integer", name));
  }
  return v;
}

int StatusFor(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return 400;
    case ErrorCode::kUnauthenticated:
      return 401;
    case ErrorCode::kPermissionDenied:
      return 403;
    case ErrorCode::kNotFound:
      return 404;
    case ErrorCode::kAlreadyExists:
    case ErrorCode::kFailedPrecondition:
      return 409;
    case ErrorCode::kResourceExhausted:
      return 429;
    case ErrorCode::kUnavailable:
      return 503;
    case ErrorCode::kDeadlineExceeded:
      return 504;
    case ErrorCode::kInternal:
      return 500;
  }
  return 500;
}

Response ErrorResponse(int status, std::string_view code, std::string_view message) {
  boost::json::object err{{"code", code}, {"message", message}};
  return JsonResponse(status, boost::json::object{{"error", std::move(err)}});
}

Response ErrorResponse(const Error& error) {
  const int status = StatusFor(error.code);
  if (status >= 500)
    return ErrorResponse(status, ErrorCodeName(error.code), "the server could not complete the request; see its log");
  return ErrorResponse(status, ErrorCodeName(error.code), error.message);
}

Response JsonResponse(int status, const boost::json::value& body) {
  Response r;
  r.status = status;
  r.body = boost::json::serialize(body);
  // Boost.JSON writes strings' bytes as they are: text that came in as something other than
  // UTF-8 (a CSV field, a file name) would make the whole answer invalid JSON.
  if (!IsValidUtf8(r.body)) r.body = ToValidUtf8(r.body);
  r.body.push_back('\n');
  return r;
}

Result<boost::json::object> ParseJsonObject(std::string_view body) {
  CF_ASSIGN_OR_RETURN(boost::json::value v, ParseJson(body));
  if (!v.is_object()) return MakeError(ErrorCode::kInvalidArgument, "the body must be a JSON object");
  return std::move(v.as_object());
}

Result<std::optional<std::string>> OptionalString(const boost::json::object& o, std::string_view key, size_t max_len,
                                                  Text text) {
  auto it = o.find(key);
  if (it == o.end() || it->value().is_null()) return std::optional<std::string>();
  if (!it->value().is_string()) return MakeError(ErrorCode::kInvalidArgument, fmt::format("{} must be a string", key));
  const auto& s = it->value().as_string();
  if (s.size() > max_len)
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("{} is longer than {} characters", key, max_len));
  CF_RETURN_IF_ERROR(CheckPrintable(key, s, text == Text::kLines));
  return std::optional<std::string>(std::string(s));
}

Result<std::string> RequiredString(const boost::json::object& o, std::string_view key, size_t max_len, Text text) {
  CF_ASSIGN_OR_RETURN(auto s, OptionalString(o, key, max_len, text));
  if (!s || s->empty()) return MakeError(ErrorCode::kInvalidArgument, fmt::format("{} is required", key));
  return *s;
}

std::string MediaType(const Request& req) {
  std::string_view type = req.Header("content-type").value_or("");
  type = type.substr(0, type.find(';'));
  while (!type.empty() && (type.back() == ' ' || type.back() == '\t')) type.remove_suffix(1);
  while (!type.empty() && (type.front() == ' ' || type.front() == '\t')) type.remove_prefix(1);
  return AsciiLower(type);
}

Response NoStore(Response res) {
  res.headers.emplace_back("Cache-Control", "no-store");
  return res;
}

Response Fail(const Request& req, const Error& e) { return Fail(req.request_id, e); }

Response Fail(std::string_view request_id, const Error& e) {
  if (StatusFor(e.code) >= 500) log::Error("request failed", {{"request_id", request_id}, {"error", e.message}});
  return ErrorResponse(e);
}

Result<std::optional<std::string>> QueryParam(const Request& req, std::string_view key, size_t max_len) {
  auto it = req.query.find(std::string(key));
  if (it == req.query.end()) return std::optional<std::string>();
  if (it->second.size() > max_len) return MakeError(ErrorCode::kInvalidArgument, fmt::format("{} is too long", key));
  return std::optional<std::string>(it->second);
}

boost::json::value OptTime(const std::optional<int64_t>& millis) {
  return millis ? boost::json::value(FormatRfc3339(*millis)) : boost::json::value(nullptr);
}

boost::json::value OptStr(const std::optional<std::string>& v) {
  return v ? boost::json::value(*v) : boost::json::value(nullptr);
}

boost::json::object PageJson(boost::json::array items, std::optional<std::string> next) {
  return {{"items", std::move(items)}, {"next", next ? boost::json::value(*next) : boost::json::value(nullptr)}};
}

Result<Page> ParsePage(const Request& req) {
  Page page;
  page.limit = kDefaultPageLimit;
  if (auto it = req.query.find("limit"); it != req.query.end()) {
    CF_ASSIGN_OR_RETURN(int64_t limit, ParseInt(it->second, "limit"));
    if (limit < 1 || limit > kMaxPageLimit) {
      return MakeError(ErrorCode::kInvalidArgument, fmt::format("limit must be between 1 and {}", kMaxPageLimit));
    }
    page.limit = static_cast<int>(limit);
  }
  if (auto it = req.query.find("next"); it != req.query.end()) {
    page.after = Base64Decode(it->second);
    if (!page.after || page.after->empty()) {
      return MakeError(ErrorCode::kInvalidArgument, "next is not a cursor from a previous page");
    }
  }
  return page;
}

Result<int64_t> PathId(const Request& req) {
  const std::string& s = req.params.at("id");
  int64_t id = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), id);
  if (ec != std::errc() || p != s.data() + s.size() || id <= 0) {
    return MakeError(ErrorCode::kInvalidArgument, "the id must be a positive integer");
  }
  return id;
}

Result<std::optional<int64_t>> AfterNumber(const Page& page) {
  if (!page.after) return std::optional<int64_t>();
  CF_ASSIGN_OR_RETURN(int64_t n, ParseInt(*page.after, "next"));
  return std::optional<int64_t>(n);
}

}  // namespace certfleet::http
