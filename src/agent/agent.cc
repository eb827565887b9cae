#include "agent/agent.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <filesystem>
#include <memory>

#include "agent/client.h"
#include "agent/common.h"
#include "core/crypto.h"
#include "core/files.h"
#include "core/log.h"
#include "pki/certificate.h"
#include "pki/csr.h"
#include "pki/key.h"

namespace certfleet::agent {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;

constexpr std::string_view kIdentityFile = "identity.json";
// The key of an enrollment under way: kept until the certificate is, so that an agent that
// stopped, or lost the server's answer, asks again for the same key (the server answers with
// the certificate it issued for it) instead of spending a second token on a new one.
constexpr std::string_view kEnrollKeyFile = "enroll-key.pem";
// identity.json holds a few paths and a serial.
constexpr size_t kMaxStateBytes = size_t{64} * 1024;

}  // namespace

Result<std::string> Field(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (!v || !v->is_string()) return MakeError(ErrorCode::kUnavailable, fmt::format("the answer has no {}", key));
  return std::string(v->get_string());
}

Result<json::object> JsonAnswer(const HttpResponse& r, std::string_view what) {
  boost::system::error_code ec;
  json::value v = json::parse(r.body, ec);
  if (ec || !v.is_object()) return MakeError(ErrorCode::kUnavailable, fmt::format("{}: the answer is not JSON", what));
  return std::move(v.get_object());
}

Result<void> CheckIssued(const std::string& cert_pem, const std::string& chain_pem, EVP_PKEY* key) {
  CF_ASSIGN_OR_RETURN(pki::X509Ptr cert, pki::CertificateFromPem(cert_pem));
  CF_ASSIGN_OR_RETURN(auto chain, pki::CertificatesFromPem(chain_pem));
  if (EVP_PKEY_eq(X509_get0_pubkey(cert.get()), key) != 1) {
    return MakeError(ErrorCode::kInvalidArgument, "the certificate is not for this host's key");
  }
  return pki::VerifyChain(cert.get(), chain);
}

Identity::Files Identity::FilesFor(const std::string& host_id, const std::string& cert_path,
                                   const std::string& key_path, const std::string& cacert_path) {
  return {(fs::path(cert_path) / (host_id + ".crt")).string(), (fs::path(key_path) / (host_id + ".key")).string(),
          (fs::path(cacert_path) / "ca_chain_certificate.crt").string()};
}

Result<void> SaveIdentity(const std::string& state_dir, const std::string& server, const Identity& id) {
  const json::object state{{"host_id", id.host_id},        {"cert_file", id.files.cert}, {"key_file", id.files.key},
                           {"chain_file", id.files.chain}, {"serial", id.serial},        {"server", server}};
  return WriteFileAtomically(fs::path(state_dir) / kIdentityFile, json::serialize(state), 0600);
}

Result<std::optional<Identity>> LoadIdentity(const std::string& state_dir) {
  const fs::path path = fs::path(state_dir) / kIdentityFile;
  auto text = ReadFile(path, kMaxStateBytes);
  if (!text.ok() && text.error().code == ErrorCode::kNotFound) return std::optional<Identity>();
  if (!text.ok()) return text.error();
  boost::system::error_code ec;
  json::value v = json::parse(*text, ec);
  if (ec || !v.is_object())
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("{} is unreadable", path.string()));
  const json::object& o = v.get_object();
  Identity id;
  for (auto [key, field] :
       {std::pair{"host_id", &id.host_id}, std::pair{"cert_file", &id.files.cert}, std::pair{"key_file", &id.files.key},
        std::pair{"chain_file", &id.files.chain}, std::pair{"serial", &id.serial}}) {
    CF_ASSIGN_OR_RETURN(*field, Field(o, key));
  }
  return std::optional<Identity>(std::move(id));
}

Result<Identity> Enroll(const AgentOptions& options, const std::string& token) {
  CF_ASSIGN_OR_RETURN(pki::KeyType key_type, pki::ParseKeyType(options.key_type));
  // The key is kept for this token only (its hash on the file's first line, which PEM
  // readers skip): a new token, after a reactivation say, gets a new key.
  const fs::path kept = fs::path(options.state_dir) / kEnrollKeyFile;
  const std::string for_token = "token-sha256: " + Sha256Hex(token) + "\n";
  pki::PkeyPtr key;
  if (std::error_code ec; fs::exists(kept, ec)) {
    auto pem = ReadFile(kept.string(), kMaxStateBytes);
    if (pem.ok() && pem->starts_with(for_token)) {
      auto parsed = pki::PrivateKeyFromPem(*pem);
      if (parsed.ok()) key = std::move(*parsed);
    }
    if (key) {
      log::Info("enrolling again with the key of an enrollment cut short", {{"file", kept.string()}});
    } else {
      log::Warn("the key kept by an earlier enrollment is for another token, or unreadable: making a new one",
                {{"file", kept.string()}});
    }
  }
  if (!key) {
    CF_ASSIGN_OR_RETURN(key, pki::GenerateKey(key_type));
    CF_ASSIGN_OR_RETURN(std::string kept_pem, pki::PrivateKeyToPem(key.get()));
    CF_RETURN_IF_ERROR(WriteFileAtomically(kept.string(), for_token + kept_pem, 0600));
  }
  CF_ASSIGN_OR_RETURN(std::string csr, pki::MakeCsrPem(key.get(), options.host_id, {}));
  Client client({options.server, options.ca_file, "", ""});
  CF_ASSIGN_OR_RETURN(HttpResponse r,
                      client.Post("/v1/agent/enroll",
                                  json::serialize(json::object{{"host_id", options.host_id}, {"csr", csr}}), token));
  if (r.status != 201) return MakeError(ErrorCode::kPermissionDenied, "enrolling: " + ServerError(r));
  CF_ASSIGN_OR_RETURN(json::object o, JsonAnswer(r, "enrolling"));
  CF_ASSIGN_OR_RETURN(std::string cert_pem, Field(o, "certificate"));
  CF_ASSIGN_OR_RETURN(std::string chain_pem, Field(o, "chain"));
  CF_ASSIGN_OR_RETURN(std::string cert_path, Field(o, "cert_path"));
  CF_ASSIGN_OR_RETURN(std::string key_path, Field(o, "key_path"));
  CF_ASSIGN_OR_RETURN(std::string cacert_path, Field(o, "cacert_path"));
  CF_RETURN_IF_ERROR(CheckIssued(cert_pem, chain_pem, key.get()));

  Identity id;
  id.host_id = options.host_id;
  id.files = Identity::FilesFor(options.host_id, cert_path, key_path, cacert_path);
  CF_ASSIGN_OR_RETURN(id.serial, Field(o, "serial"));
  CF_ASSIGN_OR_RETURN(std::string key_pem, pki::PrivateKeyToPem(key.get()));
  CF_RETURN_IF_ERROR(WriteFileAtomically(id.files.key, key_pem, 0400));
  CF_RETURN_IF_ERROR(WriteFileAtomically(id.files.cert, cert_pem, 0644));
  CF_RETURN_IF_ERROR(WriteFileAtomically(id.files.chain, chain_pem, 0644));
  CF_RETURN_IF_ERROR(SaveIdentity(options.state_dir, options.server, id));
  std::error_code ec;
  fs::remove(kept, ec);
  return id;
}

}  // namespace certfleet::agent
