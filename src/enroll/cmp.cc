#include "enroll/cmp.h"

#include <fmt/format.h>
#include <openssl/cmp.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include <algorithm>
#include <future>

#include "core/crypto.h"
#include "core/log.h"
#include "core/thread_name.h"
#include "enroll/cmp_message.h"
#include "pki/certificate.h"
#include "pki/csr.h"
#include "pki/der.h"
#include "pki/key.h"
#include "store/enroll_repo.h"

namespace certfleet::enroll {
namespace {

using SrvCtxPtr = std::unique_ptr<OSSL_CMP_SRV_CTX, pki::Deleter<OSSL_CMP_SRV_CTX_free>>;
using MsgPtr = std::unique_ptr<OSSL_CMP_MSG, pki::Deleter<OSSL_CMP_MSG_free>>;

// Transaction IDs are remembered this long to refuse replays (RFC 9483 3.1: unique).
constexpr std::chrono::hours kReplayWindow{24 * 7};
// A transaction's first signed message must say when it was made (messageTime), at most this
// far from certfleet's clock either way: half the window, so that a message replayed once its
// ID is forgotten is refused for its time.
constexpr std::chrono::hours kClockSkew = kReplayWindow / 2;
// id-it-rootCaCert (RFC 9480), which OpenSSL 3.0 has no name for.
constexpr std::string_view kRootCaCertOid = "1.3.6.1.5.5.7.4.20";

// OpenSSL's CMP diagnostics go to certfleet's log, at debug (errors reach the client anyway).
int LogCmp(const char* func, const char* /*file*/, int /*line*/, OSSL_CMP_severity level, const char* msg) {
  if (level <= OSSL_CMP_LOG_ERR) log::Debug("cmp", {{"function", func ? func : ""}, {"message", msg ? msg : ""}});
  return 1;
}

// Refuses the message being processed (the callback then fails): OpenSSL answers with a CMP
// error message whose details carry `reason`. OpenSSL takes the earliest error queued, so the
// queue is cleared first.
void Refuse(const std::string& reason) {
  ERR_clear_error();
  ERR_raise_data(ERR_LIB_CMP, CMP_R_REQUEST_REJECTED_BY_SERVER, "%s", reason.c_str());
}

// Refuses with what the client may learn of `error`: the server's own failures (the store's, a
// key's, a bug) are logged and named only as such, as the HTTP API does with 5xx answers.
void Refuse(const Error& error) {
  if (error.code == ErrorCode::kInternal || error.code == ErrorCode::kUnavailable ||
      error.code == ErrorCode::kDeadlineExceeded) {
    log::Error("CMP: the server could not answer a request", {{"error", error.message}});
    return Refuse(error.code == ErrorCode::kInternal ? "the server could not complete the request; see its log"
                                                     : "the server is busy or cannot reach its store; try again later");
  }
  Refuse(error.message);
}

OSSL_CMP_PKISI* Status(int status, const char* text = nullptr) { return OSSL_CMP_STATUSINFO_new(status, 0, text); }

STACK_OF(X509) * Stack(std::vector<pki::X509Ptr> certs) {
  STACK_OF(X509)* out = sk_X509_new_null();
  for (auto& c : certs) {
    if (out && sk_X509_push(out, c.get()) > 0) static_cast<void>(c.release());  // the stack owns it now
  }
  return out;
}

Result<std::vector<pki::X509Ptr>> Certificates(std::string_view pem) {
  if (pem.find("-----BEGIN") == std::string_view::npos) return std::vector<pki::X509Ptr>();
  return pki::CertificatesFromPem(pem);
}

}  // namespace

struct CmpServer::Transaction {
  CmpServer* server = nullptr;
  std::string label;
  SrvCtxPtr srv;
  cmp::Request first;  // the message that began it: a pollReq brings its certificate request back
  MsgPtr first_msg;
  cmp::Request current;                // the message being processed
  std::optional<std::string> refusal;  // refuse whatever comes (a replayed transaction ID)
  bool recorded = false;               // its ID is in the store (after its protection verified)
  bool awaiting = false;               // a certificate was answered or waits: certConf or pollReq follows
  bool waiting = false;                // its request waits for approval: pollReq is answered
  std::string issued_serial;
  std::string issued_hash;   // what the certConf's certHash must be
  bool handed_back = false;  // issued_serial was issued for an earlier transaction: a rejection leaves it
  int64_t expires_at = 0;
  std::mutex mu;  // one message of a transaction at a time
};

namespace {

// A certConf's certHash of `cert` (RFC 4210 5.3.18, RFC 9480 2.10): the hash its signature
// algorithm uses, SHA-512 for Ed25519; OpenSSL's client computes it the same way.
Result<std::string> CertHash(X509* cert) {
  std::unique_ptr<ASN1_OCTET_STRING, decltype(&ASN1_OCTET_STRING_free)> hash(X509_digest_sig(cert, nullptr, nullptr),
                                                                             &ASN1_OCTET_STRING_free);
  if (!hash) return pki::OpenSslError("hashing the certificate");
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(hash.get())),
                     static_cast<size_t>(ASN1_STRING_length(hash.get())));
}

