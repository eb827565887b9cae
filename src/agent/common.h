#pragma once

#include <openssl/evp.h>

#include <boost/json/object.hpp>
#include <string>
#include <string_view>

#include "agent/client.h"
#include "core/result.h"

namespace certfleet::agent {

// The string `key` of a server's answer; kUnavailable when it is missing.
Result<std::string> Field(const boost::json::object& o, std::string_view key);
// The answer's JSON object; kUnavailable when it is not one.
Result<boost::json::object> JsonAnswer(const HttpResponse& r, std::string_view what);
// An issued certificate is for `key` and verifies through `chain_pem` to its root.
Result<void> CheckIssued(const std::string& cert_pem, const std::string& chain_pem, EVP_PKEY* key);

}  // namespace certfleet::agent
