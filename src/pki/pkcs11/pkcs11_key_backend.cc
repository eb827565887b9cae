// OpenSSL 3.0 lets a key held elsewhere sign only through a provider, an ENGINE or the RSA/EC
// key methods, all but the provider deprecated; Debian 12 ships no PKCS#11 provider, and a
// provider of our own is several times this file. The key methods are stable in 3.x and are
// what libp11's engine uses too, so this file (alone) uses the deprecated declarations.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "pki/pkcs11/pkcs11_key_backend.h"

#include <dlfcn.h>
#include <fmt/format.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/rsa.h>
#include <p11-kit/pkcs11.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <type_traits>

#include "core/crypto.h"
#include "pki/der.h"

namespace certfleet::pki::pkcs11 {

struct Pkcs11KeyBackend::Module {
  void* handle = nullptr;
  CK_FUNCTION_LIST_PTR f = nullptr;
  ~Module() {
    if (handle) dlclose(handle);
  }
};

// What a token-backed OpenSSL key's callbacks need to sign.
struct KeyContext {
  Pkcs11KeyBackend* backend;
  std::string id;  // CKA_ID
};

namespace {

constexpr std::string_view kName = "pkcs11";
constexpr std::string_view kRefPrefix = "pkcs11:";
constexpr size_t kIdBytes = 16;
// A signature buffer: an RSA-4096 signature is 512 bytes, the largest this backend makes.
constexpr size_t kMaxSignature = 1024;

std::string RvName(CK_RV rv) {
  switch (rv) {
    case CKR_GENERAL_ERROR:
      return "CKR_GENERAL_ERROR";
    case CKR_DEVICE_ERROR:
      return "CKR_DEVICE_ERROR";
    case CKR_DEVICE_REMOVED:
      return "CKR_DEVICE_REMOVED";
    case CKR_TOKEN_NOT_PRESENT:
      return "CKR_TOKEN_NOT_PRESENT";
    case CKR_SESSION_HANDLE_INVALID:
      return "CKR_SESSION_HANDLE_INVALID";
    case CKR_SESSION_CLOSED:
      return "CKR_SESSION_CLOSED";
    case CKR_OBJECT_HANDLE_INVALID:
      return "CKR_OBJECT_HANDLE_INVALID";
    case CKR_KEY_HANDLE_INVALID:
      return "CKR_KEY_HANDLE_INVALID";
    case CKR_PIN_INCORRECT:
      return "CKR_PIN_INCORRECT";
    case CKR_PIN_LOCKED:
      return "CKR_PIN_LOCKED";
    case CKR_USER_NOT_LOGGED_IN:
      return "CKR_USER_NOT_LOGGED_IN";
    case CKR_CRYPTOKI_NOT_INITIALIZED:
      return "CKR_CRYPTOKI_NOT_INITIALIZED";
    case CKR_MECHANISM_INVALID:
      return "CKR_MECHANISM_INVALID";
    case CKR_TEMPLATE_INCONSISTENT:
      return "CKR_TEMPLATE_INCONSISTENT";
    case CKR_ATTRIBUTE_VALUE_INVALID:
      return "CKR_ATTRIBUTE_VALUE_INVALID";
    default:
      return fmt::format("CKR 0x{:x}", rv);
  }
}

// Errors after which the login is gone and must be made again; any other is the operation's
// own (CKR_SESSION_COUNT, CKR_DEVICE_MEMORY: the token is full or busy, and a new login would
// only stall every signer) or its session's (SessionLost).
bool LostConnection(CK_RV rv) {
  switch (rv) {
    case CKR_GENERAL_ERROR:
    case CKR_DEVICE_ERROR:
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_USER_NOT_LOGGED_IN:
    case CKR_CRYPTOKI_NOT_INITIALIZED:
    case CKR_OBJECT_HANDLE_INVALID:
    case CKR_KEY_HANDLE_INVALID:
      return true;
    default:
      return false;
  }
}

// Errors after which one session is gone (a network HSM's idle timeout, a failover): it is
// dropped and the operation tried once more on another.
bool SessionLost(CK_RV rv) { return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED; }

// The last PKCS#11 error this thread's operation met (Failed), for WithSession to judge.
thread_local CK_RV last_failure = CKR_OK;

// How long an operation waits for a session when the token has no more to open.
constexpr std::chrono::seconds kSessionWait{10};

// Login errors that another try would make worse: each wrong PIN counts towards locking it.
bool LoginRefused(CK_RV rv) { return rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED || rv == CKR_PIN_EXPIRED; }

std::string TrimmedLabel(const unsigned char (&label)[32]) {
  std::string s(reinterpret_cast<const char*>(label), sizeof(label));
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

Result<std::string> IdOf(std::string_view ref) {
  if (!ref.starts_with(kRefPrefix)) return MakeError(ErrorCode::kInternal, "not a pkcs11 key reference");
  const std::string_view hex = ref.substr(kRefPrefix.size());
  if (hex.empty() || hex.size() % 2 != 0 || hex.size() > 128) {
    return MakeError(ErrorCode::kInternal, "bad pkcs11 key reference");
  }
  std::string id;
  for (size_t i = 0; i < hex.size(); i += 2) {
    unsigned value = 0;
    for (char c : hex.substr(i, 2)) {
      const size_t digit = std::string_view("0123456789abcdef").find(c);
      if (digit == std::string_view::npos) return MakeError(ErrorCode::kInternal, "bad pkcs11 key reference");
      value = value * 16 + static_cast<unsigned>(digit);
    }
    id.push_back(static_cast<char>(value));
  }
  return id;
}

Result<void> CheckBackend(std::string_view backend) {
  if (!backend.empty() && backend != kName) {
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("key backend '{}' is not configured", backend));
  }
  return Ok();
}

// A template attribute pointing at `value`, which must outlive the call that takes it.
template <typename T>
requires std::is_trivially_copyable_v<T> CK_ATTRIBUTE Attr(CK_ATTRIBUTE_TYPE type, T& value) {
  return CK_ATTRIBUTE{type, &value, sizeof(value)};
}
CK_ATTRIBUTE Attr(CK_ATTRIBUTE_TYPE type, const std::string& value) {
  return CK_ATTRIBUTE{type, const_cast<char*>(value.data()), value.size()};
}

CK_BBOOL kTrue = CK_TRUE;
CK_BBOOL kFalse = CK_FALSE;

int RsaIndex() {
  static const int index = RSA_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}
int EcIndex() {
  static const int index = EC_KEY_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// PKCS #1 v1.5: the token pads and signs a DigestInfo made here from OpenSSL's digest.
int RsaSign(int type, const unsigned char* m, unsigned int m_len, unsigned char* sigret, unsigned int* siglen,
            const RSA* rsa) {
  auto* ctx = static_cast<KeyContext*>(RSA_get_ex_data(rsa, RsaIndex()));
  if (!ctx) return 0;
  const std::string digest_info =
      Der(kDerSequence, Der(kDerSequence, DerOid(type) + Der(kDerNull, "")) +
                            Der(kDerOctetString, std::string_view(reinterpret_cast<const char*>(m), m_len)));
  auto sig = ctx->backend->Sign(ctx->id, CKM_RSA_PKCS, digest_info);
  if (!sig.ok()) {
    NoteKeyUnavailable(sig.error().message);
    return 0;
  }
  if (sig->size() > static_cast<size_t>(RSA_size(rsa))) return 0;
  std::copy(sig->begin(), sig->end(), sigret);
  *siglen = static_cast<unsigned int>(sig->size());
  return 1;
}

// ECDSA: the token signs the digest and answers r and s side by side (PKCS #11 2.40, 2.3.1).
ECDSA_SIG* EcSignSig(const unsigned char* dgst, int dgst_len, const BIGNUM* /*kinv*/, const BIGNUM* /*r*/, EC_KEY* ec) {
  auto* ctx = static_cast<KeyContext*>(EC_KEY_get_ex_data(ec, EcIndex()));
  if (!ctx) return nullptr;
  auto sig = ctx->backend->Sign(ctx->id, CKM_ECDSA,
                                std::string_view(reinterpret_cast<const char*>(dgst), static_cast<size_t>(dgst_len)));
  if (!sig.ok()) {
    NoteKeyUnavailable(sig.error().message);
    return nullptr;
  }
  if (sig->empty() || sig->size() % 2 != 0) return nullptr;
  const int half = static_cast<int>(sig->size() / 2);
  const auto* bytes = reinterpret_cast<const unsigned char*>(sig->data());
  BIGNUM* r = BN_bin2bn(bytes, half, nullptr);
  BIGNUM* s = BN_bin2bn(bytes + half, half, nullptr);
  ECDSA_SIG* out = ECDSA_SIG_new();
  if (!r || !s || !out || ECDSA_SIG_set0(out, r, s) != 1) {
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(out);
    return nullptr;
  }
  return out;
}

// The methods of token-backed keys: OpenSSL's own, but signing through the token. Made once,
// kept for the life of the process (keys point at them).
const RSA_METHOD* RsaMethod() {
  static RSA_METHOD* method = [] {
    RSA_METHOD* m = RSA_meth_dup(RSA_PKCS1_OpenSSL());
    RSA_meth_set1_name(m, "certfleet pkcs11");
    RSA_meth_set_sign(m, RsaSign);
    return m;
  }();
  return method;
}

const EC_KEY_METHOD* EcMethod() {
  static EC_KEY_METHOD* method = [] {
    EC_KEY_METHOD* m = EC_KEY_METHOD_new(EC_KEY_OpenSSL());
    int (*sign)(int, const unsigned char*, int, unsigned char*, unsigned int*, const BIGNUM*, const BIGNUM*, EC_KEY*) =
        nullptr;
    int (*setup)(EC_KEY*, BN_CTX*, BIGNUM**, BIGNUM**) = nullptr;
    ECDSA_SIG* (*sign_sig)(const unsigned char*, int, const BIGNUM*, const BIGNUM*, EC_KEY*) = nullptr;
    EC_KEY_METHOD_get_sign(EC_KEY_OpenSSL(), &sign, &setup, &sign_sig);
    // OpenSSL's sign encodes what sign_sig returns; no setup, as no nonce is made here.
    EC_KEY_METHOD_set_sign(m, sign, nullptr, EcSignSig);
    return m;
  }();
  return method;
}

Result<PkeyPtr> MakeEcKey(const std::string& params, const std::string& point_attr, KeyContext* ctx) {
  const auto* p = reinterpret_cast<const unsigned char*>(params.data());
  ASN1_OBJECT* curve = d2i_ASN1_OBJECT(nullptr, &p, static_cast<long>(params.size()));
  const int nid = curve ? OBJ_obj2nid(curve) : NID_undef;
  ASN1_OBJECT_free(curve);
  if (nid != NID_X9_62_prime256v1 && nid != NID_secp384r1) {
    return MakeError(ErrorCode::kInvalidArgument, "the token's key is on a curve certfleet does not use");
  }
  // CKA_EC_POINT is a DER OCTET STRING holding the point; some modules give the bare point.
  std::string point = point_attr;
  const auto* begin = reinterpret_cast<const unsigned char*>(point_attr.data());
  p = begin;
  if (ASN1_OCTET_STRING* os = d2i_ASN1_OCTET_STRING(nullptr, &p, static_cast<long>(point_attr.size()))) {
    // Only when the DER is the whole value: a bare point can start like an OCTET STRING.
    if (p == begin + point_attr.size()) {
      point.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(os)), ASN1_STRING_length(os));
    }
    ASN1_OCTET_STRING_free(os);
  }
  std::unique_ptr<EC_KEY, Deleter<EC_KEY_free>> ec(EC_KEY_new_by_curve_name(nid));
  if (!ec || EC_KEY_set_method(ec.get(), EcMethod()) != 1) return OpenSslError("making a token key");
  std::unique_ptr<EC_POINT, Deleter<EC_POINT_free>> pub(EC_POINT_new(EC_KEY_get0_group(ec.get())));
  if (!pub ||
      EC_POINT_oct2point(EC_KEY_get0_group(ec.get()), pub.get(), reinterpret_cast<const unsigned char*>(point.data()),
                         point.size(), nullptr) != 1 ||
      EC_KEY_set_public_key(ec.get(), pub.get()) != 1 || EC_KEY_set_ex_data(ec.get(), EcIndex(), ctx) != 1) {
    return OpenSslError("reading the token key's public point");
  }
  PkeyPtr key(EVP_PKEY_new());
  if (!key || EVP_PKEY_assign_EC_KEY(key.get(), ec.get()) != 1) return OpenSslError("making a token key");
  (void)ec.release();  // the EVP_PKEY owns it
  return key;
}

Result<PkeyPtr> MakeRsaKey(const std::string& modulus, const std::string& exponent, KeyContext* ctx) {
  std::unique_ptr<RSA, Deleter<RSA_free>> rsa(RSA_new());
  BIGNUM* n =
      BN_bin2bn(reinterpret_cast<const unsigned char*>(modulus.data()), static_cast<int>(modulus.size()), nullptr);
  BIGNUM* e =
      BN_bin2bn(reinterpret_cast<const unsigned char*>(exponent.data()), static_cast<int>(exponent.size()), nullptr);
  if (!rsa || !n || !e || RSA_set0_key(rsa.get(), n, e, nullptr) != 1) {
    BN_free(n);
    BN_free(e);
    return OpenSslError("making a token key");
  }
  if (RSA_set_method(rsa.get(), RsaMethod()) != 1 || RSA_set_ex_data(rsa.get(), RsaIndex(), ctx) != 1) {
    return OpenSslError("making a token key");
  }
  PkeyPtr key(EVP_PKEY_new());
  if (!key || EVP_PKEY_assign_RSA(key.get(), rsa.get()) != 1) return OpenSslError("making a token key");
  (void)rsa.release();
  return key;
}

std::string BigEndian(const BIGNUM* bn, int width = 0) {
  std::string out(static_cast<size_t>(std::max(width, BN_num_bytes(bn))), '\0');
  BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(out.size()));
  return out;
}

