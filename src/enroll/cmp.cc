#include "enroll/cmp.h"

#include <fmt/format.h>
#include <openssl/cmp.h>
#include <openssl/err.h>

#include <future>

#include "core/crypto.h"
#include "core/log.h"
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

// Transactions awaiting a message at once, across clients; past it new ones are refused
// until some end or expire (each holds an OpenSSL context, a few KiB).
constexpr size_t kMaxTransactions = 10'000;
// Transaction IDs are remembered this long to refuse replays (RFC 9483 3.1: unique).
constexpr std::chrono::hours kReplayWindow{24 * 7};

// OpenSSL's CMP diagnostics go to certfleet's log, at debug (errors reach the client anyway).
int LogCmp(const char* func, const char* /*file*/, int /*line*/, OSSL_CMP_severity level, const char* msg) {
  if (level <= OSSL_CMP_LOG_ERR) log::Debug("cmp", {{"function", func ? func : ""}, {"message", msg ? msg : ""}});
  return 1;
}

// Refuses the message being processed: OpenSSL answers with a CMP error message whose
// details carry `reason`.
template <typename T>
T* Refuse(const std::string& reason) {
  ERR_raise_data(ERR_LIB_CMP, CMP_R_REQUEST_REJECTED_BY_SERVER, "%s", reason.c_str());
  return nullptr;
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
  std::optional<std::string> refusal;  // refuse whatever comes (a replayed transaction ID)
  int64_t expires_at = 0;
  std::mutex mu;  // one message of a transaction at a time
};

