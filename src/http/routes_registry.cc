// The registry floor's routes: things, thing types, thing groups, policies and their links;
// the workflows add the kinds that are theirs (W2 provisioning templates, W3 profiles).
#include <fmt/format.h>

#include <boost/json.hpp>

#include "http/api.h"
#include "http/json.h"
#include "pki/certificate.h"
#include "registry/codec.h"
#include "registry/registry.h"

namespace certfleet::http {
namespace {

namespace json = boost::json;
using registry::Kind;

// A registry body: a policy document (20 KiB) or a template holding a few of them.
constexpr size_t kRegistryBodyLimit = size_t{1024} * 1024;
constexpr size_t kMaxQueryName = 253;

Result<Response> ObjectResponse(const Result<registry::Object>& r, int status = 200) {
  if (!r.ok()) return r.error();
  return JsonResponse(status, registry::ToJson(*r));
}

Result<Response> ListKind(const ApiContext& ctx, const RegistryKindRoute& k, const Request& req) {
  CF_ASSIGN_OR_RETURN(Page page, ParsePage(req));
  registry::ListFilter filter;
  filter.after = page.after;
  filter.limit = page.limit;
  if (!k.ref_filter.empty()) {
    CF_ASSIGN_OR_RETURN(filter.ref, QueryParam(req, k.ref_filter, kMaxQueryName));
  }
  if (k.kind == Kind::kThing) {
    CF_ASSIGN_OR_RETURN(filter.group, QueryParam(req, "group", kMaxQueryName));
  }
  CF_ASSIGN_OR_RETURN(auto objects, ctx.registry->List(k.kind, filter));
  json::array items;
  for (const auto& o : objects) items.push_back(registry::ToJson(o));
  auto next = NextCursor(objects.size(), filter.limit, [&] { return registry::NameOf(objects.back().body); });
  return JsonResponse(200, PageJson(std::move(items), next));
}

// PUT attaches, DELETE detaches: /v1/<from kind>/{from}/<to>/{to}.
void AddLinkRoutes(Router& router, const ApiContext* c, registry::Link link, const std::string& pattern) {
  // A certificate's serial in any spelling (as W1's routes take it), as the inventory keeps it.
  auto to = [link](const Request& r) -> std::string {
    const std::string& given = r.params.at("to");
    if (link == registry::Link::kGroupThing) return given;
    return pki::CanonicalSerial(given).value_or(given);
  };
  router.Add("PUT", pattern, {Access::kOperator}, [c, link, to](Request& r) -> Result<Response> {
    CF_RETURN_IF_ERROR(c->registry->Attach(link, r.params.at("from"), to(r), r.principal.Actor()));
    return JsonResponse(200, json::object{{"attached", true}});
  });
  router.Add("DELETE", pattern, {Access::kOperator}, [c, link, to](Request& r) -> Result<Response> {
    CF_RETURN_IF_ERROR(c->registry->Detach(link, r.params.at("from"), to(r), r.principal.Actor()));
    return Response{204, "application/json", "", {}};
  });
}

}  // namespace

void AddRegistryKindRoutes(Router& router, const ApiContext& ctx, const RegistryKindRoute& k) {
  const ApiContext* c = &ctx;
  const std::string base = fmt::format("/v1/{}", k.path);
  const RouteOptions write{Access::kOperator, false, kRegistryBodyLimit};
  router.Add("POST", base, write, [c, k](Request& r) -> Result<Response> {
    CF_ASSIGN_OR_RETURN(json::object body, ParseJsonObject(r.body));
    CF_ASSIGN_OR_RETURN(registry::Body parsed, registry::FromJson(k.kind, body));
    return ObjectResponse(c->registry->Create(parsed, r.principal.Actor()), 201);
  });
  router.Add("GET", base, {Access::kReader}, [c, k](Request& r) { return ListKind(*c, k, r); });
  router.Add("GET", base + "/{name}", {Access::kReader},
             [c, k](Request& r) { return ObjectResponse(c->registry->Get(k.kind, r.params.at("name"))); });
  router.Add("PUT", base + "/{name}", write, [c, k](Request& r) -> Result<Response> {
    CF_ASSIGN_OR_RETURN(json::object body, ParseJsonObject(r.body));
    auto merge = [&body](const registry::Body& current) { return registry::Merge(current, body); };
    return ObjectResponse(c->registry->Update(k.kind, r.params.at("name"), merge, r.principal.Actor()));
  });
  router.Add("DELETE", base + "/{name}", {Access::kOperator}, [c, k](Request& r) -> Result<Response> {
    CF_RETURN_IF_ERROR(c->registry->Delete(k.kind, r.params.at("name"), r.principal.Actor()));
    return Response{204, "application/json", "", {}};
  });
}

void AddRegistryRoutes(Router& router, const ApiContext& ctx) {
  for (const RegistryKindRoute& k :
       {RegistryKindRoute{Kind::kThing, "things", "thing_type"}, RegistryKindRoute{Kind::kThingType, "thing-types", ""},
        RegistryKindRoute{Kind::kThingGroup, "thing-groups", ""}, RegistryKindRoute{Kind::kPolicy, "policies", ""}}) {
    AddRegistryKindRoutes(router, ctx, k);
  }
  router.Add("GET", "/v1/registry/summary", {Access::kReader}, [c = &ctx](Request&) -> Result<Response> {
    CF_ASSIGN_OR_RETURN(store::RegistryCounts counts, c->registry->Summary());
    return JsonResponse(200, registry::SummaryJson(counts));
  });
  AddLinkRoutes(router, &ctx, registry::Link::kThingCertificate, "/v1/things/{from}/certificates/{to}");
  AddLinkRoutes(router, &ctx, registry::Link::kPolicyCertificate, "/v1/policies/{from}/certificates/{to}");
  AddLinkRoutes(router, &ctx, registry::Link::kGroupThing, "/v1/thing-groups/{from}/things/{to}");
}

}  // namespace certfleet::http