// The attribute values of a key taken onto the token, cleansed when dropped.
struct KeyValues {
  CK_KEY_TYPE type = CKK_EC;
  std::vector<std::pair<CK_ATTRIBUTE_TYPE, std::string>> private_values, public_values;
  KeyValues() = default;
  KeyValues(const KeyValues&) = delete;
  KeyValues& operator=(const KeyValues&) = delete;
  ~KeyValues() {
    for (auto& [t, v] : private_values) OPENSSL_cleanse(v.data(), v.size());
  }
};

Result<void> ReadKeyValues(EVP_PKEY* key, KeyValues& out) {
  const Result<KeyType> typed = KeyTypeOf(key);
  if (!typed.ok() || *typed == KeyType::kEd25519) {
    // P-521, Ed25519, RSA of other sizes: certfleet holds them in files or the database only.
    return MakeError(ErrorCode::kInvalidArgument,
                     "the pkcs11 key backend holds EC P-256/P-384 and RSA 2048/3072/4096 keys only");
  }
  const KeyType type = *typed;
  auto bn = [key](const char* name) -> Result<BignumPtr> {
    BIGNUM* value = nullptr;
    if (EVP_PKEY_get_bn_param(key, name, &value) != 1) return OpenSslError(std::string("reading the key's ") + name);
    return BignumPtr(value);
  };
  if (type == KeyType::kEcP256 || type == KeyType::kEcP384) {
    out.type = CKK_EC;
    const std::string params = DerOid(type == KeyType::kEcP256 ? NID_X9_62_prime256v1 : NID_secp384r1);
    CF_ASSIGN_OR_RETURN(BignumPtr d, bn(OSSL_PKEY_PARAM_PRIV_KEY));
    unsigned char* point = nullptr;
    const size_t point_len = EVP_PKEY_get1_encoded_public_key(key, &point);
    if (point_len == 0) return OpenSslError("reading the key's public point");
    const std::string point_str(reinterpret_cast<char*>(point), point_len);
    OPENSSL_free(point);
    out.private_values = {{CKA_EC_PARAMS, params}, {CKA_VALUE, BigEndian(d.get(), (EVP_PKEY_get_bits(key) + 7) / 8)}};
    out.public_values = {{CKA_EC_PARAMS, params}, {CKA_EC_POINT, Der(kDerOctetString, point_str)}};
    return Ok();
  }
  out.type = CKK_RSA;
  constexpr std::pair<CK_ATTRIBUTE_TYPE, const char*> kRsaParams[] = {
      {CKA_MODULUS, OSSL_PKEY_PARAM_RSA_N},
      {CKA_PUBLIC_EXPONENT, OSSL_PKEY_PARAM_RSA_E},
      {CKA_PRIVATE_EXPONENT, OSSL_PKEY_PARAM_RSA_D},
      {CKA_PRIME_1, OSSL_PKEY_PARAM_RSA_FACTOR1},
      {CKA_PRIME_2, OSSL_PKEY_PARAM_RSA_FACTOR2},
      {CKA_EXPONENT_1, OSSL_PKEY_PARAM_RSA_EXPONENT1},
      {CKA_EXPONENT_2, OSSL_PKEY_PARAM_RSA_EXPONENT2},
      {CKA_COEFFICIENT, OSSL_PKEY_PARAM_RSA_COEFFICIENT1},
  };
  for (const auto& [attr, name] : kRsaParams) {
    CF_ASSIGN_OR_RETURN(BignumPtr value, bn(name));
    out.private_values.emplace_back(attr, BigEndian(value.get()));
    if (attr == CKA_MODULUS || attr == CKA_PUBLIC_EXPONENT)
      out.public_values.emplace_back(attr, BigEndian(value.get()));
  }
  return Ok();
}

}  // namespace

