#pragma once

// The registry as the API drives it: JSON bodies in, JSON views out (registry/codec.h), so
// that tests read as requests do.
#include <boost/json.hpp>

#include "registry/codec.h"
#include "registry/registry.h"

namespace certfleet::testing {

inline Result<boost::json::object> CreateJson(registry::Registry& r, registry::Kind kind,
                                              const boost::json::value& body, std::string_view actor = "t") {
  CF_ASSIGN_OR_RETURN(registry::Body parsed, registry::FromJson(kind, body.as_object()));
  CF_ASSIGN_OR_RETURN(registry::Object made, r.Create(parsed, actor));
  return registry::ToJson(made);
}

inline Result<boost::json::object> GetJson(registry::Registry& r, registry::Kind kind, std::string_view name) {
  CF_ASSIGN_OR_RETURN(registry::Object found, r.Get(kind, name));
  return registry::ToJson(found);
}

inline Result<boost::json::object> UpdateJson(registry::Registry& r, registry::Kind kind, std::string_view name,
                                              const boost::json::object& changes, std::string_view actor = "t") {
  auto merge = [&changes](const registry::Body& current) { return registry::Merge(current, changes); };
  CF_ASSIGN_OR_RETURN(registry::Object updated, r.Update(kind, name, merge, actor));
  return registry::ToJson(updated);
}

}  // namespace certfleet::testing
