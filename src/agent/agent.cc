#include "agent/agent.h"

#include <curl/curl.h>
#include <fmt/format.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "core/files.h"
#include "pki/certificate.h"
#include "pki/csr.h"
#include "pki/key.h"

namespace certfleet::agent {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;

constexpr long kConnectTimeoutSeconds = 10;
constexpr long kRequestTimeoutSeconds = 60;
// An answer is a certificate and its chain: a few KiB.
constexpr size_t kMaxResponseBytes = size_t{1} << 20;
constexpr std::string_view kIdentityFile = "identity.json";

struct Response {
  long status = 0;
  std::string body;
};

size_t Collect(char* data, size_t size, size_t n, void* out) {
  auto* body = static_cast<std::string*>(out);
  if (body->size() + size * n > kMaxResponseBytes) return 0;  // stops the transfer
  body->append(data, size * n);
  return size * n;
}

// One HTTPS request with a JSON body; the server's certificate is verified (ca_file or the
// system store) and so is its name.
Result<Response> Post(const AgentOptions& options, const std::string& path, const std::string& bearer,
                      const std::string& body) {
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), &curl_easy_cleanup);
  if (!curl) return MakeError(ErrorCode::kInternal, "curl_easy_init failed");
  const std::string url = options.server + path;
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> headers(nullptr, &curl_slist_free_all);
  for (const std::string& h : {std::string("Content-Type: application/json"), "Authorization: Bearer " + bearer}) {
    headers.reset(curl_slist_append(headers.release(), h.c_str()));
  }
  Response r;
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, kConnectTimeoutSeconds);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, kRequestTimeoutSeconds);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
  if (!options.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, options.ca_file.c_str());
  const CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    return MakeError(ErrorCode::kUnavailable, fmt::format("POST {}: {}", url, curl_easy_strerror(rc)));
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  return r;
}

// The server's error message, or the status.
std::string ServerError(const Response& r) {
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

Result<std::string> Field(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (!v || !v->is_string()) return MakeError(ErrorCode::kUnavailable, fmt::format("the answer has no {}", key));
  return std::string(v->get_string());
}

}  // namespace

Result<std::optional<Identity>> LoadIdentity(const std::string& state_dir) {
  const fs::path path = fs::path(state_dir) / kIdentityFile;
  std::ifstream in(path);
  if (!in) return std::optional<Identity>();
  std::stringstream text;
  text << in.rdbuf();
  boost::system::error_code ec;
  json::value v = json::parse(text.str(), ec);
  if (ec || !v.is_object())
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("{} is unreadable", path.string()));
  const json::object& o = v.get_object();
  Identity id;
  for (auto [key, field] :
       {std::pair{"host_id", &id.host_id}, std::pair{"cert_file", &id.cert_file}, std::pair{"key_file", &id.key_file},
        std::pair{"chain_file", &id.chain_file}, std::pair{"serial", &id.serial}}) {
    CF_ASSIGN_OR_RETURN(*field, Field(o, key));
  }
  return std::optional<Identity>(std::move(id));
}

Result<Identity> Enroll(const AgentOptions& options, const std::string& token) {
  CF_ASSIGN_OR_RETURN(pki::KeyType key_type, pki::ParseKeyType(options.key_type));
  CF_ASSIGN_OR_RETURN(pki::PkeyPtr key, pki::GenerateKey(key_type));
  CF_ASSIGN_OR_RETURN(std::string csr, pki::MakeCsrPem(key.get(), options.host_id, {}));
  CF_ASSIGN_OR_RETURN(Response r, Post(options, "/v1/agent/enroll", token,
                                       json::serialize(json::object{{"host_id", options.host_id}, {"csr", csr}})));
  if (r.status != 201) return MakeError(ErrorCode::kPermissionDenied, "enrolling: " + ServerError(r));
  boost::system::error_code ec;
  json::value v = json::parse(r.body, ec);
  if (ec || !v.is_object()) return MakeError(ErrorCode::kUnavailable, "enrolling: the answer is not JSON");
  const json::object& o = v.get_object();
  CF_ASSIGN_OR_RETURN(std::string cert_pem, Field(o, "certificate"));
  CF_ASSIGN_OR_RETURN(std::string chain_pem, Field(o, "chain"));
  CF_ASSIGN_OR_RETURN(std::string cert_path, Field(o, "cert_path"));
  CF_ASSIGN_OR_RETURN(std::string key_path, Field(o, "key_path"));
  CF_ASSIGN_OR_RETURN(std::string cacert_path, Field(o, "cacert_path"));
  CF_ASSIGN_OR_RETURN(pki::X509Ptr cert, pki::CertificateFromPem(cert_pem));
  CF_ASSIGN_OR_RETURN(auto chain, pki::CertificatesFromPem(chain_pem));
  if (EVP_PKEY_eq(X509_get0_pubkey(cert.get()), key.get()) != 1) {
    return MakeError(ErrorCode::kInvalidArgument, "the certificate is not for this host's key");
  }
  CF_RETURN_IF_ERROR(pki::VerifyChain(cert.get(), chain));

  Identity id;
  id.host_id = options.host_id;
  id.cert_file = (fs::path(cert_path) / (options.host_id + ".crt")).string();
  id.key_file = (fs::path(key_path) / (options.host_id + ".key")).string();
  id.chain_file = (fs::path(cacert_path) / "ca_chain_certificate.crt").string();
  CF_ASSIGN_OR_RETURN(id.serial, Field(o, "serial"));
  CF_ASSIGN_OR_RETURN(std::string key_pem, pki::PrivateKeyToPem(key.get()));
  CF_RETURN_IF_ERROR(WriteFileAtomically(id.key_file, key_pem, 0400));
  CF_RETURN_IF_ERROR(WriteFileAtomically(id.cert_file, cert_pem, 0644));
  CF_RETURN_IF_ERROR(WriteFileAtomically(id.chain_file, chain_pem, 0644));
  const json::object state{{"host_id", id.host_id},       {"cert_file", id.cert_file}, {"key_file", id.key_file},
                           {"chain_file", id.chain_file}, {"serial", id.serial},       {"server", options.server}};
  CF_RETURN_IF_ERROR(WriteFileAtomically(fs::path(options.state_dir) / kIdentityFile, json::serialize(state), 0600));
  return id;
}

}  // namespace certfleet::agent
