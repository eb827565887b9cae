#include "pki/ossl.h"

#include <openssl/err.h>

namespace certfleet::pki {

Error OpenSslError(std::string_view what, ErrorCode code) {
  std::string msg(what);
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
