#pragma once

// The JSON form of the registry's objects: the API's bodies and answers, and what the store
// keeps. One form for both: an object read back is the object written.
#include <boost/json/object.hpp>

#include "core/result.h"
#include "registry/objects.h"
#include "store/registry_repo.h"

namespace certfleet::registry {

// The body of `kind` that `json` describes ({"name": ..., fields}). A field of the wrong JSON
// type is kInvalidArgument naming it; fields the kind does not have are ignored (so that an
// object read can be written back as it is). Content rules are Check's (objects.h).
Result<Body> FromJson(Kind kind, const boost::json::object& json);

// The body's fields and name.
boost::json::object ToJson(const Body& body);
// The API's view: the body's JSON with created_at and updated_at, and a thing's detail
// (thing_groups, certificates, effective_policies) when it has one.
boost::json::object ToJson(const Object& object);

// The registry's summary: a count per kind (every kind named, 0 when none) and the
// certificates attached to things by source and status.
boost::json::object SummaryJson(const store::RegistryCounts& counts);

// `current` with the fields `changes` gives replaced; a `name` in `changes` must be the
// object's (kInvalidArgument otherwise).
Result<Body> Merge(const Body& current, const boost::json::object& changes);

}  // namespace certfleet::registry