Pkcs11KeyBackend::Pkcs11KeyBackend(Options options, std::unique_ptr<Module> module)
    : options_(std::move(options)), module_(std::move(module)) {}

Pkcs11KeyBackend::~Pkcs11KeyBackend() {
  std::unique_lock lock(conn_mu_);
  DisconnectLocked();
  OPENSSL_cleanse(options_.pin.data(), options_.pin.size());
}

Result<std::unique_ptr<Pkcs11KeyBackend>> Pkcs11KeyBackend::Open(Options options) {
  struct Cleanse {  // the PIN of this copy, on every way out
    std::string& pin;
    ~Cleanse() { OPENSSL_cleanse(pin.data(), pin.size()); }
  } cleanse{options.pin};
  auto module = std::make_unique<Module>();
  module->handle = dlopen(options.module.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!module->handle) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     fmt::format("cannot load the PKCS#11 module {}: {}", options.module, dlerror()));
  }
  auto get_list = reinterpret_cast<CK_C_GetFunctionList>(dlsym(module->handle, "C_GetFunctionList"));
  if (!get_list || get_list(&module->f) != CKR_OK || !module->f) {
    return MakeError(ErrorCode::kFailedPrecondition, fmt::format("{} is not a PKCS#11 module", options.module));
  }
  std::unique_ptr<Pkcs11KeyBackend> backend(new Pkcs11KeyBackend(std::move(options), std::move(module)));
  std::unique_lock lock(backend->conn_mu_);
  if (auto connected = backend->ConnectLocked(); !connected.ok()) {
    return MakeError(ErrorCode::kFailedPrecondition, connected.error().message);
  }
  lock.unlock();
  return backend;
}

