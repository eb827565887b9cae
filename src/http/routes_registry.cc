// The registry floor's routes: things, thing types, thing groups, policies and their links;
// the workflows add the kinds that are theirs (W2 provisioning templates, W3 profiles).
#include <fmt/format.h>

#include <boost/json.hpp>

#include "http/api.h"
#include "http/json.h"
#include "registry/registry.h"
#include "store/registry_repo.h"

namespace certfleet::http {
namespace {

namespace json = boost::json;
using registry::Kind;

// A registry body: a policy document (20 KiB) or a template holding a few of them.
constexpr size_t kRegistryBodyLimit = size_t{1024} * 1024;
constexpr size_t kMaxQueryName = 253;

Response ObjectResponse(Result<json::object> r, const Request& req, int status = 200) {
  if (!r.ok()) return Fail(req, r.error());
  return JsonResponse(status, *r);
}

Response ListKind(const ApiContext& ctx, const RegistryKindRoute& k, const Request& req) {
  auto page = ParsePage(req);
  if (!page.ok()) return Fail(req, page.error());
  registry::ListFilter filter;
  filter.after = page->after;
  filter.limit = page->limit;
  if (!k.ref_filter.empty()) {
    auto ref = QueryParam(req, k.ref_filter, kMaxQueryName);
    if (!ref.ok()) return Fail(req, ref.error());
    filter.ref = *ref;
  }
  if (k.kind == Kind::kThing) {
    auto group = QueryParam(req, "group", kMaxQueryName);
    if (!group.ok()) return Fail(req, group.error());
    filter.group = *group;
  }
  auto rows = ctx.registry->List(k.kind, filter);
  if (!rows.ok()) return Fail(req, rows.error());
  json::array items(rows->begin(), rows->end());
  auto next = NextCursor(rows->size(), filter.limit, [&] { return std::string(rows->back().at("name").as_string()); });
  return JsonResponse(200, PageJson(std::move(items), next));
}

// PUT attaches, DELETE detaches: /v1/<from kind>/{from}/<to>/{to}.
void AddLinkRoutes(Router& router, const ApiContext* c, std::string_view link, const std::string& pattern) {
  router.Add("PUT", pattern, {Access::kOperator}, [c, link](Request& r) {
    auto done = c->registry->Attach(link, r.params.at("from"), r.params.at("to"), r.principal.Actor());
    if (!done.ok()) return Fail(r, done.error());
    return JsonResponse(200, json::object{{"attached", true}});
  });
  router.Add("DELETE", pattern, {Access::kOperator}, [c, link](Request& r) {
    auto done = c->registry->Detach(link, r.params.at("from"), r.params.at("to"), r.principal.Actor());
    if (!done.ok()) return Fail(r, done.error());
    return Response{204, "application/json", "", {}};
  });
}

}  // namespace

void AddRegistryKindRoutes(Router& router, const ApiContext& ctx, const RegistryKindRoute& k) {
  const ApiContext* c = &ctx;
  const std::string base = fmt::format("/v1/{}", k.path);
  const RouteOptions write{Access::kOperator, false, kRegistryBodyLimit};
  router.Add("POST", base, write, [c, k](Request& r) {
    auto body = ParseJsonObject(r.body);
    if (!body.ok()) return Fail(r, body.error());
    return ObjectResponse(c->registry->Create(k.kind, *body, r.principal.Actor()), r, 201);
  });
  router.Add("GET", base, {Access::kReader}, [c, k](Request& r) { return ListKind(*c, k, r); });
  router.Add("GET", base + "/{name}", {Access::kReader},
             [c, k](Request& r) { return ObjectResponse(c->registry->Get(k.kind, r.params.at("name")), r); });
  router.Add("PUT", base + "/{name}", write, [c, k](Request& r) {
    auto body = ParseJsonObject(r.body);
    if (!body.ok()) return Fail(r, body.error());
    return ObjectResponse(c->registry->Update(k.kind, r.params.at("name"), *body, r.principal.Actor()), r);
  });
  router.Add("DELETE", base + "/{name}", {Access::kOperator}, [c, k](Request& r) {
    auto done = c->registry->Delete(k.kind, r.params.at("name"), r.principal.Actor());
    if (!done.ok()) return Fail(r, done.error());
    return Response{204, "application/json", "", {}};
  });
}

void AddRegistryRoutes(Router& router, const ApiContext& ctx) {
  for (const RegistryKindRoute& k :
       {RegistryKindRoute{Kind::kThing, "things", "thing_type"}, RegistryKindRoute{Kind::kThingType, "thing-types", ""},
        RegistryKindRoute{Kind::kThingGroup, "thing-groups", ""}, RegistryKindRoute{Kind::kPolicy, "policies", ""}}) {
    AddRegistryKindRoutes(router, ctx, k);
  }
  AddLinkRoutes(router, &ctx, store::kThingCertificate, "/v1/things/{from}/certificates/{to}");
  AddLinkRoutes(router, &ctx, store::kPolicyCertificate, "/v1/policies/{from}/certificates/{to}");
  AddLinkRoutes(router, &ctx, store::kGroupThing, "/v1/thing-groups/{from}/things/{to}");
}

}  // namespace certfleet::http
