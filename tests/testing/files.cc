#include "testing/files.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace certfleet::testing {

std::string ThingpressFixture(const std::string& name) {
  const char* src = std::getenv("CERTFLEET_SOURCE_DIR");
  return (std::filesystem::path(src ? src : ".") / ".." / "shared" / "fixtures" / "thingpress" / name).string();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace certfleet::testing
