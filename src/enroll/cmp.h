#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "core/clock.h"
#include "core/result.h"
#include "enroll/enroll_service.h"
#include "pki/ossl.h"
#include "store/store.h"

namespace certfleet::enroll {

// Lightweight CMP (RFC 9483) over HTTP (RFC 6712) for the enrollment profiles, through
// OpenSSL's CMP server (OSSL_CMP_SRV_CTX): ir, cr, p10cr and kur (issued through
// EnrollService, which authenticates the sender), rr of a device's own certificate, genm
// (CA certificates; root CA update), certConf and polling while a request waits for
// approval. Requests are MAC-protected with an enrollment secret (the senderKID is its id) or
// signed with a certificate (the first of extraCerts: the device's current one, or a factory
// certificate); answers are protected the same way, signed with certfleet's signer. A
// transaction's later messages (certConf, pollReq) must reach the node that began it, which
// keeps its state in memory. Thread-safe.
class CmpServer {
 public:
  struct Options {
    std::string signer_certificate_pem;  // signs answers to signed requests
    std::string signer_key_pem;
    // How long a transaction waits for its next message (certConf, pollReq).
    std::chrono::seconds transaction_ttl{600};
  };

  // kInvalidArgument if the signer's certificate or key does not read.
  static Result<std::unique_ptr<CmpServer>> Make(EnrollService& enroll, store::Store& store, const Clock& clock,
                                                 const Options& options);
  ~CmpServer();

  // The DER answer to the DER PKIMessage `der` for the profile `label`: a CMP message also
  // when it refuses (an error message, or a rejected status). kInvalidArgument if `der` is
  // not a PKIMessage; kNotFound if there is no such profile.
  Result<std::string> Handle(std::string_view label, std::string_view der);

  EnrollService& enroll() { return enroll_; }

  // A transaction's state; public for OpenSSL's callbacks only.
  struct Transaction;

 private:
  CmpServer(EnrollService& enroll, store::Store& store, const Clock& clock, pki::X509Ptr signer,
            pki::PkeyPtr signer_key, std::chrono::seconds ttl);
  std::shared_ptr<Transaction> Begin(const std::string& label, std::string_view der, bool mac,
                                     const std::string& secret);

  EnrollService& enroll_;
  store::Store& store_;
  const Clock& clock_;
  pki::X509Ptr signer_;
  pki::PkeyPtr signer_key_;
  const std::chrono::seconds ttl_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Transaction>> transactions_;  // by transaction ID, awaiting a message
};

}  // namespace certfleet::enroll
