#pragma once

#include <string>

namespace certfleet::testing {

// A file of ../shared/fixtures/thingpress (beside the source tree, $CERTFLEET_SOURCE_DIR).
std::string ThingpressFixture(const std::string& name);
// A whole file's bytes; "" if it cannot be read.
std::string ReadFile(const std::string& path);

}  // namespace certfleet::testing