namespace {

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

OSSL_CMP_PKISI* OnCertRequest(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG* /*req*/, int /*cert_req_id*/,
                              const OSSL_CRMF_MSG* /*crm*/, const X509_REQ* /*p10cr*/, X509** cert_out,
                              STACK_OF(X509) * *chain_out, STACK_OF(X509) * *ca_pubs) {
  CmpServer::Transaction& t = *Of(srv);
  if (t.refusal) return Refuse<OSSL_CMP_PKISI>(*t.refusal);
  Result<EnrollRequest> request = EnrollmentOf(t);
  if (!request.ok()) return Refuse<OSSL_CMP_PKISI>(request.error().message);
  Result<Enrolled> enrolled = EnrollNow(t.server->enroll(), std::move(*request));
  if (!enrolled.ok()) return Refuse<OSSL_CMP_PKISI>(enrolled.error().message);
  if (enrolled->pending) return Status(OSSL_CMP_PKISTATUS_waiting, "waiting for an operator's approval");
  Result<pki::X509Ptr> cert = pki::CertificateFromPem(enrolled->record.certificate_pem);
  Result<std::vector<pki::X509Ptr>> chain = Certificates(enrolled->chain_pem);
  if (!cert.ok() || !chain.ok()) return Refuse<OSSL_CMP_PKISI>("the issued certificate does not read");
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
  if (t.refusal) return Refuse<OSSL_CMP_PKISI>(*t.refusal);
  if (t.first.mac_protected || t.first.extra_certs.empty()) {
    return Refuse<OSSL_CMP_PKISI>("a revocation request is signed with the certificate it revokes");
  }
  Result<void> revoked = t.server->enroll().RevokePresented(t.first.extra_certs.front(), pki::SerialHex(serial),
                                                            t.first.revocation_reason);
  if (!revoked.ok()) return Refuse<OSSL_CMP_PKISI>(revoked.error().message);
  return Status(OSSL_CMP_PKISTATUS_accepted);
}

int OnGeneralMessage(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG* /*req*/, const STACK_OF(OSSL_CMP_ITAV) * in,
                     STACK_OF(OSSL_CMP_ITAV) * *out) {
  CmpServer::Transaction& t = *Of(srv);
  if (t.refusal) return Refuse<int>(*t.refusal) != nullptr;
  *out = sk_OSSL_CMP_ITAV_new_null();
  for (int i = 0; *out && i < sk_OSSL_CMP_ITAV_num(in); ++i) {
    const ASN1_OBJECT* type = OSSL_CMP_ITAV_get0_type(sk_OSSL_CMP_ITAV_value(in, i));
    ASN1_TYPE* value = nullptr;
    if (OBJ_obj2nid(type) == NID_id_it_caCerts) {
      // RFC 9483 4.3.1: the CA certificates, a SEQUENCE OF Certificate.
      Result<std::string> pem = t.server->enroll().CaCertificatesPem(t.label);
      Result<std::vector<pki::X509Ptr>> certs = pem.ok() ? pki::CertificatesFromPem(*pem) : pem.error();
      if (!certs.ok()) return Refuse<int>(certs.error().message) != nullptr;
      std::string seq;
      for (const auto& c : *certs) {
        Result<std::string> cert_der = pki::CertificateToDer(c.get());
        if (!cert_der.ok()) return 0;
        seq += *cert_der;
      }
      const std::string der = pki::Der(pki::kDerSequence, seq);
      ASN1_STRING* str = ASN1_STRING_type_new(V_ASN1_SEQUENCE);
      value = ASN1_TYPE_new();
      if (!str || !value || ASN1_STRING_set(str, der.data(), static_cast<int>(der.size())) != 1) {
        ASN1_STRING_free(str);
        ASN1_TYPE_free(value);
        return 0;
      }
      ASN1_TYPE_set(value, V_ASN1_SEQUENCE, str);
    }
    // Anything else, and a root CA update (certfleet's roots are not rolled over in place:
    // RFC 9483 4.3.2's "no update available"), is answered with the type and no value.
    OSSL_CMP_ITAV* itav = OSSL_CMP_ITAV_create(OBJ_dup(type), value);
    if (itav == nullptr || sk_OSSL_CMP_ITAV_push(*out, itav) <= 0) {
      OSSL_CMP_ITAV_free(itav);
      return 0;
    }
  }
  return *out != nullptr;
}

void OnError(OSSL_CMP_SRV_CTX* /*srv*/, const OSSL_CMP_MSG* /*req*/, const OSSL_CMP_PKISI* /*status*/,
             const ASN1_INTEGER* /*code*/, const OSSL_CMP_PKIFREETEXT* /*details*/) {
  log::Info("a CMP client sent an error message");
}

int OnCertConfirm(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG* /*req*/, int /*cert_req_id*/,
                  const ASN1_OCTET_STRING* /*cert_hash*/, const OSSL_CMP_PKISI* /*status*/) {
  return Of(srv)->refusal ? Refuse<int>(*Of(srv)->refusal) != nullptr : 1;
}

int OnPoll(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG* /*req*/, int /*cert_req_id*/, OSSL_CMP_MSG** cert_req,
           int64_t* check_after) {
  CmpServer::Transaction& t = *Of(srv);
  *cert_req = nullptr;
  Result<EnrollRequest> request = EnrollmentOf(t);
  if (!request.ok()) return Refuse<int>(request.error().message) != nullptr;
  const std::string identity = request->checked ? request->checked->der : request->csr;
  Result<bool> pending = t.server->enroll().IsPending(t.label, identity);
  if (!pending.ok()) return Refuse<int>(pending.error().message) != nullptr;
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
  return std::unique_ptr<CmpServer>(
      new CmpServer(enroll, store, clock, std::move(signer), std::move(key), options.transaction_ttl));
}

CmpServer::CmpServer(EnrollService& enroll, store::Store& store, const Clock& clock, pki::X509Ptr signer,
                     pki::PkeyPtr signer_key, std::chrono::seconds ttl)
    : enroll_(enroll),
      store_(store),
      clock_(clock),
      signer_(std::move(signer)),
      signer_key_(std::move(signer_key)),
      ttl_(ttl) {}

CmpServer::~CmpServer() = default;

std::shared_ptr<CmpServer::Transaction> CmpServer::Begin(const std::string& label, std::string_view der, bool mac,
                                                         const std::string& secret) {
  auto t = std::make_shared<Transaction>();
  t->server = this;
  t->label = label;
  t->srv.reset(OSSL_CMP_SRV_CTX_new(nullptr, nullptr));
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  t->first_msg.reset(d2i_OSSL_CMP_MSG(nullptr, &p, static_cast<long>(der.size())));
  if (!t->srv || !t->first_msg ||
      OSSL_CMP_SRV_CTX_init(t->srv.get(), t.get(), OnCertRequest, OnRevocation, OnGeneralMessage, OnError,
                            OnCertConfirm, OnPoll) != 1) {
    return nullptr;
  }
  OSSL_CMP_CTX* ctx = OSSL_CMP_SRV_CTX_get0_cmp_ctx(t->srv.get());
  OSSL_CMP_CTX_set_log_cb(ctx, LogCmp);
  OSSL_CMP_SRV_CTX_set_grant_implicit_confirm(t->srv.get(), 1);
  // Answers to MAC-protected requests carry the same MAC; signed ones certfleet's signature.
  bool ready = OSSL_CMP_CTX_set1_cert(ctx, signer_.get()) == 1 && OSSL_CMP_CTX_set1_pkey(ctx, signer_key_.get()) == 1;
  if (mac && !secret.empty()) {
    ready = ready && OSSL_CMP_CTX_set1_secretValue(ctx, reinterpret_cast<const unsigned char*>(secret.data()),
                                                   static_cast<int>(secret.size())) == 1;
  }
  return ready ? t : nullptr;
}

Result<std::string> CmpServer::Handle(std::string_view label_view, std::string_view der) {
  CF_ASSIGN_OR_RETURN(cmp::Request request, cmp::ReadRequest(der));
  const std::string label(label_view);
  CF_RETURN_IF_ERROR(enroll_.FindProfile(label));
  const int64_t now = clock_.NowMillis();
  const bool continues = request.body == cmp::kCertConf || request.body == cmp::kPollReq;

  std::shared_ptr<Transaction> t;
  if (continues) {
    std::lock_guard lock(mu_);
    if (auto it = transactions_.find(request.transaction_id); it != transactions_.end() && it->second->label == label) {
      t = it->second;
    }
  }
  if (!t) {
    // A new transaction (or a continuation nobody here knows, which OpenSSL refuses).
    std::string secret;
    if (request.mac_protected && request.sender_kid) {
      CF_ASSIGN_OR_RETURN(auto known, enroll_.MacSecret(label, *request.sender_kid));
      if (known) secret = std::move(*known);  // else the MAC cannot verify and OpenSSL refuses
    }
    t = Begin(label, der, request.mac_protected, secret);
    if (!t) return MakeError(ErrorCode::kInvalidArgument, "the PKIMessage does not read as CMP");
    t->first = request;
    if (!request.mac_protected && !request.extra_certs.empty()) {
      // The sender's signature is checked with exactly the certificate it names first.
      CF_ASSIGN_OR_RETURN(pki::X509Ptr sender, pki::CertificateFromDer(request.extra_certs.front()));
      OSSL_CMP_CTX_set1_srvCert(OSSL_CMP_SRV_CTX_get0_cmp_ctx(t->srv.get()), sender.get());
    }
    if (!continues) {
      if (request.transaction_id.empty()) {
        t->refusal = "the message has no transactionID";
      } else {
        const int64_t forget = now - std::chrono::duration_cast<std::chrono::milliseconds>(kReplayWindow).count();
        CF_ASSIGN_OR_RETURN(bool fresh, store::Write(store_, [&](store::Tx& tx) {
                              return store::BeginCmpTransaction(tx, HexEncode(request.transaction_id), now, forget);
                            }));
        if (!fresh) t->refusal = "transactionIdInUse: this transactionID was used before";
      }
    }
  }

  std::lock_guard transaction_lock(t->mu);
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  MsgPtr req(d2i_OSSL_CMP_MSG(nullptr, &p, static_cast<long>(der.size())));
  if (!req) return MakeError(ErrorCode::kInvalidArgument, "the PKIMessage does not read as CMP");
  ERR_clear_error();
  MsgPtr rsp(OSSL_CMP_SRV_process_request(t->srv.get(), req.get()));
  ERR_clear_error();
  if (!rsp) return MakeError(ErrorCode::kInternal, "OpenSSL's CMP server made no answer");
  unsigned char* out = nullptr;
  const int len = i2d_OSSL_CMP_MSG(rsp.get(), &out);
  if (len <= 0) return MakeError(ErrorCode::kInternal, "encoding the CMP answer");
  std::string answer(reinterpret_cast<char*>(out), static_cast<size_t>(len));
  OPENSSL_free(out);

  // Keep a certificate request's transaction for its certConf or pollReq; end it otherwise.
  const int answered = OSSL_CMP_MSG_get_bodytype(rsp.get());
  const bool awaits =
      answered == cmp::kIp || answered == cmp::kCp || answered == cmp::kKup || answered == cmp::kPollRep;
  std::lock_guard lock(mu_);
  for (auto it = transactions_.begin(); it != transactions_.end();) {
    it = it->second->expires_at <= now ? transactions_.erase(it) : std::next(it);
  }
  if (awaits && !t->refusal) {
    t->expires_at = now + std::chrono::duration_cast<std::chrono::milliseconds>(ttl_).count();
    if (transactions_.size() < kMaxTransactions || transactions_.count(request.transaction_id)) {
      transactions_[request.transaction_id] = t;
    }
  } else {
    transactions_.erase(request.transaction_id);
  }
  return answer;
}

}  // namespace certfleet::enroll
