#pragma once

#include <string>

namespace certfleet::testing {

// A SoftHSM2 token made for one test: its own token folder and configuration (SOFTHSM2_CONF
// is set for this process), initialized by softhsm2-util with the label and PIN below.
struct SoftHsmToken {
  static constexpr const char* kModule = "/usr/lib/softhsm/libsofthsm2.so";
  static constexpr const char* kLabel = "certfleet-test";
  static constexpr const char* kPin = "4711-test-pin";
  std::string dir;        // holds softhsm2.conf, tokens/ and the PIN file
  std::string token_dir;  // SoftHSM's tokens/ folder
  std::string pin_file;   // the PIN, mode 0600
};
// Fails the calling test (ADD_FAILURE) and returns an empty dir if SoftHSM2 is not installed.
SoftHsmToken MakeSoftHsmToken();

}  // namespace certfleet::testing
