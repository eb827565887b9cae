#pragma once

#include <memory>
#include <string>

#include "store/store.h"

namespace certfleet::store::postgres {

// The distributed store: PostgreSQL through libpq, a pool of connections, prepared
// statements cached per connection, leader leases as session advisory locks.
Result<std::unique_ptr<Store>> OpenPgStore(const std::string& url, const Store::Options& options);

// `?` placeholders to `$1..$n`, leaving quoted text alone.
std::string ToPgPlaceholders(std::string_view sql);

}  // namespace certfleet::store::postgres
