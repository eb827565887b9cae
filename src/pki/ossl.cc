#include "pki/ossl.h"

#include <openssl/err.h>

#include <utility>

#include "pki/key_backend.h"

namespace certfleet::pki {
namespace {

// Set by a key backend's signing callback, taken by the OpenSslError that reports the failure.
thread_local std::string key_unavailable;

}  // namespace

void NoteKeyUnavailable(std::string why) { key_unavailable = std::move(why); }

Error OpenSslError(std::string_view what, ErrorCode code) {
  std::string msg(what);
  if (!key_unavailable.empty()) {
    ERR_clear_error();
    msg += ": " + std::exchange(key_unavailable, {});
    return Error{ErrorCode::kUnavailable, msg};
  }
  bool first = true;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    msg += first ? ": " : "; ";
    msg += buf;
    first = false;
  }
  return Error{code, msg};
}

std::string BioToString(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

}  // namespace certfleet::pki
