#include "server/server.h"

#include <fmt/format.h>
#include <unistd.h>

#include "acme/setup.h"
#include "blob/blob_store.h"
#include "blob/setup.h"
#include "broker/setup.h"
#include "bulk/setup.h"
#include "ca/ca_service.h"
#include "core/files.h"
#include "core/log.h"
#include "distribution/setup.h"
#include "enroll/setup.h"
#include "events/setup.h"
#include "http/api.h"
#include "http/server.h"
#include "http/setup.h"
#include "issuance/setup.h"
#include "jobs/housekeeping.h"
#include "jobs/setup.h"
#include "mail/mailer.h"
#include "mail/setup.h"
#include "pki/file/file_key_backend.h"
#include "pki/setup.h"
#include "provision/device_registry.h"
#include "provision/setup.h"
#include "registry/registry.h"
#include "renewal/setup.h"
#include "store/migrations.h"
#include "store/setup.h"

namespace certfleet::server {
namespace {

// How often the scheduler checks for due firings; cron has minute resolution.
constexpr std::chrono::seconds kSchedulerTick{10};

std::string NodeId() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return fmt::format("{}:{}", host, getpid());
}

template <typename T>
Result<T> Named(Result<T> r, std::string_view what) {
  if (!r.ok()) return r.error().Wrap(what);
  return r;
}

}  // namespace

std::vector<ConfigKey> ConfigKeys() {
  std::vector<ConfigKey> out;
  for (std::span<const ConfigKey> keys :
       {Config::CoreKeys(), store::ConfigKeys(), pki::ConfigKeys(), blob::ConfigKeys(), mail::ConfigKeys(),
        http::ConfigKeys(), jobs::ConfigKeys(), events::ConfigKeys(), issuance::ConfigKeys(), provision::ConfigKeys(),
        bulk::ConfigKeys(), renewal::ConfigKeys(), distribution::ConfigKeys(), acme::ConfigKeys(), enroll::ConfigKeys(),
        broker::ConfigKeys()}) {
    out.insert(out.end(), keys.begin(), keys.end());
  }
  return out;
}

Result<std::unique_ptr<store::Store>> OpenStore(const Config& config) {
  store::Store::Options options;
  options.pool_size = static_cast<int>(config.GetInt("db_pool_size"));
  CF_ASSIGN_OR_RETURN(auto st, store::Store::Open(config.Get("db"), options));
  CF_RETURN_IF_ERROR(store::Migrate(*st));
  return st;
}

