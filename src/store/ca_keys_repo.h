#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.h"
#include "store/store.h"

namespace certfleet::store {

// A CA key kept in the database: its reference ("db:…") and the sealed PKCS#8 PEM.
Result<void> InsertCaKey(Tx& tx, std::string_view ref, std::string_view key_sealed, int64_t now);
Result<std::optional<std::string>> FindCaKey(Tx& tx, std::string_view ref);  // the sealed key
Result<void> DeleteCaKey(Tx& tx, std::string_view ref);

// The CAs whose key reference starts with `prefix` ("file:"), as (fqdn, reference).
Result<std::vector<std::pair<std::string, std::string>>> CaKeyRefs(Tx& tx, std::string_view prefix);
// Points the CA at another reference of the same key; false if it did not have `from`.
Result<bool> MoveCaKeyRef(Tx& tx, std::string_view fqdn, std::string_view from, std::string_view to);

}  // namespace certfleet::store