// The transaction's ID as the store keeps it.
std::string IdHex(const CmpServer::Transaction& t) { return HexEncode(t.first.transaction_id); }

// The transaction's ID, recorded once its first message's protection verified: a replayed
// ID is refused on any node (RFC 9483 3.6.4 transactionIdInUse).
bool Fresh(CmpServer::Transaction& t) {
  if (t.refusal) {
    Refuse(*t.refusal);
    return false;
  }
  if (t.recorded) return true;
  if (t.first.transaction_id.empty()) {
    t.refusal = "the message has no transactionID";
    Refuse(*t.refusal);
    return false;
  }
  CmpServer& server = *t.server;
  const int64_t now = server.clock().NowMillis();
  const int64_t skew = std::chrono::duration_cast<std::chrono::milliseconds>(kClockSkew).count();
  // A MAC-protected request is good once (its secret is one-time): its time is not judged, as
  // a device's clock may not be set yet.
  const std::optional<int64_t>& time = t.first.message_time;
  if (!t.first.mac_protected && (!time || *time < now - skew || *time > now + skew)) {
    t.refusal = fmt::format("badTime: the messageTime must be present and within {} hours of the server's clock",
                            kClockSkew.count());
    Refuse(*t.refusal);
    return false;
  }
  const int64_t forget = now - std::chrono::duration_cast<std::chrono::milliseconds>(kReplayWindow).count();
  Result<bool> fresh = store::Write(
      server.store(), [&](store::Tx& tx) { return store::BeginCmpTransaction(tx, IdHex(t), now, forget); });
  if (!fresh.ok()) {
    Refuse(fresh.error());
    return false;
  }
  t.recorded = true;
  if (!*fresh) {
    t.refusal = "transactionIdInUse: this transactionID was used before";
    Refuse(*t.refusal);
    return false;
  }
  return true;
}

// The request EnrollService sees for the transaction's certificate request.
Result<EnrollRequest> EnrollmentOf(const CmpServer::Transaction& t) {
  const cmp::Request& r = t.first;
  EnrollRequest out;
  out.label = t.label;
  out.operation = r.body == cmp::kKur ? Operation::kReenroll : Operation::kEnroll;
  out.protocol = "cmp";
  if (r.mac_protected && r.sender_kid) {
    out.credentials.verified_secret_id = *r.sender_kid;
  } else {
    out.credentials.tls_certificates = r.extra_certs;
  }
  if (r.p10cr) {
    out.csr = *r.p10cr;
    return out;
  }
  if (!r.cert_template || r.cert_template->public_key.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "the certificate template has no public key");
  }
  std::string subject = r.cert_template->subject;
  if (subject.empty() && r.body == cmp::kKur && !r.extra_certs.empty()) {
    // A kur may leave the subject out: it is the certificate's being updated.
    CF_ASSIGN_OR_RETURN(pki::X509Ptr old, pki::CertificateFromDer(r.extra_certs.front()));
    unsigned char* der = nullptr;
    const int len = i2d_X509_NAME(X509_get_subject_name(old.get()), &der);
    if (len > 0) subject.assign(reinterpret_cast<char*>(der), static_cast<size_t>(len));
    OPENSSL_free(der);
  }
  if (subject.empty()) return MakeError(ErrorCode::kInvalidArgument, "the certificate template has no subject");
  CF_ASSIGN_OR_RETURN(pki::Csr checked,
                      pki::RequestFromTemplate(subject, r.cert_template->public_key, r.cert_template->extensions,
                                               r.cert_template->encoding));
  out.checked = std::move(checked);
  return out;
}

