#include "testing/softhsm.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "testing/db.h"

namespace certfleet::testing {

SoftHsmToken MakeSoftHsmToken() {
  SoftHsmToken t;
  if (!std::filesystem::exists(SoftHsmToken::kModule)) {
    ADD_FAILURE() << "SoftHSM2 is not installed (" << SoftHsmToken::kModule << "): run scripts/install-deps";
    return t;
  }
  t.dir = TempDir();
  t.token_dir = t.dir + "/tokens";
  std::filesystem::create_directories(t.token_dir);
  const std::string conf = t.dir + "/softhsm2.conf";
  std::ofstream(conf) << "directories.tokendir = " << t.token_dir
                      << "\nobjectstore.backend = file\nlog.level = ERROR\n";
  setenv("SOFTHSM2_CONF", conf.c_str(), 1);
  const std::string init = std::string("softhsm2-util --init-token --free --label ") + SoftHsmToken::kLabel +
                           " --pin " + SoftHsmToken::kPin + " --so-pin 0000-so-pin >/dev/null";
  if (std::system(init.c_str()) != 0) ADD_FAILURE() << "softhsm2-util --init-token failed";
  t.pin_file = t.dir + "/pin";
  std::ofstream(t.pin_file) << SoftHsmToken::kPin << "\n";
  chmod(t.pin_file.c_str(), 0600);
  return t;
}

}  // namespace certfleet::testing