Error Pkcs11KeyBackend::Failed(std::string_view what, unsigned long rv) {
  last_failure = rv;
  if (LostConnection(rv)) broken_ = true;
  return MakeError(ErrorCode::kUnavailable,
                   fmt::format("the PKCS#11 token '{}' failed {}: {}", options_.token_label, what, RvName(rv)));
}

void Pkcs11KeyBackend::DisconnectLocked() {
  if (!connected_) return;
  module_->f->C_Finalize(nullptr);  // closes every session and logs out
  connected_ = false;
  std::lock_guard lock(mu_);
  idle_sessions_.clear();
  open_sessions_ = 0;
  private_handles_.clear();
}

Result<void> Pkcs11KeyBackend::ConnectLocked() {
  if (!login_refused_.empty()) return MakeError(ErrorCode::kUnavailable, login_refused_);
  DisconnectLocked();
  CK_FUNCTION_LIST_PTR f = module_->f;
  CK_C_INITIALIZE_ARGS args{};
  args.flags = CKF_OS_LOCKING_OK;  // called from many threads
  if (CK_RV rv = f->C_Initialize(&args); rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
    return MakeError(ErrorCode::kUnavailable,
                     fmt::format("the PKCS#11 module {} failed to initialize: {}", options_.module, RvName(rv)));
  }
  auto fail = [&](Error e) {
    f->C_Finalize(nullptr);
    return e;
  };
  CK_ULONG count = 0;
  std::vector<CK_SLOT_ID> slots;
  CK_RV rv = f->C_GetSlotList(CK_TRUE, nullptr, &count);
  if (rv == CKR_OK) {
    slots.resize(count);
    rv = f->C_GetSlotList(CK_TRUE, slots.data(), &count);
    slots.resize(count);
  }
  if (rv != CKR_OK) return fail(MakeError(ErrorCode::kUnavailable, "listing PKCS#11 slots: " + RvName(rv)));
  std::string seen;
  bool found = false;
  for (CK_SLOT_ID slot : slots) {
    CK_TOKEN_INFO info{};
    if (f->C_GetTokenInfo(slot, &info) != CKR_OK) continue;
    const std::string label = TrimmedLabel(info.label);
    if (label == options_.token_label) {
      slot_ = slot;
      found = true;
      // Sessions opened at most: the token's own limit when it has one, else options_'.
      size_t most = options_.max_sessions;
      if (info.ulMaxSessionCount != CK_EFFECTIVELY_INFINITE && info.ulMaxSessionCount != CK_UNAVAILABLE_INFORMATION) {
        most = std::min<size_t>(most, info.ulMaxSessionCount);
      }
      std::lock_guard lock(mu_);
      max_sessions_ = std::max<size_t>(1, most);
      break;
    }
    seen += (seen.empty() ? "'" : ", '") + label + "'";
  }
  if (!found) {
    return fail(MakeError(ErrorCode::kUnavailable,
                          fmt::format("no PKCS#11 token labelled '{}' in {} (tokens present: {})", options_.token_label,
                                      options_.module, seen.empty() ? "none" : seen)));
  }
  CK_SESSION_HANDLE session = 0;
  rv = f->C_OpenSession(slot_, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &session);
  if (rv != CKR_OK) {
    return fail(MakeError(ErrorCode::kUnavailable,
                          fmt::format("opening a session on token '{}': {}", options_.token_label, RvName(rv))));
  }
  std::string pin = options_.pin;
  rv = f->C_Login(session, CKU_USER, reinterpret_cast<CK_UTF8CHAR_PTR>(pin.data()), pin.size());
  OPENSSL_cleanse(pin.data(), pin.size());
  if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
    const std::string why = rv == CKR_PIN_INCORRECT ? "wrong PIN (pkcs11.pin_file)" : RvName(rv);
    if (LoginRefused(rv)) {
      // Never again in this process: retrying a wrong PIN on every request locks the token.
      login_refused_ = fmt::format("the PKCS#11 token '{}' refused the PIN ({}); restart certfleet with the right one",
                                   options_.token_label, RvName(rv));
    }
    return fail(MakeError(ErrorCode::kUnavailable,
                          fmt::format("cannot log in to PKCS#11 token '{}': {}", options_.token_label, why)));
  }
  connected_ = true;
  broken_ = false;
  std::lock_guard lock(mu_);
  idle_sessions_.push_back(session);
  open_sessions_ = 1;
  return Ok();
}