Result<Enrolled> EnrollNow(EnrollService& enroll, EnrollRequest request) {
  std::promise<Result<Enrolled>> promise;
  enroll.EnrollAsync(std::move(request), [&promise](Result<Enrolled> r) { promise.set_value(std::move(r)); });
  return promise.get_future().get();
}

CmpServer::Transaction* Of(OSSL_CMP_SRV_CTX* srv) {
  return static_cast<CmpServer::Transaction*>(OSSL_CMP_SRV_CTX_get0_custom_ctx(srv));
}

// RFC 9483 4.1.1: a certificate the client rejects is revoked, and waits for no certConf.
void RevokeRejected(const CmpServer::Transaction& t) {
  Result<void> revoked = t.server->enroll().RevokeRejected(t.issued_serial);
  if (!revoked.ok()) log::Error("revoking a certificate a CMP client rejected", {{"error", revoked.error().message}});
  (void)store::Write(t.server->store(), [&](store::Tx& tx) { return store::EndCmpConfirmation(tx, t.issued_serial); });
}

OSSL_CMP_PKISI* OnCertRequest(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG* /*req*/, int /*cert_req_id*/,
                              const OSSL_CRMF_MSG* /*crm*/, const X509_REQ* /*p10cr*/, X509** cert_out,
                              STACK_OF(X509) * *chain_out, STACK_OF(X509) * *ca_pubs) {
  CmpServer::Transaction& t = *Of(srv);
  if (!t.waiting) {  // a pollReq brings back a request whose ID was checked when it came
    if (!Fresh(t)) return nullptr;
    if (!t.server->HasRoom()) {
      Refuse("too many CMP transactions are open on this node; try again later");
      return nullptr;
    }
  }
  Result<EnrollRequest> request = EnrollmentOf(t);
  if (!request.ok()) {
    Refuse(request.error());
    return nullptr;
  }
  Result<Enrolled> enrolled = EnrollNow(t.server->enroll(), std::move(*request));
  if (!enrolled.ok()) {
    Refuse(enrolled.error());
    return nullptr;
  }
  if (enrolled->pending) {
    t.waiting = t.awaiting = true;
    return Status(OSSL_CMP_PKISTATUS_waiting, "waiting for an operator's approval");
  }
  t.waiting = false;
  Result<pki::X509Ptr> cert = pki::CertificateFromPem(enrolled->record.certificate_pem);
  Result<std::vector<pki::X509Ptr>> chain = Certificates(enrolled->chain_pem);
  Result<std::string> hash = cert.ok() ? CertHash(cert->get()) : cert.error();
  if (!cert.ok() || !chain.ok() || !hash.ok()) {
    Refuse("the issued certificate does not read");
    return nullptr;
  }
  t.issued_serial = enrolled->record.serial;
  t.issued_hash = std::move(*hash);
  t.handed_back = enrolled->handed_back;
  t.awaiting = true;
  // Until its certConf comes, the certificate waits in the store: unconfirmed by then, any
  // node's sweep revokes it (RFC 9483 4.1.1). Implicitly confirmed, it is final now.
  if (!t.handed_back && !t.first.implicit_confirm) {
    const int64_t confirm_by = t.server->clock().NowMillis() + t.server->ttl_ms();
    Result<void> waits = store::Write(t.server->store(), [&](store::Tx& tx) {
      return store::AwaitCmpConfirmation(tx, IdHex(t), t.issued_serial, confirm_by);
    });
    if (!waits.ok()) {
      RevokeRejected(t);
      Refuse(waits.error());
      return nullptr;
    }
  }
  // A MAC-protected initial request may take the root from caPubs (RFC 9483 4.1.1).
  if (t.first.mac_protected && t.first.body == cmp::kIr && !chain->empty()) {
    std::vector<pki::X509Ptr> root;
    root.emplace_back(X509_dup(chain->back().get()));
    *ca_pubs = Stack(std::move(root));
  }
  *cert_out = cert->release();
  *chain_out = Stack(std::move(*chain));
  return Status(OSSL_CMP_PKISTATUS_accepted);
}

