#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "http/types.h"

namespace certfleet::http {

// Who may call a route. Roles nest (admin > operator > reader); kPublic needs no token
// and must be chosen explicitly.
enum class Access { kPublic, kReader, kOperator, kAdmin };

struct RouteOptions {
  Access access = Access::kAdmin;
  bool client_cert_required = false;  // the caller must present a verified TLS client certificate
  size_t body_limit = 0;              // 0: the server's default (server.body_limit)
  // When set and true for a request, that request carries its own credential (a signature
  // the handler verifies, as SNS messages do) instead of a bearer token.
  std::function<bool(const Request&)> signed_request = nullptr;
  // Also served over plain HTTP (server.http_listen): only public routes whose messages and
  // answers are signed themselves (CRLs, OCSP, CMP).
  bool plain_http = false;
};

// A route's handler: the response, or the Error the router answers with its status and code
// (ErrorResponse: one status and one code per ErrorCode).
using Handler = std::function<Result<Response>(Request&)>;
// Builds an asynchronous route's response, on one of the server's threads.
using MakeResponse = std::function<Result<Response>()>;
// Gives an asynchronous handler's response to its connection: call it once, from any thread.
using Responder = std::function<void(MakeResponse make)>;
// A handler that answers later, through the Responder, without holding a server thread while
// it waits (for the store's commit, say). It must not touch the Request after returning.
using AsyncHandler = std::function<void(Request&, Responder)>;
// Resolves a bearer token to a principal: nullopt when the token is unknown or revoked.
using Authenticator = std::function<Result<std::optional<Principal>>(std::string_view bearer)>;

struct Route {
  std::string method;
  std::string pattern;  // "/v1/jobs/{id}"; a last segment "{*rest}" takes the rest of the path; the metrics label
  std::vector<std::string> segments;
  RouteOptions options;
  Handler handler;
  AsyncHandler async_handler;  // set instead of `handler` for asynchronous routes
};

// Maps method and path to a route and runs it behind authentication and authorization.
// Routes are added before serving; afterwards the router is read-only and thread-safe.
class Router {
 public:
  explicit Router(Authenticator authenticator) : authenticator_(std::move(authenticator)) {}

  void Add(std::string method, std::string pattern, RouteOptions options, Handler handler);
  void AddAsync(std::string method, std::string pattern, RouteOptions options, AsyncHandler handler);

  struct Match {
    const Route* route = nullptr;  // null: see status
    std::map<std::string, std::string> params;
    int status = 200;   // 404 no such path, 405 path exists with other methods
    std::string allow;  // for 405
  };
  // By the path as sent: split at its slashes before each segment is percent-decoded, so that
  // an encoded slash (`/v1%2Fjobs`) stays inside its segment and names no route.
  Match Find(std::string_view method, std::string_view raw_path) const;

  // Authenticates, authorizes and runs the matched route; never throws. The response, or
  // nothing when an asynchronous route took the request: it answers through `respond`.
  std::optional<Response> Dispatch(const Match& match, Request& req, const Responder& respond) const;
  // Dispatch's first half, which needs the request's headers only (the server runs it before
  // it reads a body): the refusal (no such route, no client certificate, no or a weak token),
  // or nothing and `req` carries the route's params and the principal.
  std::optional<Response> Admit(const Match& match, Request& req) const;
  // Dispatch's second half: runs the route of a request Admit let in.
  std::optional<Response> Run(const Match& match, Request& req, const Responder& respond) const;

  const std::vector<Route>& routes() const { return routes_; }

  // Runs `make` behind the router's exception barrier: an Error becomes its JSON response
  // (5xx logged with the request id, never sent), an exception a 500. Never throws.
  static Response Answer(std::string_view request_id, std::string_view route, const MakeResponse& make);

 private:
  Authenticator authenticator_;
  std::vector<Route> routes_;
};

// `in` with its %XX escapes decoded (and '+' as a space when `plus_is_space`, as in a query).
std::string PercentDecode(std::string_view in, bool plus_is_space);

}  // namespace certfleet::http
