#pragma once

#include <string_view>

namespace certfleet {

// Names the calling thread as `top -H`, `ps -L` and debuggers show it; Linux keeps the first
// 15 bytes. Naming is best effort: a failure changes nothing else.
void NameThisThread(std::string_view name);

}  // namespace certfleet