OSSL_CMP_PKISI* OnRevocation(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG* /*req*/, const X509_NAME* /*issuer*/,
                             const ASN1_INTEGER* serial) {
  CmpServer::Transaction& t = *Of(srv);
  if (!Fresh(t)) return nullptr;
  if (serial == nullptr || t.first.mac_protected || t.first.extra_certs.empty()) {
    Refuse("a revocation request names the serial of the certificate it is signed with");
    return nullptr;
  }
  Result<void> revoked = t.server->enroll().RevokePresented(t.first.extra_certs.front(), pki::SerialHex(serial),
                                                            t.first.revocation_reason);
  if (!revoked.ok()) {
    Refuse(revoked.error());
    return nullptr;
  }
  return Status(OSSL_CMP_PKISTATUS_accepted);
}

// RFC 9483 4.3.1's caCerts value: the profile's CA and its issuers, a SEQUENCE OF Certificate.
ASN1_TYPE* CaCertsValue(CmpServer::Transaction& t) {
  Result<std::string> pem = t.server->enroll().CaCertificatesPem(t.label);
  if (!pem.ok()) {
    Refuse(pem.error());
    return nullptr;
  }
  std::string seq;
  for (const auto& der : pki::PemBlocksBytes(*pem, PEM_STRING_X509)) seq += der;
  const std::string der = pki::Der(pki::kDerSequence, seq);
  ASN1_STRING* str = ASN1_STRING_type_new(V_ASN1_SEQUENCE);
  ASN1_TYPE* value = ASN1_TYPE_new();
  if (!str || !value || ASN1_STRING_set(str, der.data(), static_cast<int>(der.size())) != 1) {
    ASN1_STRING_free(str);
    ASN1_TYPE_free(value);
    return nullptr;
  }
  ASN1_TYPE_set(value, V_ASN1_SEQUENCE, str);  // takes `str`
  return value;
}

int OnGeneralMessage(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG* /*req*/, const STACK_OF(OSSL_CMP_ITAV) * in,
                     STACK_OF(OSSL_CMP_ITAV) * *out) {
  CmpServer::Transaction& t = *Of(srv);
  if (!Fresh(t)) return 0;
  STACK_OF(OSSL_CMP_ITAV)* answers = sk_OSSL_CMP_ITAV_new_null();
  for (int i = 0; answers && i < sk_OSSL_CMP_ITAV_num(in); ++i) {
    const ASN1_OBJECT* type = OSSL_CMP_ITAV_get0_type(sk_OSSL_CMP_ITAV_value(in, i));
    char oid[64] = {};
    OBJ_obj2txt(oid, sizeof(oid), type, 1);
    ASN1_OBJECT* answer_type = nullptr;
    ASN1_TYPE* value = nullptr;
    if (OBJ_obj2nid(type) == NID_id_it_caCerts) {
      value = CaCertsValue(t);
      answer_type = value ? OBJ_dup(type) : nullptr;
    } else if (std::string_view(oid) == kRootCaCertOid || OBJ_obj2nid(type) == NID_id_it_rootCaKeyUpdate) {
      // RFC 9483 4.3.2: asked with rootCaCert, answered with rootCaKeyUpdate, with no value
      // when there is no update: certfleet does not roll a root over in place.
      answer_type = OBJ_nid2obj(NID_id_it_rootCaKeyUpdate);
    } else {
      answer_type = OBJ_dup(type);  // a type certfleet does not serve: answered with no value
    }
    OSSL_CMP_ITAV* itav = answer_type ? OSSL_CMP_ITAV_create(answer_type, value) : nullptr;
    if (itav == nullptr || sk_OSSL_CMP_ITAV_push(answers, itav) <= 0) {
      if (itav) {
        OSSL_CMP_ITAV_free(itav);
      } else {
        ASN1_OBJECT_free(answer_type);
        ASN1_TYPE_free(value);
      }
      sk_OSSL_CMP_ITAV_pop_free(answers, OSSL_CMP_ITAV_free);
      return 0;
    }
  }
  *out = answers;
  return answers != nullptr;
}

