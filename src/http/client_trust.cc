#include "http/client_trust.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/x509_vfy.h>

#include "core/files.h"
#include "pki/certificate.h"

namespace certfleet::http {
namespace {

// A bundle of CA certificates: a few KiB each.
constexpr size_t kMaxBytes = size_t{1} << 20;

}  // namespace

Result<void> ClientTrust::LoadFile(const std::string& path) {
  CF_ASSIGN_OR_RETURN(std::string pem, ReadFile(path, kMaxBytes));
  std::lock_guard lock(mu_);
  return Rebuild(std::move(pem), changing_pem_);
}

Result<void> ClientTrust::Set(std::string_view pem) {
  std::lock_guard lock(mu_);
  if (pem == changing_pem_) return Ok();
  return Rebuild(fixed_pem_, std::string(pem));
}

Result<void> ClientTrust::Rebuild(std::string fixed, std::string changing) {
  std::shared_ptr<X509_STORE> store;
  const std::string all = fixed + changing;
  if (all.find("-----BEGIN") != std::string::npos) {
    CF_ASSIGN_OR_RETURN(auto certs, pki::CertificatesFromPem(all));
    store.reset(X509_STORE_new(), X509_STORE_free);
    if (!store) return MakeError(ErrorCode::kInternal, "out of memory for the client CAs");
    for (const auto& cert : certs) {
      // The same CA twice (two agents' CAs under one root) is no error.
      if (X509_STORE_add_cert(store.get(), cert.get()) != 1) ERR_clear_error();
    }
  }
  fixed_pem_ = std::move(fixed);
  changing_pem_ = std::move(changing);
  store_ = std::move(store);
  return Ok();
}

bool ClientTrust::Verifies(SSL* ssl) const {
  X509* leaf = SSL_get0_peer_certificate(ssl);
  if (leaf == nullptr) return false;
  std::shared_ptr<X509_STORE> store;
  {
    std::lock_guard lock(mu_);
    store = store_;
  }
  if (!store) return false;
  std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> ctx(X509_STORE_CTX_new(), &X509_STORE_CTX_free);
  // What the client sent beside its certificate (on a server, without it): untrusted.
  if (!ctx || X509_STORE_CTX_init(ctx.get(), store.get(), leaf, SSL_get_peer_cert_chain(ssl)) != 1) return false;
  X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT);
  const bool ok = X509_verify_cert(ctx.get()) == 1;
  if (!ok) ERR_clear_error();
  return ok;
}

}  // namespace certfleet::http