template <typename T, typename Op>
Result<T> Pkcs11KeyBackend::WithSession(std::string_view what, Op op) {
  bool healthy = false;
  {
    std::shared_lock lock(conn_mu_);
    healthy = connected_ && !broken_;
  }
  if (!healthy) {
    std::unique_lock lock(conn_mu_);
    if (!connected_ || broken_) CF_RETURN_IF_ERROR(ConnectLocked());
  }
  std::shared_lock lock(conn_mu_);
  if (!connected_) {
    return MakeError(ErrorCode::kUnavailable, fmt::format("the PKCS#11 token '{}' is away", options_.token_label));
  }
  for (int attempt = 1;; ++attempt) {
    CF_ASSIGN_OR_RETURN(CK_SESSION_HANDLE session, TakeSession(what));
    last_failure = CKR_OK;
    Result<T> out = op(session);
    const bool session_lost = !out.ok() && SessionLost(last_failure);
    {
      std::lock_guard pool(mu_);
      if (broken_ || session_lost) {
        if (session_lost) module_->f->C_CloseSession(session);
        if (open_sessions_ > 0) --open_sessions_;
      } else {
        idle_sessions_.push_back(session);
      }
    }
    session_free_.notify_one();
    if (!session_lost || attempt == 2) return out;
  }
}

