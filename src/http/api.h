#pragma once

#include <boost/json/object.hpp>
#include <functional>
#include <string_view>

#include "core/clock.h"
#include "http/metrics.h"
#include "http/router.h"
#include "http/token_cache.h"
#include "http/token_service.h"
#include "store/store.h"

// The services behind the routes, declared only: each routes file includes the headers of
// its own workflow's services and no other's.
namespace certfleet::issuance {
class Issuer;
}
namespace certfleet::ca {
class CaService;
}
namespace certfleet::registry {
class Registry;
enum class Kind;
}  // namespace certfleet::registry
namespace certfleet::provision {
class DeviceRegistry;
class ProvisionService;
}  // namespace certfleet::provision
namespace certfleet::bulk {
class ImportService;
}
namespace certfleet::renewal {
class HostService;
class AgentService;
class RenewalService;
}  // namespace certfleet::renewal
namespace certfleet::distribution {
class DistributionService;
class SnsVerifier;
}  // namespace certfleet::distribution
namespace certfleet::acme {
class AcmeService;
}
namespace certfleet::enroll {
class EnrollService;
class CmpServer;
}  // namespace certfleet::enroll
namespace certfleet::broker {
class BrokerService;
}
namespace certfleet::events {
class WebhookDispatcher;
}  // namespace certfleet::events
namespace certfleet::store {
struct CertificateRecord;
}

namespace certfleet::http {

// What route handlers need from the rest of the process.
struct ApiContext {
  store::Store& store;
  const Clock& clock;
  Metrics& metrics;
  TokenCache& tokens;                        // the authenticator's; revoking a token clears it
  TokenService& api_tokens;                  // /v1/tokens
  std::function<bool()> draining = nullptr;  // true once the server is shutting down: /readyz answers 503
  issuance::Issuer* issuer = nullptr;        // W1 routes are added when set, with `ca`
  ca::CaService* ca = nullptr;
  distribution::DistributionService* distribution = nullptr;  // W5, with the one below
  distribution::SnsVerifier* sns = nullptr;
  registry::Registry* registry = nullptr;        // the registry routes are added when set
  provision::DeviceRegistry* devices = nullptr;  // W2, with the one below
  provision::ProvisionService* provision = nullptr;
  bulk::ImportService* imports = nullptr;  // W3
  renewal::HostService* hosts = nullptr;   // W4, with the one below
  renewal::AgentService* agents = nullptr;
  renewal::RenewalService* renewals = nullptr;    // W4's renewal workflow and the agent's tasks
  acme::AcmeService* acme = nullptr;              // ACME, served when acme.ca is set
  enroll::EnrollService* enroll = nullptr;        // EST and the enrollment profiles, secrets and requests
  enroll::CmpServer* cmp = nullptr;               // lightweight CMP, with `enroll`
  broker::BrokerService* broker = nullptr;        // broker enforcement: the snapshot, EMQX's hooks
  events::WebhookDispatcher* webhooks = nullptr;  // its URLs' state in /metrics, when webhooks.urls is set
};

// Bearer tokens checked against the store's api_tokens table, remembered in `cache`.
Authenticator MakeStoreAuthenticator(store::Store& store, const Clock& clock, TokenCache& cache);

// /healthz, /readyz, /metrics, /v1/audit, /v1/jobs, /v1/tokens.
void AddSystemRoutes(Router& router, const ApiContext& ctx);

// ACME (RFC 8555), being built: /acme/{profile}/directory, new-nonce, new-account, account/{id}.
void AddAcmeRoutes(Router& router, const ApiContext& ctx);

// EST (/.well-known/est/...), CMP (/.well-known/cmp/p/{label}) and /v1/enrollment/profiles,
// secrets and requests.
void AddEnrollRoutes(Router& router, const ApiContext& ctx);

// Brokers: /v1/broker/snapshot, /v1/broker/emqx/authn and authz, /v1/policies/evaluate.
void AddBrokerRoutes(Router& router, const ApiContext& ctx);

// W1: /v1/certificates (and the seed's /certificates), /crl, /ocsp.
void AddCaRoutes(Router& router, const ApiContext& ctx);

// The registry: /v1/things, /v1/thing-types, /v1/thing-groups, /v1/policies and their links.
void AddRegistryRoutes(Router& router, const ApiContext& ctx);
// A kind of registry object a workflow owns, served at /v1/<path> (create, list, get,
// replace, delete); `ref_filter` names the list's query parameter that filters by its ref.
struct RegistryKindRoute {
  registry::Kind kind;
  std::string_view path;
  std::string_view ref_filter;
};
void AddRegistryKindRoutes(Router& router, const ApiContext& ctx, const RegistryKindRoute& route);

// W2: /v1/devices, /v1/provision, /v1/provisioning-templates and /v1/cas/{fqdn}/rotate.
void AddProvisionRoutes(Router& router, const ApiContext& ctx);

// W3: /v1/imports and /v1/profiles.
void AddBulkRoutes(Router& router, const ApiContext& ctx);

// W4: /v1/hosts and the agent protocol (/v1/agent/...).
void AddRenewalRoutes(Router& router, const ApiContext& ctx);

// A certificate's inventory record as the API shows it.
boost::json::object CertificateJson(const store::CertificateRecord& c);

// W5: /v1/distribution/... (events, run, warehouses, status, deliveries) and its metrics.
void AddDistributionRoutes(Router& router, const ApiContext& ctx);

}  // namespace certfleet::http
