#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/config.h"
#include "core/result.h"
#include "http/client_trust.h"
#include "http/metrics.h"
#include "http/router.h"

namespace certfleet::http {

struct ServerOptions {
  std::string listen = "127.0.0.1:8443";  // host:port; port 0 picks a free one
  // Plain HTTP, for the routes that allow it (RouteOptions::plain_http: CRLs, OCSP, CMP); empty: none.
  std::string http_listen;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string client_ca_file;  // CAs of client certificates, fixed (server.client_ca); may be empty
  // The CAs of client certificates, changed while serving (agents' CAs) beside those of
  // client_ca_file; null: client_ca_file's alone.
  std::shared_ptr<ClientTrust> client_trust;
  int threads = 0;  // 0: twice the CPU cores, at least kMinAutoThreads
  // Open connections at once; more wait in the kernel's queue. Lowered to fit the open-file
  // limit (whose soft value Listen raises to the hard one).
  size_t max_connections = 10000;
  // Open connections at once from one client address; more are closed as they come. 0: no
  // limit (behind a load balancer every connection comes from its address).
  size_t max_connections_per_client = 0;
  size_t body_limit = 1 << 20;  // 1 MiB for routes that set none: every JSON body fits; uploads set their own
  // For the request line and headers: 10 s, so that a slow-loris client holds a connection briefly.
  std::chrono::seconds header_timeout{10};
  // For a body, and for the client to take the answer: a minute, for uploads over slow links.
  std::chrono::seconds body_timeout{60};
  // A kept-alive connection with no request: a minute, above clients' pools' idle times.
  std::chrono::seconds idle_timeout{60};
  // For in-flight requests at shutdown: 5 s, inside a service manager's stop timeout.
  std::chrono::seconds shutdown_grace{5};
  // Before that, serving on while Draining() says so (a balancer's health check sees it);
  // 0: none.
  std::chrono::seconds shutdown_drain{0};
};

// The server.* keys (listen, TLS files, client CAs, threads, limits, timeouts).
ServerOptions ServerOptionsFrom(const Config& config);

// The HTTPS server: TLS 1.2/1.3, HTTP/1.1 keep-alive, per-request body limits and
// timeouts, optional client certificates, graceful shutdown on SIGTERM/SIGINT. With
// http_listen, also plain HTTP for the routes that need no TLS.
// Handlers run on the server's threads. Thread contract: Listen, then Run from one
// thread; Shutdown from any thread.
class Server {
 public:
  Server(const Router& router, Metrics& metrics, ServerOptions options);
  ~Server();

  // Loads the TLS files and binds the listen address.
  Result<void> Listen();
  uint16_t port() const;       // the HTTPS one
  uint16_t http_port() const;  // server.http_listen's; 0 without one
  // Serves until SIGTERM, SIGINT or Shutdown(); then goes on serving for shutdown_drain (a
  // second signal or Shutdown() cuts it short), stops accepting, lets in-flight requests
  // finish within shutdown_grace, closes idle connections and returns.
  void Run();
  void Shutdown();
  // True from the first signal or Shutdown() on: /readyz answers 503, and answers close
  // their connections.
  bool Draining() const;
  // Runs `fn` on one of the server's threads.
  void Post(std::function<void()> fn);
  // The same once `delay` has passed; dropped, not run, if the server stops first.
  void PostAfter(std::chrono::milliseconds delay, std::function<void()> fn);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace certfleet::http