Result<unsigned long> Pkcs11KeyBackend::TakeSession(std::string_view what) {
  std::unique_lock pool(mu_);
  const auto deadline = std::chrono::steady_clock::now() + kSessionWait;
  for (;;) {
    if (!idle_sessions_.empty()) {
      const CK_SESSION_HANDLE session = idle_sessions_.back();
      idle_sessions_.pop_back();
      return session;
    }
    if (open_sessions_ < max_sessions_) {
      ++open_sessions_;
      pool.unlock();
      CK_SESSION_HANDLE session = 0;
      const CK_RV rv =
          module_->f->C_OpenSession(slot_, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &session);
      pool.lock();
      if (rv == CKR_OK) return session;
      --open_sessions_;
      // The token (shared with another process, say) has no more: wait for one of ours.
      if (rv == CKR_SESSION_COUNT && open_sessions_ > 0) {
        max_sessions_ = open_sessions_;
        continue;
      }
      pool.unlock();
      return Failed(fmt::format("opening a session for {}", what), rv);
    }
    if (session_free_.wait_until(pool, deadline) == std::cv_status::timeout) {
      return MakeError(ErrorCode::kUnavailable,
                       fmt::format("all {} sessions of the PKCS#11 token '{}' stayed busy for {} s ({})", max_sessions_,
                                   options_.token_label, kSessionWait.count(), what));
    }
  }
}

size_t Pkcs11KeyBackend::OpenSessions() {
  std::lock_guard pool(mu_);
  return open_sessions_;
}

Result<std::optional<unsigned long>> Pkcs11KeyBackend::FindObject(unsigned long session, const std::string& id,
                                                                  unsigned long object_class) {
  CK_OBJECT_CLASS cls = object_class;
  CK_ATTRIBUTE match[] = {Attr(CKA_CLASS, cls), Attr(CKA_ID, id)};
  CK_FUNCTION_LIST_PTR f = module_->f;
  if (CK_RV rv = f->C_FindObjectsInit(session, match, 2); rv != CKR_OK) return Failed("finding a key", rv);
  CK_OBJECT_HANDLE object = 0;
  CK_ULONG found = 0;
  const CK_RV rv = f->C_FindObjects(session, &object, 1, &found);
  f->C_FindObjectsFinal(session);
  if (rv != CKR_OK) return Failed("finding a key", rv);
  if (found == 0) return std::optional<unsigned long>();
  return std::optional<unsigned long>(object);
}

Result<unsigned long> Pkcs11KeyBackend::RequireObject(unsigned long session, const std::string& id,
                                                      unsigned long object_class) {
  CF_ASSIGN_OR_RETURN(auto object, FindObject(session, id, object_class));
  if (!object) {
    return MakeError(ErrorCode::kUnavailable, fmt::format("the key pkcs11:{} is not on the PKCS#11 token '{}'",
                                                          HexEncode(id), options_.token_label));
  }
  return *object;
}

Result<unsigned long> Pkcs11KeyBackend::PrivateHandle(unsigned long session, const std::string& id) {
  {
    std::lock_guard lock(mu_);
    if (auto it = private_handles_.find(id); it != private_handles_.end()) return it->second;
  }
  CF_ASSIGN_OR_RETURN(unsigned long handle, RequireObject(session, id, CKO_PRIVATE_KEY));
  std::lock_guard lock(mu_);
  private_handles_[id] = handle;
  return handle;
}

Result<std::string> Pkcs11KeyBackend::Attribute(unsigned long session, unsigned long object, unsigned long type) {
  CK_ATTRIBUTE attr{type, nullptr, 0};
  if (CK_RV rv = module_->f->C_GetAttributeValue(session, object, &attr, 1); rv != CKR_OK) {
    return Failed("reading a key", rv);
  }
  std::string value(attr.ulValueLen, '\0');
  attr.pValue = value.data();
  if (CK_RV rv = module_->f->C_GetAttributeValue(session, object, &attr, 1); rv != CKR_OK) {
    return Failed("reading a key", rv);
  }
  value.resize(attr.ulValueLen);
  return value;
}