Result<void> Run(const Config& config, const Clock& clock) {
  // The floors.
  CF_ASSIGN_OR_RETURN(auto st, Named(OpenStore(config), "opening the store"));
  store::Store& store = *st;
  CF_ASSIGN_OR_RETURN(std::string master_key,
                      Named(pki::file::LoadMasterKey(config.Get("master_key"), config.Get("master_key_file"), false),
                            "reading the master key"));
  CF_ASSIGN_OR_RETURN(auto key_backends, Named(issuance::OpenKeyBackends(config, master_key, store, clock),
                                               "opening the CA key backends"));
  pki::KeyBackend& keys = *key_backends;
  const blob::S3Credentials s3 = blob::S3CredentialsFrom(config);
  CF_ASSIGN_OR_RETURN(auto published, Named(blob::OpenBlobStore(config.Get("blobs"), s3), "blobs"));
  CF_ASSIGN_OR_RETURN(auto mailer, Named(mail::OpenMailer(config.Get("mail"), clock), "mail"));

  // The HTTPS server listens first: its port is in the URLs the CA puts in certificates.
  http::Metrics metrics;
  http::TokenCache tokens(config.GetInt("auth.token_cache_ms"));
  http::Router router(http::MakeStoreAuthenticator(store, clock, tokens));
  http::TokenService api_tokens(store, clock);
  http::ServerOptions server_options = http::ServerOptionsFrom(config);
  // Agents' CAs change while serving (PUT /v1/renewal/settings): the renewal service keeps them.
  auto agent_trust = std::make_shared<http::ClientTrust>();
  server_options.client_trust = agent_trust;
  http::Server server(router, metrics, server_options);
  CF_RETURN_IF_ERROR(Named(server.Listen(), "starting the HTTPS server"));
  const std::string listen = server_options.listen;
  const std::string url = fmt::format("https://{}:{}", listen.substr(0, listen.rfind(':')), server.port());

  // The shared floors and the workflows.
  CF_ASSIGN_OR_RETURN(const issuance::Issuer::Options issuer_options, issuance::IssuerOptions(config, url));
  issuance::Issuer issuer(store, keys, clock, issuer_options);
  registry::Registry registry(store, clock);
  ca::CaService ca(issuer, clock, {std::chrono::hours(config.GetInt("ca.renew_grace_hours"))});
  provision::DeviceRegistry devices(store, clock);
  provision::ProvisionService::Options provision_options =
      provision::ProvisionOptions(config, issuer_options.public_url, master_key);
  provision_options.post = [&server](std::function<void()> fn) { server.Post(std::move(fn)); };
  provision::ProvisionService provision(store, issuer, registry, clock, provision_options);
  enroll::EnrollService enrollment(store, issuer, registry, clock,
                                   enroll::EnrollOptions(config, master_key, provision_options.supersede_grace));
  // CMP signs its answers to signed requests with the server's TLS identity.
  CF_ASSIGN_OR_RETURN(auto cmp, Named(enroll::MakeCmpServer(config, enrollment, store, clock,
                                                            server_options.tls_cert_file, server_options.tls_key_file),
                                      "CMP"));
  CF_ASSIGN_OR_RETURN(auto import_options, Named(bulk::ImportOptions(config), "bulk.verifier_dir"));
  CF_ASSIGN_OR_RETURN(const bool manifests_in_blobs, bulk::ManifestsInBlobs(config, store.dialect()));
  bulk::ImportService imports(store, clock, import_options, manifests_in_blobs ? published.get() : nullptr);
  CF_ASSIGN_OR_RETURN(auto bulk_inbound, Named(blob::OpenBlobStore(config.Get("bulk.inbound"), s3), "bulk.inbound"));
  CF_ASSIGN_OR_RETURN(auto host_options, Named(renewal::HostOptions(config), "renewal settings"));
  renewal::HostService hosts(store, clock, host_options);
  renewal::AgentService agents(store, hosts, issuer, clock, renewal::AgentOptions(config));
  CF_ASSIGN_OR_RETURN(auto renewal_options, Named(renewal::RenewalOptions(config), "renewal settings"));
  renewal::RenewalService renewals(store, hosts, agents, mailer.get(), clock, renewal_options);
  CF_RETURN_IF_ERROR(
      Named(renewals.TrustAgentsThrough([agent_trust](const std::string& pem) { return agent_trust->Set(pem); }),
            "trusting agents' CAs"));
  CF_ASSIGN_OR_RETURN(auto dist_inbound,
                      Named(blob::OpenBlobStore(config.Get("distribution.inbound"), s3), "distribution.inbound"));
  distribution::DistributionService distribution(store, *dist_inbound, *mailer, clock,
                                                 distribution::DistributionOptions(config, master_key));
  distribution::SnsVerifier sns(clock, distribution::SnsOptions(config));
  CF_ASSIGN_OR_RETURN(auto webhook_options, Named(events::WebhookOptions(config), "webhooks"));
  events::WebhookDispatcher webhooks(store, clock, webhook_options);

  acme::AcmeService::Options acme_options = acme::AcmeOptions(config, issuer_options.public_url, master_key);
  acme_options.post = [&server](std::function<void()> fn) { server.Post(std::move(fn)); };
  acme_options.post_after = [&server](std::chrono::milliseconds delay, std::function<void()> fn) {
    server.PostAfter(delay, std::move(fn));
  };
  CF_ASSIGN_OR_RETURN(const acme::Validator acme_validator,
                      Named(acme::Validator::Make(acme_options.validation), "ACME validation"));
  acme::AcmeService acme(store, issuer, acme_validator, clock, acme_options);

  // Routes.
  http::ApiContext api{store, clock, metrics, tokens, api_tokens};
  api.draining = [&server] { return server.Draining(); };
  api.acme = &acme;
  api.enroll = &enrollment;
  api.cmp = cmp.get();
  broker::BrokerService broker(store, clock, broker::BrokerOptions(config));
  api.broker = &broker;
  api.issuer = &issuer;
  api.ca = &ca;
  api.registry = &registry;
  api.devices = &devices;
  api.provision = &provision;
  api.imports = &imports;
  api.hosts = &hosts;
  api.agents = &agents;
  api.renewals = &renewals;
  api.distribution = &distribution;
  api.sns = &sns;
  if (!webhook_options.urls.empty()) api.webhooks = &webhooks;
  http::AddSystemRoutes(router, api);
  http::AddRegistryRoutes(router, api);
  http::AddCaRoutes(router, api);
  http::AddAcmeRoutes(router, api);
  http::AddEnrollRoutes(router, api);
  http::AddBrokerRoutes(router, api);
  http::AddProvisionRoutes(router, api);
  http::AddBulkRoutes(router, api);
  http::AddRenewalRoutes(router, api);
  http::AddDistributionRoutes(router, api);

  // Jobs and schedules: each module registers its own.
  const jobs::WorkerPool::Options pool_options = jobs::PoolOptions(config, NodeId());
  jobs::WorkerPool pool(store, clock, pool_options);
  jobs::Scheduler scheduler(store, clock);
  CF_RETURN_IF_ERROR(Named(
      jobs::AddHousekeeping(pool, scheduler, store, clock, static_cast<int>(config.GetInt("jobs.retention_days"))),
      "housekeeping"));
  CF_RETURN_IF_ERROR(Named(issuance::RegisterJobs(pool, scheduler, issuer, *published), "CRL jobs"));
  CF_RETURN_IF_ERROR(Named(provision::RegisterJobs(pool, scheduler, provision), "provisioning jobs"));
  CF_RETURN_IF_ERROR(Named(bulk::RegisterJobs(pool, scheduler, imports, *bulk_inbound, config), "import jobs"));
  CF_RETURN_IF_ERROR(Named(renewal::RegisterJobs(pool, scheduler, renewals, config), "renewal jobs"));
  CF_RETURN_IF_ERROR(Named(distribution::RegisterJobs(pool, scheduler, distribution, config), "distribution jobs"));
  CF_RETURN_IF_ERROR(Named(events::RegisterJobs(pool, scheduler, webhooks, config), "webhooks"));
  CF_RETURN_IF_ERROR(Named(acme::RegisterJobs(pool, scheduler, acme, config), "ACME jobs"));
  CF_RETURN_IF_ERROR(Named(enroll::RegisterJobs(pool, scheduler, enrollment, config), "enrollment jobs"));

  pool.Start();
  scheduler.Start(kSchedulerTick);
  renewals.Start();
  log::Info("listening", {{"url", url},
                          {"port", server.port()},
                          {"node", pool_options.node_id},
                          {"db", MaskUrlCredentials(config.Get("db"))}});
  if (server.http_port() != 0)
    log::Info("listening on plain HTTP for CRLs, OCSP and CMP", {{"port", server.http_port()}});
  server.Run();
  renewals.Stop();
  scheduler.Stop();
  // Writes still queued by requests the shutdown's grace cut short (an ACME challenge's hands
  // its validation to the pool) finish while what they use is there.
  issuer.Committer().Drain();
  pool.Stop();
  log::Info("stopped");
  return Ok();
}

}  // namespace certfleet::server
