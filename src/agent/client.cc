#include "agent/client.h"

#include <curl/curl.h>
#include <fmt/format.h>

#include <boost/json.hpp>

namespace certfleet::agent {
namespace {

namespace json = boost::json;

constexpr long kConnectTimeoutSeconds = 10;
// A request other than a long poll: a certificate and its chain are issued in milliseconds.
constexpr long kRequestTimeoutSeconds = 60;
// An answer is a certificate and its chain, or a task: a few KiB.
constexpr size_t kMaxResponseBytes = size_t{1} << 20;

size_t Collect(char* data, size_t size, size_t n, void* out) {
  auto* body = static_cast<std::string*>(out);
  if (body->size() + size * n > kMaxResponseBytes) return 0;  // stops the transfer
  body->append(data, size * n);
  return size * n;
}

// Aborts the transfer once the agent is asked to stop.
int Progress(void* stop, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<const std::atomic<bool>*>(stop)->load() ? 1 : 0;
}

}  // namespace

Client::Client(Options options) : options_(std::move(options)), curl_(curl_easy_init()) {}

Client::~Client() { curl_easy_cleanup(static_cast<CURL*>(curl_)); }

Result<HttpResponse> Client::Get(const std::string& path, long timeout_s) {
  return Perform("GET", path, nullptr, "", timeout_s);
}

Result<HttpResponse> Client::Post(const std::string& path, const std::string& json_body, const std::string& bearer) {
  return Perform("POST", path, &json_body, bearer, kRequestTimeoutSeconds);
}

Result<HttpResponse> Client::Perform(const std::string& method, const std::string& path, const std::string* body,
                                     const std::string& bearer, long timeout_s) {
  auto* c = static_cast<CURL*>(curl_);
  if (c == nullptr) return MakeError(ErrorCode::kInternal, "curl_easy_init failed");
  curl_easy_reset(c);  // keeps the connection, forgets the previous request's options
  const std::string url = options_.server + path;
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> headers(nullptr, &curl_slist_free_all);
  headers.reset(curl_slist_append(headers.release(), "Content-Type: application/json"));
  if (!bearer.empty()) headers.reset(curl_slist_append(headers.release(), ("Authorization: Bearer " + bearer).c_str()));
  HttpResponse r;
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  if (body != nullptr) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body->c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body->size()));
  }
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, kConnectTimeoutSeconds);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
  if (options_.stop != nullptr) {
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, Progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, const_cast<std::atomic<bool>*>(options_.stop));
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  }
  if (!options_.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, options_.ca_file.c_str());
  if (!options_.cert_file.empty()) {
    curl_easy_setopt(c, CURLOPT_SSLCERT, options_.cert_file.c_str());
    curl_easy_setopt(c, CURLOPT_SSLKEY, options_.key_file.c_str());
  }
  const CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    return MakeError(ErrorCode::kUnavailable, fmt::format("{} {}: {}", method, url, curl_easy_strerror(rc)));
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  return r;
}

std::string ServerError(const HttpResponse& r) {
  boost::system::error_code ec;
  json::value v = json::parse(r.body, ec);
  if (!ec && v.is_object()) {
    if (const json::value* e = v.get_object().if_contains("error"); e && e->is_object()) {
      if (const json::value* m = e->get_object().if_contains("message"); m && m->is_string()) {
        return fmt::format("HTTP {}: {}", r.status, std::string(m->get_string()));
      }
    }
  }
  return fmt::format("HTTP {}", r.status);
}

}  // namespace certfleet::agent