Result<std::string> Pkcs11KeyBackend::Generate(KeyType type, std::string_view backend) {
  CF_RETURN_IF_ERROR(CheckBackend(backend));
  const std::string id = RandomBytes(kIdBytes);
  const std::string label = "certfleet-ca-" + HexEncode(id);
  CK_MECHANISM mechanism{CKM_EC_KEY_PAIR_GEN, nullptr, 0};
  std::string ec_params;
  CK_ULONG bits = 0;
  std::string exponent("\x01\x00\x01", 3);  // 65537
  switch (type) {
    case KeyType::kEcP256:
      ec_params = DerOid(NID_X9_62_prime256v1);
      break;
    case KeyType::kEcP384:
      ec_params = DerOid(NID_secp384r1);
      break;
    case KeyType::kRsa2048:
      bits = 2048;
      break;
    case KeyType::kRsa3072:
      bits = 3072;
      break;
    case KeyType::kRsa4096:
      bits = 4096;
      break;
    case KeyType::kEd25519:
      return MakeError(ErrorCode::kInvalidArgument,
                       "the pkcs11 key backend makes ec-p256, ec-p384, rsa-2048, rsa-3072 and rsa-4096 keys");
  }
  std::vector<CK_ATTRIBUTE> pub = {Attr(CKA_TOKEN, kTrue), Attr(CKA_VERIFY, kTrue), Attr(CKA_ID, id),
                                   Attr(CKA_LABEL, label)};
  if (bits != 0) {
    mechanism.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
    pub.push_back(Attr(CKA_MODULUS_BITS, bits));
    pub.push_back(Attr(CKA_PUBLIC_EXPONENT, exponent));
  } else {
    pub.push_back(Attr(CKA_EC_PARAMS, ec_params));
  }
  CK_ATTRIBUTE priv[] = {Attr(CKA_TOKEN, kTrue),        Attr(CKA_PRIVATE, kTrue), Attr(CKA_SENSITIVE, kTrue),
                         Attr(CKA_EXTRACTABLE, kFalse), Attr(CKA_SIGN, kTrue),    Attr(CKA_DECRYPT, kFalse),
                         Attr(CKA_UNWRAP, kFalse),      Attr(CKA_DERIVE, kFalse), Attr(CKA_ID, id),
                         Attr(CKA_LABEL, label)};
  return WithSession<std::string>("making a key", [&](CK_SESSION_HANDLE session) -> Result<std::string> {
    CK_OBJECT_HANDLE pub_handle = 0;
    CK_OBJECT_HANDLE priv_handle = 0;
    if (CK_RV rv = module_->f->C_GenerateKeyPair(session, &mechanism, pub.data(), pub.size(), priv, std::size(priv),
                                                 &pub_handle, &priv_handle);
        rv != CKR_OK) {
      return Failed(fmt::format("making a {} key", KeyTypeName(type)), rv);
    }
    return std::string(kRefPrefix) + HexEncode(id);
  });
}

Result<std::string> Pkcs11KeyBackend::Put(EVP_PKEY* key, std::string_view backend) {
  CF_RETURN_IF_ERROR(CheckBackend(backend));
  KeyValues values;
  CF_RETURN_IF_ERROR(ReadKeyValues(key, values));
  const std::string id = RandomBytes(kIdBytes);
  const std::string label = "certfleet-ca-" + HexEncode(id);
  CK_OBJECT_CLASS private_class = CKO_PRIVATE_KEY;
  CK_OBJECT_CLASS public_class = CKO_PUBLIC_KEY;
  std::vector<CK_ATTRIBUTE> priv = {Attr(CKA_CLASS, private_class),
                                    Attr(CKA_KEY_TYPE, values.type),
                                    Attr(CKA_TOKEN, kTrue),
                                    Attr(CKA_PRIVATE, kTrue),
                                    Attr(CKA_SENSITIVE, kTrue),
                                    Attr(CKA_EXTRACTABLE, kFalse),
                                    Attr(CKA_SIGN, kTrue),
                                    Attr(CKA_DECRYPT, kFalse),
                                    Attr(CKA_UNWRAP, kFalse),
                                    Attr(CKA_DERIVE, kFalse),
                                    Attr(CKA_ID, id),
                                    Attr(CKA_LABEL, label)};
  std::vector<CK_ATTRIBUTE> pub = {Attr(CKA_CLASS, public_class),
                                   Attr(CKA_KEY_TYPE, values.type),
                                   Attr(CKA_TOKEN, kTrue),
                                   Attr(CKA_VERIFY, kTrue),
                                   Attr(CKA_ID, id),
                                   Attr(CKA_LABEL, label)};
  for (const auto& [type, value] : values.private_values) priv.push_back(Attr(type, value));
  for (const auto& [type, value] : values.public_values) pub.push_back(Attr(type, value));
  return WithSession<std::string>("taking a key in", [&](CK_SESSION_HANDLE session) -> Result<std::string> {
    CK_OBJECT_HANDLE priv_handle = 0;
    CK_OBJECT_HANDLE pub_handle = 0;
    if (CK_RV rv = module_->f->C_CreateObject(session, priv.data(), priv.size(), &priv_handle); rv != CKR_OK) {
      return Failed("storing a private key", rv);
    }
    if (CK_RV rv = module_->f->C_CreateObject(session, pub.data(), pub.size(), &pub_handle); rv != CKR_OK) {
      module_->f->C_DestroyObject(session, priv_handle);
      return Failed("storing a public key", rv);
    }
    return std::string(kRefPrefix) + HexEncode(id);
  });
}

