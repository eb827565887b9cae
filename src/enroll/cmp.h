#pragma once

#include <openssl/cmp.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "enroll/cmp_message.h"
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
// keeps its state in memory. Messages are processed on the server's own threads, so that an
// issuance's wait for the store holds none of the HTTP server's. Thread-safe.
class CmpServer {
 public:
  struct Options {
    std::string signer_certificate_pem;  // signs answers to signed requests
    std::string signer_key_pem;
    // How long a transaction waits for its next message (certConf, pollReq): at least twice
    // the wait a polling client is told. A certificate unconfirmed by then is revoked
    // (enroll.cmp_confirm_seconds).
    std::chrono::seconds transaction_ttl{600};
    int threads = 4;  // messages processed at once; each may wait for an issuance's commit
  };

  // kInvalidArgument if the signer's certificate or key does not read.
  static Result<std::unique_ptr<CmpServer>> Make(EnrollService& enroll, store::Store& store, const Clock& clock,
                                                 const Options& options);
  ~CmpServer();

  // The DER answer to the DER PKIMessage `der` for the profile `label`: a CMP message also
  // when it refuses (an error message, or a rejected status). kInvalidArgument if `der` is
  // not a PKIMessage; kNotFound if there is no such profile.
  Result<std::string> Handle(std::string_view label, std::string_view der);
  // The same on one of this server's threads; `done` runs there. kResourceExhausted (at
  // once, on the caller's thread) when kMaxQueued messages wait already.
  void HandleAsync(std::string label, std::string der, const std::function<void(Result<std::string>)>& done);

  EnrollService& enroll() { return enroll_; }
  // Whether another transaction may wait for its certConf or pollReq.
  bool HasRoom();
  store::Store& store() { return store_; }
  const Clock& clock() const { return clock_; }
  // How long a transaction waits for its next message, and a certificate for its certConf (ms).
  int64_t ttl_ms() const { return std::chrono::duration_cast<std::chrono::milliseconds>(ttl_).count(); }

  // A transaction's state; public for OpenSSL's callbacks only.
  struct Transaction;

 private:
  CmpServer(EnrollService& enroll, store::Store& store, const Clock& clock, pki::X509Ptr signer,
            pki::PkeyPtr signer_key, const Options& options);
  // A new transaction begun by `msg` (read as `request`), with the MAC `secret` if known.
  Result<std::shared_ptr<Transaction>> Begin(const std::string& label, const cmp::Request& request,
                                             const OSSL_CMP_MSG& msg, const std::string& secret);
  void Work();

  // Messages waiting for a thread; past it clients are told to come back (HTTP 503).
  static constexpr size_t kMaxQueued = 256;
  // Transactions awaiting a message at once; past it new certificate requests are refused
  // before anything is issued (each holds an OpenSSL context, a few KiB).
  static constexpr size_t kMaxTransactions = 10'000;

  EnrollService& enroll_;
  store::Store& store_;
  const Clock& clock_;
  pki::X509Ptr signer_;
  pki::PkeyPtr signer_key_;
  const std::chrono::seconds ttl_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Transaction>> transactions_;  // by transaction ID, awaiting a message
  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace certfleet::enroll
