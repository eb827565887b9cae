#include "core/thread_name.h"

#include <pthread.h>

#include <string>

namespace certfleet {

void NameThisThread(std::string_view name) {
  // The kernel's limit: 16 bytes with the terminating NUL.
  constexpr size_t kMaxNameBytes = 15;
  const std::string truncated(name.substr(0, kMaxNameBytes));
  pthread_setname_np(pthread_self(), truncated.c_str());
}

}  // namespace certfleet