Result<std::shared_ptr<EVP_PKEY>> Pkcs11KeyBackend::Get(std::string_view ref) {
  {
    std::lock_guard lock(mu_);
    if (auto it = keys_.find(ref); it != keys_.end()) return it->second;
  }
  CF_ASSIGN_OR_RETURN(std::string id, IdOf(ref));
  KeyContext* ctx = nullptr;
  {
    std::lock_guard lock(mu_);
    auto& slot = contexts_[id];
    if (!slot) slot = std::make_unique<KeyContext>(KeyContext{this, id});
    ctx = slot.get();
  }
  CF_ASSIGN_OR_RETURN(PkeyPtr key,
                      WithSession<PkeyPtr>("reading a key", [&](CK_SESSION_HANDLE session) -> Result<PkeyPtr> {
                        CF_RETURN_IF_ERROR(PrivateHandle(session, id));
                        CF_ASSIGN_OR_RETURN(auto pub, RequireObject(session, id, CKO_PUBLIC_KEY));
                        CF_ASSIGN_OR_RETURN(std::string type, Attribute(session, pub, CKA_KEY_TYPE));
                        CK_KEY_TYPE key_type = CKK_EC;
                        if (type.size() != sizeof(key_type)) return MakeError(ErrorCode::kInternal, "bad CKA_KEY_TYPE");
                        std::memcpy(&key_type, type.data(), sizeof(key_type));
                        if (key_type == CKK_EC) {
                          CF_ASSIGN_OR_RETURN(std::string params, Attribute(session, pub, CKA_EC_PARAMS));
                          CF_ASSIGN_OR_RETURN(std::string point, Attribute(session, pub, CKA_EC_POINT));
                          return MakeEcKey(params, point, ctx);
                        }
                        if (key_type == CKK_RSA) {
                          CF_ASSIGN_OR_RETURN(std::string modulus, Attribute(session, pub, CKA_MODULUS));
                          CF_ASSIGN_OR_RETURN(std::string exponent, Attribute(session, pub, CKA_PUBLIC_EXPONENT));
                          return MakeRsaKey(modulus, exponent, ctx);
                        }
                        return MakeError(ErrorCode::kInternal, "the token's key is neither EC nor RSA");
                      }));
  std::shared_ptr<EVP_PKEY> shared(key.release(), EVP_PKEY_free);
  std::lock_guard lock(mu_);
  keys_.emplace(std::string(ref), shared);
  return shared;
}

Result<void> Pkcs11KeyBackend::Remove(std::string_view ref) {
  CF_ASSIGN_OR_RETURN(std::string id, IdOf(ref));
  {
    std::lock_guard lock(mu_);
    if (auto it = keys_.find(ref); it != keys_.end()) keys_.erase(it);
    private_handles_.erase(id);
  }
  return WithSession<void>("removing a key", [&](CK_SESSION_HANDLE session) -> Result<void> {
    for (CK_OBJECT_CLASS cls : {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY}) {
      CF_ASSIGN_OR_RETURN(auto object, FindObject(session, id, cls));
      if (!object) continue;  // gone already
      if (CK_RV rv = module_->f->C_DestroyObject(session, *object); rv != CKR_OK) return Failed("removing a key", rv);
    }
    return Ok();
  });
}

Result<std::string> Pkcs11KeyBackend::Sign(const std::string& id, unsigned long mechanism, std::string_view data) {
  return WithSession<std::string>("signing", [&](CK_SESSION_HANDLE session) -> Result<std::string> {
    CF_ASSIGN_OR_RETURN(unsigned long key, PrivateHandle(session, id));
    CK_MECHANISM m{mechanism, nullptr, 0};
    CK_FUNCTION_LIST_PTR f = module_->f;
    if (CK_RV rv = f->C_SignInit(session, &m, key); rv != CKR_OK) return Failed("signing", rv);
    std::string signature(kMaxSignature, '\0');
    CK_ULONG len = signature.size();
    if (CK_RV rv = f->C_Sign(session, reinterpret_cast<CK_BYTE_PTR>(const_cast<char*>(data.data())), data.size(),
                             reinterpret_cast<CK_BYTE_PTR>(signature.data()), &len);
        rv != CKR_OK) {
      return Failed("signing", rv);
    }
    signature.resize(len);
    return signature;
  });
}

}  // namespace certfleet::pki::pkcs11
