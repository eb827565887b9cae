#include "http/router.h"

#include <cassert>
#include <exception>

#include "core/crypto.h"
#include "core/log.h"
#include "core/text.h"
#include "http/json.h"

namespace certfleet::http {
namespace {

std::vector<std::string> SplitPath(std::string_view path) {
  std::vector<std::string> out;
  size_t start = 1;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    out.emplace_back(path.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

bool IsParam(const std::string& segment) {
  return segment.size() > 2 && segment.front() == '{' && segment.back() == '}';
}

store::Role RequiredRole(Access access) {
  switch (access) {
    case Access::kReader:
      return store::Role::kReader;
    case Access::kOperator:
      return store::Role::kOperator;
    default:
      return store::Role::kAdmin;
  }
}

}  // namespace

void Router::Add(std::string method, std::string pattern, RouteOptions options, Handler handler) {
  assert(pattern.starts_with('/') && "route patterns are absolute");
  std::vector<std::string> segments = SplitPath(pattern);
  Route r{std::move(method), std::move(pattern), std::move(segments), std::move(options), std::move(handler), {}};
  routes_.push_back(std::move(r));
}

void Router::AddAsync(std::string method, std::string pattern, RouteOptions options, AsyncHandler handler) {
  Add(std::move(method), std::move(pattern), std::move(options), nullptr);
  routes_.back().async_handler = std::move(handler);
}

Router::Match Router::Find(std::string_view method, std::string_view raw_path) const {
  Match m;
  m.status = 404;
  if (!raw_path.starts_with('/')) return m;
  auto segments = SplitPath(raw_path);
  for (auto& segment : segments) segment = PercentDecode(segment, false);
  for (const Route& r : routes_) {
    // A last segment {*name} takes the rest of the path, slashes included.
    const bool rest = !r.segments.empty() && r.segments.back().starts_with("{*");
    if (rest ? segments.size() < r.segments.size() : r.segments.size() != segments.size()) continue;
    std::map<std::string, std::string> params;
    bool ok = true;
    for (size_t i = 0; i < r.segments.size() && ok; ++i) {
      const std::string& pattern = r.segments[i];
      if (!IsParam(pattern)) {
        ok = pattern == segments[i];
      } else if (segments[i].empty()) {
        ok = false;
      } else if (rest && i + 1 == r.segments.size()) {
        std::string value = segments[i];
        for (size_t j = i + 1; j < segments.size(); ++j) value += "/" + segments[j];
        params[pattern.substr(2, pattern.size() - 3)] = value;
      } else {
        params[pattern.substr(1, pattern.size() - 2)] = segments[i];
      }
    }
    if (!ok) continue;
    if (r.method == method || (method == "HEAD" && r.method == "GET")) {
      m.route = &r;
      m.params = std::move(params);
      m.status = 200;
      return m;
    }
    m.status = 405;
    m.allow += m.allow.empty() ? r.method : ", " + r.method;
  }
  return m;
}

std::optional<Response> Router::Dispatch(const Match& match, Request& req, const Responder& respond) const {
  if (std::optional<Response> refused = Admit(match, req)) return refused;
  return Run(match, req, respond);
}

std::optional<Response> Router::Admit(const Match& match, Request& req) const {
  if (!match.route) {
    if (match.status == 405) {
      Response r = ErrorResponse(405, "method_not_allowed", req.method + " is not allowed on " + req.path);
      r.headers.emplace_back("Allow", match.allow);
      return r;
    }
    return ErrorResponse(404, "not_found", "no such path: " + req.path);
  }
  const Route& route = *match.route;
  req.params = match.params;

  if (route.options.client_cert_required && !req.client_cert) {
    return ErrorResponse(401, "client_certificate_required", "this route needs a TLS client certificate");
  }
  const bool signed_request = route.options.signed_request && route.options.signed_request(req);
  if (route.options.access != Access::kPublic && !signed_request) {
    auto token = req.BearerToken();
    if (!token) {
      Response r = ErrorResponse(401, "unauthenticated", "send Authorization: Bearer <token>");
      r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"certfleet\"");
      return r;
    }
    Result<std::optional<Principal>> principal = authenticator_(*token);
    if (!principal.ok()) {
      log::Error("authenticating", {{"request_id", req.request_id}, {"error", principal.error().message}});
      return ErrorResponse(principal.error());
    }
    if (!*principal) {
      Response r = ErrorResponse(401, "unauthenticated", "the token is unknown or revoked");
      r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"certfleet\", error=\"invalid_token\"");
      return r;
    }
    req.principal = **principal;
    if (req.principal.role < RequiredRole(route.options.access)) {
      return ErrorResponse(403, "permission_denied",
                           "this route needs the " + std::string(store::RoleName(RequiredRole(route.options.access))) +
                               " role; the token has " + std::string(store::RoleName(req.principal.role)));
    }
  }
  return std::nullopt;
}

std::optional<Response> Router::Run(const Match& match, Request& req, const Responder& respond) const {
  const Route& route = *match.route;
  if (!route.async_handler) return Answer(req.request_id, route.pattern, [&] { return route.handler(req); });
  bool taken = false;
  Response refused = Answer(req.request_id, route.pattern, [&]() -> Result<Response> {
    route.async_handler(req, respond);
    taken = true;
    return Response{};
  });
  if (taken) return std::nullopt;  // it answers through `respond`
  return refused;                  // it threw before taking the request
}

Response Router::Answer(std::string_view request_id, std::string_view route, const MakeResponse& make) {
  try {
    Result<Response> res = make();
    if (res.ok()) return std::move(*res);
    return Fail(request_id, res.error());
  } catch (const std::exception& e) {
    log::Error("handler threw", {{"request_id", request_id}, {"route", route}, {"error", e.what()}});
  } catch (...) {
    log::Error("handler threw", {{"request_id", request_id}, {"route", route}});
  }
  return ErrorResponse(500, "internal", "the server could not complete the request; see its log");
}

std::optional<std::string_view> Request::BearerToken() const {
  // The scheme in any case (RFC 9110 11.1).
  constexpr std::string_view kBearer = "Bearer ";
  auto header = Header("authorization");
  if (!header || header->size() <= kBearer.size() || AsciiLower(header->substr(0, kBearer.size())) != "bearer ") {
    return std::nullopt;
  }
  return header->substr(kBearer.size());
}

std::optional<std::pair<std::string, std::string>> Request::BasicCredentials() const {
  constexpr std::string_view kBasic = "Basic ";
  auto header = Header("authorization");
  if (!header || header->size() <= kBasic.size() ||
      !AsciiLower(header->substr(0, kBasic.size())).starts_with("basic ")) {
    return std::nullopt;
  }
  std::string_view encoded = header->substr(kBasic.size());
  while (!encoded.empty() && encoded.front() == ' ') encoded.remove_prefix(1);
  std::optional<std::string> decoded = Base64Decode(encoded);
  if (!decoded) return std::nullopt;
  const size_t colon = decoded->find(':');
  if (colon == std::string::npos) return std::nullopt;
  return std::make_pair(decoded->substr(0, colon), decoded->substr(colon + 1));
}

std::string PercentDecode(std::string_view in, bool plus_is_space) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '%' && i + 2 < in.size() && std::isxdigit(static_cast<unsigned char>(in[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(in[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(std::string(in.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

void Request::SetTarget(std::string_view target) {
  for (std::string_view scheme : {"http://", "https://"}) {
    if (target.size() >= scheme.size() && AsciiLower(target.substr(0, scheme.size())) == scheme) {
      const size_t slash = target.find_first_of("/?", scheme.size());
      target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
      break;
    }
  }
  const size_t q = target.find('?');
  raw_path = std::string(target.substr(0, q));
  if (raw_path.empty()) raw_path = "/";
  path = PercentDecode(raw_path, false);
  query.clear();
  if (q == std::string_view::npos) return;
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    const size_t amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    const size_t eq = pair.find('=');
    std::string key = PercentDecode(pair.substr(0, eq), true);
    std::string value = eq == std::string_view::npos ? "" : PercentDecode(pair.substr(eq + 1), true);
    if (!key.empty()) query[key] = value;
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
}

std::optional<std::string_view> Request::Header(std::string_view lowercase_name) const {
  for (const auto& [k, v] : headers) {
    if (k == lowercase_name) return std::string_view(v);
  }
  return std::nullopt;
}

}  // namespace certfleet::http
