#pragma once

#include <boost/json/value.hpp>
#include <string_view>

#include "core/result.h"

namespace certfleet {

// `text` as JSON, or a kInvalidArgument Error: "malformed JSON ...", or a key given twice in
// one object, which parsers read differently (the first or the last), so that what a
// reviewer or a proxy reads is what certfleet acts on. For whatever a client sends.
Result<boost::json::value> ParseJson(std::string_view text);

}  // namespace certfleet
