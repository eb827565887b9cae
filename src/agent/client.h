#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "core/result.h"

namespace certfleet::agent {

struct HttpResponse {
  long status = 0;
  std::string body;
};

// The agent's HTTPS client: verifies the server's certificate (ca_file, or the system store)
// and its name; authenticates with a bearer token or with a client certificate (mutual TLS).
// Keeps its connection between requests. Not thread-safe.
class Client {
 public:
  struct Options {
    std::string server;     // https://host:port
    std::string ca_file;    // empty: the system store
    std::string cert_file;  // client certificate and key: mutual TLS when set
    std::string key_file;
    const std::atomic<bool>* stop = nullptr;  // when set, aborts a request in progress
  };

  explicit Client(Options options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // kUnavailable when the server cannot be reached or the transfer fails (worth retrying).
  // `timeout_s` bounds the whole request (a long poll's wait plus the transfer).
  Result<HttpResponse> Get(const std::string& path, long timeout_s);
  Result<HttpResponse> Post(const std::string& path, const std::string& json_body, const std::string& bearer = "");

 private:
  Result<HttpResponse> Perform(const std::string& method, const std::string& path, const std::string* body,
                               const std::string& bearer, long timeout_s);

  const Options options_;
  void* curl_;  // CURL*, kept for connection reuse
};

// The server's error message of a JSON error answer, or the status.
std::string ServerError(const HttpResponse& r);

}  // namespace certfleet::agent
