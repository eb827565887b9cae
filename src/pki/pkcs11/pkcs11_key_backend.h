#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "pki/key_backend.h"

namespace certfleet::pki::pkcs11 {

struct KeyContext;  // what the OpenSSL keys made by Get sign through

// Where the token is and how to log in to it.
struct Options {
  std::string module;        // the PKCS#11 module to load (a .so path)
  std::string token_label;   // the token that holds certfleet's CA keys
  std::string pin;           // its user PIN (from pkcs11.pin_file; never logged)
  size_t max_sessions = 32;  // sessions opened at most (fewer if the token says so)
};

// CA keys on a PKCS#11 token: made on it (sensitive, never extractable), signed with through
// it. References read "pkcs11:<CKA_ID in hex>"; a key's private and public objects share the
// id and are labelled "certfleet-ca-<id>". The module is used through its C API (dlopen), and
// OpenSSL signs through the token by keys whose RSA/EC methods call C_Sign.
//
// A token that fails (removed, session lost, module error) makes the failing call and
// signatures kUnavailable; the next call logs in afresh (C_Finalize, C_Initialize, find the
// token, C_Login), so service recovers by itself when the token is back. Thread-safe:
// sessions come from a pool, one operation each at a time.
class Pkcs11KeyBackend final : public KeyBackend {
 public:
  // Loads the module, finds the token by label and logs in: kFailedPrecondition saying which
  // of these failed (no such module, no such token, wrong PIN).
  static Result<std::unique_ptr<Pkcs11KeyBackend>> Open(Options options);
  ~Pkcs11KeyBackend() override;
  Pkcs11KeyBackend(const Pkcs11KeyBackend&) = delete;
  Pkcs11KeyBackend& operator=(const Pkcs11KeyBackend&) = delete;

  // EC P-256/P-384 and RSA 2048/3072/4096; `backend` is empty or "pkcs11".
  Result<std::string> Generate(KeyType type, std::string_view backend) override;
  // Writes the key onto the token as a sensitive, non-extractable object.
  Result<std::string> Put(EVP_PKEY* key, std::string_view backend) override;
  Result<std::shared_ptr<EVP_PKEY>> Get(std::string_view ref) override;
  Result<void> Remove(std::string_view ref) override;

  // The signature of `data` by the private key with CKA_ID `id` (mechanism CKM_ECDSA over a
  // digest, or CKM_RSA_PKCS over a DigestInfo). Called by the keys Get returns.
  Result<std::string> Sign(const std::string& id, unsigned long mechanism, std::string_view data);
  // Sessions open now (idle or in use).
  size_t OpenSessions();

 private:
  struct Module;
  explicit Pkcs11KeyBackend(Options options, std::unique_ptr<Module> module);

  // Logs in when not connected or after a failure; called with conn_mu_ held exclusively.
  Result<void> ConnectLocked();
  void DisconnectLocked();
  // Runs `op` on a pooled session: Result<T> op(unsigned long session); once more on another
  // if its session was lost.
  template <typename T, typename Op>
  Result<T> WithSession(std::string_view what, Op op);
  // An idle session, or a new one while fewer than max_sessions_ are open, or the first to be
  // given back within kSessionWait; called with conn_mu_ shared.
  Result<unsigned long> TakeSession(std::string_view what);
  // A failed PKCS#11 call: kUnavailable naming `what` and the return value; the token is
  // logged in to afresh before the next call.
  Error Failed(std::string_view what, unsigned long rv);
  // The object of `object_class` with CKA_ID `id`; nullopt if the token has none.
  Result<std::optional<unsigned long>> FindObject(unsigned long session, const std::string& id,
                                                  unsigned long object_class);
  // The same, kUnavailable naming the key when it is not there.
  Result<unsigned long> RequireObject(unsigned long session, const std::string& id, unsigned long object_class);
  Result<unsigned long> PrivateHandle(unsigned long session, const std::string& id);
  Result<std::string> Attribute(unsigned long session, unsigned long object, unsigned long type);

  Options options_;  // its PIN is cleansed when the backend goes
  const std::unique_ptr<Module> module_;
  // Shared by operations; exclusive while logging in or out, which invalidates every session.
  std::shared_mutex conn_mu_;
  bool connected_ = false;
  std::string login_refused_;  // set when the token refused the PIN: no more tries until restart
  std::atomic<bool> broken_{false};
  unsigned long slot_ = 0;
  std::mutex mu_;                         // guards what follows
  std::condition_variable session_free_;  // a session was given back (or dropped)
  std::vector<unsigned long> idle_sessions_;
  size_t open_sessions_ = 0;  // idle or in use
  size_t max_sessions_ = 1;
  std::map<std::string, unsigned long, std::less<>> private_handles_;  // by CKA_ID, valid until logged out
  std::map<std::string, std::shared_ptr<EVP_PKEY>, std::less<>> keys_;
  std::map<std::string, std::unique_ptr<KeyContext>, std::less<>> contexts_;  // what keys_' callbacks point at
};

}  // namespace certfleet::pki::pkcs11