void OnError(OSSL_CMP_SRV_CTX* /*srv*/, const OSSL_CMP_MSG* /*req*/, const OSSL_CMP_PKISI* /*status*/,
             const ASN1_INTEGER* /*code*/, const OSSL_CMP_PKIFREETEXT* /*details*/) {
  log::Info("a CMP client sent an error message");
}

int OnCertConfirm(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG* /*req*/, int /*cert_req_id*/,
                  const ASN1_OCTET_STRING* /*cert_hash*/, const OSSL_CMP_PKISI* /*status*/) {
  CmpServer::Transaction& t = *Of(srv);
  if (t.issued_serial.empty()) {
    Refuse("this transaction has no certificate to confirm");
    return 0;
  }
  if (!t.current.cert_accepted) {
    if (!t.handed_back) RevokeRejected(t);
    return 1;
  }
  if (!ConstantTimeEquals(t.current.cert_hash, t.issued_hash)) {
    Refuse("certHash is not the hash of the certificate answered");
    return 0;
  }
  // A certificate handed back may still wait in the transaction that issued it (whose answer
  // was lost): confirmed now, it waits no more there either.
  Result<bool> confirmed =
      store::Write(t.server->store(), [&](store::Tx& tx) { return store::EndCmpConfirmation(tx, t.issued_serial); });
  if (!confirmed.ok()) {
    Refuse(confirmed.error());
    return 0;
  }
  if (!*confirmed && !t.handed_back) {
    Refuse("the certConf came too late: the certificate was revoked unconfirmed");
    return 0;
  }
  return 1;
}

int OnPoll(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG* /*req*/, int /*cert_req_id*/, OSSL_CMP_MSG** cert_req,
           int64_t* check_after) {
  CmpServer::Transaction& t = *Of(srv);
  *cert_req = nullptr;
  if (!t.waiting) {
    Refuse("no request of this transaction waits");
    return 0;
  }
  Result<EnrollRequest> request = EnrollmentOf(t);
  Result<bool> pending =
      request.ok() ? t.server->enroll().IsPending(t.label, request->checked ? request->checked->der : request->csr)
                   : request.error();
  if (!pending.ok()) {
    Refuse(pending.error());
    return 0;
  }
  if (*pending) {
    *check_after = t.server->enroll().retry_after().count();
    return 1;
  }
  // Decided: the certificate request is processed again, and issued or refused.
  *cert_req = OSSL_CMP_MSG_dup(t.first_msg.get());
  return *cert_req != nullptr;
}

}  // namespace

Result<std::unique_ptr<CmpServer>> CmpServer::Make(EnrollService& enroll, store::Store& store, const Clock& clock,
                                                   const Options& options) {
  CF_ASSIGN_OR_RETURN(pki::X509Ptr signer, pki::CertificateFromPem(options.signer_certificate_pem));
  CF_ASSIGN_OR_RETURN(pki::PkeyPtr key, pki::PrivateKeyFromPem(options.signer_key_pem));
  if (X509_check_private_key(signer.get(), key.get()) != 1) {
    return MakeError(ErrorCode::kInvalidArgument, "the CMP signer's key is not its certificate's");
  }
  return std::unique_ptr<CmpServer>(new CmpServer(enroll, store, clock, std::move(signer), std::move(key), options));
}

CmpServer::CmpServer(EnrollService& enroll, store::Store& store, const Clock& clock, pki::X509Ptr signer,
                     pki::PkeyPtr signer_key, const Options& options)
    : enroll_(enroll),
      store_(store),
      clock_(clock),
      signer_(std::move(signer)),
      signer_key_(std::move(signer_key)),
      ttl_(std::max(options.transaction_ttl, 2 * enroll.retry_after())) {
  for (int i = 0; i < options.threads; ++i) threads_.emplace_back([this] { Work(); });
}

CmpServer::~CmpServer() {
  {
    std::lock_guard lock(queue_mu_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void CmpServer::Work() {
  NameThisThread("cmp");
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lock(queue_mu_);
      queue_cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and nothing left
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    job();
  }
}

void CmpServer::HandleAsync(std::string label, std::string der, const std::function<void(Result<std::string>)>& done) {
  {
    std::lock_guard lock(queue_mu_);
    if (queue_.size() < kMaxQueued && !stopping_) {
      queue_.emplace_back([this, label = std::move(label), der = std::move(der), done]() { done(Handle(label, der)); });
      queue_cv_.notify_one();
      return;
    }
  }
  done(MakeError(ErrorCode::kUnavailable, "too many CMP messages wait on this node; send it again shortly"));
}

bool CmpServer::HasRoom() {
  std::lock_guard lock(mu_);
  return transactions_.size() < kMaxTransactions;
}

Result<std::shared_ptr<CmpServer::Transaction>> CmpServer::Begin(const std::string& label, const cmp::Request& request,
                                                                 const OSSL_CMP_MSG& msg, const std::string& secret) {
  auto t = std::make_shared<Transaction>();
  t->server = this;
  t->label = label;
  t->first = request;
  t->srv.reset(OSSL_CMP_SRV_CTX_new(nullptr, nullptr));
  t->first_msg.reset(OSSL_CMP_MSG_dup(&msg));
  if (!t->srv || !t->first_msg ||
      OSSL_CMP_SRV_CTX_init(t->srv.get(), t.get(), OnCertRequest, OnRevocation, OnGeneralMessage, OnError,
                            OnCertConfirm, OnPoll) != 1) {
    return MakeError(ErrorCode::kInternal, "setting up OpenSSL's CMP server");
  }
  OSSL_CMP_CTX* ctx = OSSL_CMP_SRV_CTX_get0_cmp_ctx(t->srv.get());
  OSSL_CMP_CTX_set_log_cb(ctx, LogCmp);
  OSSL_CMP_SRV_CTX_set_grant_implicit_confirm(t->srv.get(), 1);
  // Answers to MAC-protected requests carry the same MAC; signed ones certfleet's signature.
  bool ready = OSSL_CMP_CTX_set1_cert(ctx, signer_.get()) == 1 && OSSL_CMP_CTX_set1_pkey(ctx, signer_key_.get()) == 1;
  if (request.mac_protected && !secret.empty()) {
    ready = ready && OSSL_CMP_CTX_set1_secretValue(ctx, reinterpret_cast<const unsigned char*>(secret.data()),
                                                   static_cast<int>(secret.size())) == 1;
  } else if (!request.mac_protected && !request.extra_certs.empty()) {
    // The sender's signature is checked with exactly the certificate it names first.
    CF_ASSIGN_OR_RETURN(pki::X509Ptr sender, pki::CertificateFromDer(request.extra_certs.front()));
    ready = ready && OSSL_CMP_CTX_set1_srvCert(ctx, sender.get()) == 1;
  }
  if (!ready) return MakeError(ErrorCode::kInternal, "setting up OpenSSL's CMP server");
  return t;
}

Result<std::string> CmpServer::Handle(std::string_view label_view, std::string_view der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  MsgPtr req(d2i_OSSL_CMP_MSG(nullptr, &p, static_cast<long>(der.size())));
  if (!req) return MakeError(ErrorCode::kInvalidArgument, "the PKIMessage does not read as CMP");
  // A PKIMessage certfleet refuses is answered as one (RFC 9483 3.5), as a new transaction of
  // nobody's that OpenSSL or Fresh refuses.
  Result<cmp::Request> read = cmp::ReadRequest(der);
  if (!read.ok() && read.error().code != ErrorCode::kInvalidArgument) return read.error();
  cmp::Request request;
  if (read.ok()) {
    request = std::move(*read);
  } else {
    request.body = OSSL_CMP_MSG_get_bodytype(req.get());
    request.refusal = read.error().message;
  }
  const std::string label(label_view);
  CF_RETURN_IF_ERROR(enroll_.Serves(label));
  const bool continues = request.body == cmp::kCertConf || request.body == cmp::kPollReq;
  // A MAC that costs too much is not computed: OpenSSL refuses it for want of a secret.
  const bool verifiable = !request.mac_protected || request.pbm_iterations <= cmp::kMaxPbmIterations;

  std::shared_ptr<Transaction> t;
  if (continues) {
    std::lock_guard lock(mu_);
    if (auto it = transactions_.find(request.transaction_id); it != transactions_.end() && it->second->label == label) {
      t = it->second;
    }
  }
  if (const std::shared_ptr<Transaction> found = t) {
    // Only the transaction's own client may go on with it: a message whose protection does
    // not verify (anyone can copy a transactionID seen on plain HTTP) is answered as one
    // nobody here knows, and the transaction waits on for the genuine one.
    std::lock_guard transaction_lock(found->mu);
    ERR_clear_error();
    const bool genuine =
        verifiable && OSSL_CMP_validate_msg(OSSL_CMP_SRV_CTX_get0_cmp_ctx(found->srv.get()), req.get()) == 1;
    ERR_clear_error();
    if (!genuine) t = nullptr;
  }
  if (!t) {
    // A new transaction (or a continuation nobody here knows, which OpenSSL refuses).
    std::string secret;
    if (request.mac_protected && request.sender_kid && verifiable) {
      CF_ASSIGN_OR_RETURN(auto known, enroll_.MacSecret(label, *request.sender_kid));
      if (known) secret = std::move(*known);  // else the MAC cannot verify and OpenSSL refuses
    }
    CF_ASSIGN_OR_RETURN(t, Begin(label, request, *req, secret));
    t->refusal = request.refusal;
    if (!t->refusal && !request.mac_protected) {
      CF_ASSIGN_OR_RETURN(bool known, enroll_.KnownSigner(label, request.extra_certs));
      if (!known) {
        t->refusal =
            "the message is signed with a certificate certfleet neither issued nor holds, and no factory "
            "anchor of this profile vouches for";
      }
    }
  }

  std::lock_guard transaction_lock(t->mu);
  t->current = std::move(request);
  ERR_clear_error();
  // OpenSSL's error answer names the earliest error queued: why, rather than "missing secret".
  if (!verifiable) Refuse(t->current.refusal.value_or("the MAC costs too much to verify"));
  MsgPtr rsp(OSSL_CMP_SRV_process_request(t->srv.get(), req.get()));
  ERR_clear_error();
  if (!rsp) return MakeError(ErrorCode::kInternal, "OpenSSL's CMP server made no answer");
  unsigned char* out = nullptr;
  const int len = i2d_OSSL_CMP_MSG(rsp.get(), &out);
  if (len <= 0) return MakeError(ErrorCode::kInternal, "encoding the CMP answer");
  std::string answer(reinterpret_cast<char*>(out), static_cast<size_t>(len));
  OPENSSL_free(out);

  // Keep a transaction whose certificate was answered or waits, for its certConf or pollReq;
  // end it after a confirmation or a refusal, and once a certificate is answered under
  // implicitConfirm (granted whenever asked: no certConf follows). Only this transaction's
  // own entry is touched.
  const int64_t now = clock_.NowMillis();
  const int answered = OSSL_CMP_MSG_get_bodytype(rsp.get());
  // A certConf holding no CertStatus rejects every certificate (RFC 4210 5.3.18); OpenSSL
  // confirms it without calling OnCertConfirm, so its certificate is revoked here.
  if (t->current.body == cmp::kCertConf && t->current.cert_statuses == 0 && answered == cmp::kPkiConf &&
      !t->issued_serial.empty() && !t->handed_back) {
    RevokeRejected(*t);
  }
  const bool confirmed_implicitly = t->first.implicit_confirm && !t->issued_serial.empty();
  const bool keep =
      t->awaiting && !t->refusal && !confirmed_implicitly && answered != cmp::kPkiConf && answered != cmp::kError;
  const std::string& id = t->first.transaction_id;
  std::lock_guard lock(mu_);
  for (auto it = transactions_.begin(); it != transactions_.end();) {
    it = it->second->expires_at <= now ? transactions_.erase(it) : std::next(it);
  }
  auto it = transactions_.find(id);
  if (keep) {
    t->expires_at = now + ttl_ms();
    if (it == transactions_.end() && transactions_.size() < kMaxTransactions) transactions_.emplace(id, t);
  } else if (it != transactions_.end() && it->second == t) {
    transactions_.erase(it);
  }
  return answer;
}

}  // namespace certfleet::enroll
