#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <iostream>
#include <thread>

#include "ca/ca_service.h"
#include "cli/commands.h"
#include "core/crypto.h"
#include "core/files.h"
#include "core/log.h"
#include "distribution/distribution_service.h"
#include "events/webhooks.h"
#include "http/api.h"
#include "http/server.h"
#include "issuance/issuer.h"
#include "jobs/housekeeping.h"
#include "jobs/scheduler.h"
#include "jobs/worker_pool.h"
#include "pki/file/file_key_backend.h"

namespace certfleet::cli {
namespace {

// How often the scheduler checks for due firings; cron has minute resolution.
constexpr std::chrono::seconds kSchedulerTick{10};
// CRLs are re-signed once half their validity has passed; checking this often keeps them fresh.
constexpr std::string_view kCrlRefreshSchedule = "@every 15m";
// Superseded device certificates are revoked within this of their grace period's end.
constexpr std::string_view kSupersededSchedule = "@every 1m";

std::string NodeId() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return fmt::format("{}:{}", host, getpid());
}

// A field of a job's JSON payload; kInvalidArgument (the job is dead at once) when it is
// missing or of another type.
Result<boost::json::value> PayloadField(const jobs::JobContext& job, std::string_view key) {
  boost::system::error_code ec;
  boost::json::value payload = boost::json::parse(job.job().payload, ec);
  const boost::json::value* v = !ec && payload.is_object() ? payload.get_object().if_contains(key) : nullptr;
  if (v == nullptr) return MakeError(ErrorCode::kInvalidArgument, fmt::format("no {} in the job", key));
  return *v;
}

Result<int64_t> PayloadInt(const jobs::JobContext& job, std::string_view key) {
  CF_ASSIGN_OR_RETURN(boost::json::value v, PayloadField(job, key));
  if (!v.is_int64()) return MakeError(ErrorCode::kInvalidArgument, fmt::format("{} of the job is not a number", key));
  return v.get_int64();
}

Result<std::string> PayloadString(const jobs::JobContext& job, std::string_view key) {
  CF_ASSIGN_OR_RETURN(boost::json::value v, PayloadField(job, key));
  if (!v.is_string()) return MakeError(ErrorCode::kInvalidArgument, fmt::format("{} of the job is not text", key));
  return std::string(v.get_string());
}

distribution::DistributionService::Options DistributionOptions(const Config& config) {
  distribution::DistributionService::Options o;
  o.prefix = config.Get("distribution.prefix");
  o.work_dir = config.Get("distribution.work_dir");
  o.sender = config.Get("distribution.sender");
  o.default_recipient = config.Get("distribution.default_recipient");
  o.operators = config.Get("distribution.operators");
  o.download_workers = static_cast<int>(config.GetInt("distribution.download_workers"));
  o.zip_max_bytes = static_cast<uint64_t>(config.GetInt("distribution.zip_max_bytes"));
  o.mail_max_bytes = static_cast<uint64_t>(config.GetInt("distribution.mail_max_bytes"));
  o.max_attempts = static_cast<int>(config.GetInt("distribution.max_attempts"));
  o.send_tries = static_cast<int>(config.GetInt("distribution.send_tries"));
  o.send_backoff = std::chrono::milliseconds(config.GetInt("distribution.send_backoff_ms"));
  return o;
}

// W5's jobs: scan the inbound store, mail what is pending, and both on demand.
Result<void> AddDistributionJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler,
                                 distribution::DistributionService& dist, const Config& config) {
  using distribution::DistributionService;
  auto send = [&dist](jobs::JobContext& job) -> Result<void> {
    CF_RETURN_IF_ERROR(dist.SendPending([&job](int64_t done, int64_t total) { job.Progress(done, total); }));
    return Ok();
  };
  pool.Register(std::string(DistributionService::kScanJob), [&dist](jobs::JobContext&) -> Result<void> {
    CF_RETURN_IF_ERROR(dist.Scan());
    return Ok();
  });
  // A scheduled send that finds a run in progress has nothing left to do: that run sends.
  pool.Register(std::string(DistributionService::kSendJob), [&dist](jobs::JobContext& job) -> Result<void> {
    auto sent = dist.SendPending([&job](int64_t done, int64_t total) { job.Progress(done, total); });
    if (!sent.ok() && sent.error().code == ErrorCode::kFailedPrecondition) {
      log::Info("distribution send skipped", {{"reason", sent.error().message}});
      return Ok();
    }
    return sent.ok() ? Ok() : Result<void>(sent.error());
  });
  pool.Register(std::string(DistributionService::kRunJob), [&dist, send](jobs::JobContext& job) -> Result<void> {
    CF_RETURN_IF_ERROR(dist.Scan());
    return send(job);
  });
  store::NewJob scan;
  scan.kind = std::string(DistributionService::kScanJob);
  scan.max_attempts = 1;  // the next firing is the retry
  CF_RETURN_IF_ERROR(
      scheduler.Add("distribution-scan", fmt::format("@every {}s", config.GetInt("distribution.scan_seconds")), scan));
  store::NewJob send_job;
  send_job.kind = std::string(DistributionService::kSendJob);
  send_job.max_attempts = 1;
  return scheduler.Add("distribution-send", fmt::format("@every {}m", config.GetInt("distribution.send_minutes")),
                       send_job);
}

// The file server.client_ca defaults to when renewal.ca is set: the chain of renewal.ca, so
// that agents authenticate with the certificates it issues them.
Result<std::string> WriteAgentTrust(store::Store& store, pki::KeyBackend& keys, const Clock& clock,
                                    const Config& config) {
  issuance::Issuer lookup(store, keys, clock, {});
  CF_ASSIGN_OR_RETURN(store::CertificateRecord ca, lookup.Get(config.Get("renewal.ca")));
  CF_ASSIGN_OR_RETURN(std::string above, lookup.ChainOf(ca));
  const std::string path = config.Get("data_dir") + "/tls/agents-ca.pem";
  CF_RETURN_IF_ERROR(WriteFileAtomically(path, ca.certificate_pem + above, 0644));
  return path;
}

// W4's jobs: the scheduled runs, failure notifications and revocation of replaced certificates.
Result<void> AddRenewalJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler, renewal::RenewalService& renewals,
                            const Config& config) {
  using renewal::RenewalService;
  pool.Register(std::string(RenewalService::kRunJob), [&renewals](jobs::JobContext&) -> Result<void> {
    CF_ASSIGN_OR_RETURN(auto started, renewals.StartRun({}, "schedule", "certfleet"));
    log::Info("renewal run started", {{"run_id", started.run_id}, {"queued", started.queued}});
    return Ok();
  });
  pool.Register(std::string(RenewalService::kNotifyJob), [&renewals](jobs::JobContext& job) -> Result<void> {
    CF_ASSIGN_OR_RETURN(int64_t id, PayloadInt(job, "renewal_id"));
    return renewals.NotifyFailure(id);
  });
  pool.Register(std::string(RenewalService::kRevokeJob), [&renewals](jobs::JobContext& job) -> Result<void> {
    CF_ASSIGN_OR_RETURN(std::string serial, PayloadString(job, "serial"));
    return renewals.RevokeSuperseded(serial);
  });
  store::NewJob run;
  run.kind = std::string(RenewalService::kRunJob);
  run.max_attempts = 3;
  return scheduler.Add("renewal-run", config.Get("renewal.schedule"), run);
}

// Sends the event bus to webhooks every webhooks.every_seconds, when any are configured.
Result<void> AddWebhookJobs(jobs::WorkerPool& pool, jobs::Scheduler& scheduler, events::WebhookDispatcher& webhooks,
                            const Config& config) {
  for (const auto& url : SplitList(config.Get("webhooks.urls"))) {
    if (!url.starts_with("https://") && !url.starts_with("http://")) {
      return MakeError(ErrorCode::kInvalidArgument, fmt::format("webhooks.urls: {} is not an http(s) URL", url));
    }
  }
  if (config.Get("webhooks.urls").empty()) return Ok();
  CF_RETURN_IF_ERROR(webhooks.Subscribe());
  pool.Register(std::string(events::WebhookDispatcher::kJob), [&webhooks](jobs::JobContext&) -> Result<void> {
    CF_ASSIGN_OR_RETURN(int sent, webhooks.Deliver());
    if (sent > 0) log::Info("webhooks sent", {{"events", sent}});
    return Ok();
  });
  store::NewJob job;
  job.kind = std::string(events::WebhookDispatcher::kJob);
  job.max_attempts = 1;  // the next firing is the retry
  return scheduler.Add("webhooks", fmt::format("@every {}s", config.GetInt("webhooks.every_seconds")), job);
}

}  // namespace

int Serve(const Config& config, const Clock& clock) {
  auto st = OpenStore(config);
  if (!st.ok()) {
    log::Error("cannot open the store", {{"error", st.error().message}});
    return 1;
  }
  store::Store& store = **st;
  auto master_key = pki::file::LoadMasterKey(config.Get("master_key"), config.Get("master_key_file"), false);
  if (!master_key.ok()) {
    log::Error("cannot read the master key", {{"error", master_key.error().message}});
    return 1;
  }
  pki::file::FileKeyBackend keys(config.Get("key_dir"), *master_key);

  http::Metrics metrics;
  http::TokenCache tokens(config.GetInt("auth.token_cache_ms"));
  http::Router router(http::MakeStoreAuthenticator(store, clock, tokens));
  http::TokenService api_tokens(store, clock);
  http::ApiContext api{store, clock, metrics, tokens, api_tokens};

  http::ServerOptions options;
  options.listen = config.Get("server.listen");
  options.tls_cert_file = config.Get("server.tls_cert");
  options.tls_key_file = config.Get("server.tls_key");
  options.client_ca_file = config.Get("server.client_ca");
  if (options.client_ca_file.empty() && !config.Get("renewal.ca").empty()) {
    // Until renewal.ca exists (it may be made through this server), agents cannot
    // authenticate: restart once it does.
    auto written = WriteAgentTrust(store, keys, clock, config);
    if (written.ok()) {
      options.client_ca_file = *written;
    } else {
      log::Warn("agents cannot authenticate until renewal.ca exists and certfleet restarts",
                {{"error", written.error().message}});
    }
  }
  options.threads = static_cast<int>(config.GetInt("server.threads"));
  options.body_limit = static_cast<size_t>(config.GetInt("server.body_limit"));
  options.header_timeout = std::chrono::seconds(config.GetInt("server.header_timeout"));
  options.body_timeout = std::chrono::seconds(config.GetInt("server.body_timeout"));
  options.idle_timeout = std::chrono::seconds(config.GetInt("server.idle_timeout"));
  options.shutdown_grace = std::chrono::seconds(config.GetInt("server.shutdown_grace"));
  http::Server server(router, metrics, options);
  if (auto r = server.Listen(); !r.ok()) {
    log::Error("cannot start the HTTPS server", {{"error", r.error().message}});
    return 1;
  }
  const std::string host = options.listen.substr(0, options.listen.rfind(':'));
  const std::string url = fmt::format("https://{}:{}", host, server.port());

  issuance::Issuer::Options ca_options;
  ca_options.public_url = config.Get("public_url").empty() ? url : config.Get("public_url");
  ca_options.crl_validity_ms = config.GetInt("ca.crl_hours") * 3600 * 1000;
  ca_options.ocsp_validity_ms = config.GetInt("ca.ocsp_minutes") * 60 * 1000;
  issuance::Issuer issuer(store, keys, clock, ca_options);
  ca::CaService ca(issuer);
  api.issuer = &issuer;
  api.ca = &ca;

  blob::S3Credentials s3{config.Get("s3.access_key_id"), config.Get("s3.secret_access_key"),
                         config.Get("s3.session_token")};
  auto inbound = blob::OpenBlobStore(config.Get("distribution.inbound"), s3);
  auto mailer = mail::OpenMailer(config.Get("mail"), clock);
  if (!inbound.ok() || !mailer.ok()) {
    log::Error("cannot set up distribution", {{"error", (!inbound.ok() ? inbound.error() : mailer.error()).message}});
    return 1;
  }
  auto dist_options = DistributionOptions(config);
  dist_options.master_key = *master_key;
  distribution::DistributionService distribution(store, **inbound, **mailer, clock, dist_options);
  api.distribution = &distribution;

  provision::DeviceRegistry devices(store, clock);
  registry::Registry registry(store, clock);
  provision::ProvisionService::Options provision_options;
  provision_options.public_url = ca_options.public_url;
  provision_options.url_key = HmacSha256(*master_key, "certfleet provision retrieval URLs");
  provision_options.supersede_grace_ms = config.GetInt("provision.supersede_grace_hours") * 3600 * 1000;
  provision_options.retrieve_ttl_ms = config.GetInt("provision.retrieve_ttl_seconds") * 1000;
  provision_options.device_rate_per_minute = config.GetInt("provision.device_rate_per_minute");
  provision_options.address_rate_per_minute = config.GetInt("provision.address_rate_per_minute");
  provision::ProvisionService provision(store, issuer, registry, clock, provision_options);
  api.devices = &devices;
  api.registry = &registry;
  api.provision = &provision;

  auto import_options = ImportOptions(config, "");
  if (!import_options.ok()) {
    log::Error("cannot read the Microchip verification certificates", {{"error", import_options.error().message}});
    return 1;
  }
  bulk::ImportService imports(store, clock, *import_options);
  api.imports = &imports;
  auto bulk_inbound = blob::OpenBlobStore(config.Get("bulk.inbound"), s3);
  if (!bulk_inbound.ok()) {
    log::Error("cannot open bulk.inbound", {{"error", bulk_inbound.error().message}});
    return 1;
  }

  auto host_options = HostOptions(config);
  if (!host_options.ok()) {
    log::Error("bad renewal settings", {{"error", host_options.error().message}});
    return 1;
  }
  renewal::HostService hosts(store, clock, *host_options);
  renewal::AgentService agents(store, hosts, issuer, clock,
                               {config.Get("renewal.ca"), config.GetInt("renewal.validity_days")});
  api.hosts = &hosts;
  api.agents = &agents;
  renewal::RenewalService renewals(store, hosts, agents, issuer, mailer->get(), clock, RenewalOptions(config));
  api.renewals = &renewals;

  http::AddSystemRoutes(router, api);
  http::AddRegistryRoutes(router, api);
  http::AddBulkRoutes(router, api);
  http::AddProvisionRoutes(router, api);
  http::AddCaRoutes(router, api);
  http::AddDistributionRoutes(router, api);
  http::AddRenewalRoutes(router, api);

  jobs::WorkerPool::Options pool_options;
  pool_options.node_id = NodeId();
  pool_options.workers = static_cast<int>(config.GetInt("jobs.workers"));
  pool_options.lease = std::chrono::seconds(config.GetInt("jobs.lease_seconds"));
  pool_options.poll = std::chrono::milliseconds(config.GetInt("jobs.poll_ms"));
  jobs::WorkerPool pool(store, clock, pool_options);
  jobs::Scheduler scheduler(store, clock);
  if (auto r =
          jobs::AddHousekeeping(pool, scheduler, store, clock, static_cast<int>(config.GetInt("jobs.retention_days")));
      !r.ok()) {
    log::Error("cannot set up housekeeping", {{"error", r.error().message}});
    return 1;
  }
  auto published = blob::OpenBlobStore(config.Get("blobs"), s3);
  if (!published.ok()) {
    log::Error("cannot open blobs (where CRLs are published)", {{"error", published.error().message}});
    return 1;
  }
  pool.Register(std::string(issuance::Issuer::kCrlPublishJob),
                [&issuer, &published](jobs::JobContext& job) -> Result<void> {
                  CF_ASSIGN_OR_RETURN(std::string fqdn, PayloadString(job, "ca"));
                  return issuer.PublishCrl(fqdn, **published);
                });
  events::WebhookDispatcher webhooks(store, clock,
                                     {SplitList(config.Get("webhooks.urls")), SplitList(config.Get("webhooks.events")),
                                      config.Get("webhooks.secret"), config.Get("webhooks.ca")});
  if (auto r = AddWebhookJobs(pool, scheduler, webhooks, config); !r.ok()) {
    log::Error("cannot set up webhooks", {{"error", r.error().message}});
    return 1;
  }
  pool.Register(std::string(issuance::Issuer::kCrlRefreshJob), [&issuer](jobs::JobContext&) -> Result<void> {
    CF_ASSIGN_OR_RETURN(int resigned, issuer.RefreshDueCrls());
    if (resigned > 0) log::Info("re-signed CRLs", {{"count", resigned}});
    return Ok();
  });
  store::NewJob crl_job;
  crl_job.kind = std::string(issuance::Issuer::kCrlRefreshJob);
  crl_job.max_attempts = 3;
  if (auto r = scheduler.Add("ca-crl-refresh", kCrlRefreshSchedule, crl_job); !r.ok()) {
    log::Error("cannot schedule CRL refresh", {{"error", r.error().message}});
    return 1;
  }
  pool.Register(std::string(provision::ProvisionService::kRevokeSupersededJob),
                [&provision](jobs::JobContext&) -> Result<void> {
                  CF_RETURN_IF_ERROR(provision.RevokeDueSuperseded());
                  return Ok();
                });
  pool.Register(std::string(bulk::ImportService::kJob), [&imports](jobs::JobContext& job) -> Result<void> {
    CF_ASSIGN_OR_RETURN(int64_t id, PayloadInt(job, "import_id"));
    // The job shows the share of the manifest read; the import itself has the counts.
    constexpr int64_t kScale = 1000;
    CF_RETURN_IF_ERROR(imports.Run(id, [&job](const store::ImportRecord&, double fraction) {
      job.Progress(static_cast<int64_t>(fraction * kScale), kScale);
    }));
    return Ok();
  });
  pool.Register(std::string(bulk::ImportService::kScanJob),
                [&imports, &bulk_inbound](jobs::JobContext&) -> Result<void> {
                  CF_RETURN_IF_ERROR(imports.ScanInbound(**bulk_inbound));
                  return Ok();
                });
  store::NewJob bulk_scan;
  bulk_scan.kind = std::string(bulk::ImportService::kScanJob);
  bulk_scan.max_attempts = 1;  // the next firing is the retry
  if (auto r = scheduler.Add("bulk-scan", fmt::format("@every {}s", config.GetInt("bulk.scan_seconds")), bulk_scan);
      !r.ok()) {
    log::Error("cannot schedule the inbound scan for imports", {{"error", r.error().message}});
    return 1;
  }
  store::NewJob supersede_job;
  supersede_job.kind = std::string(provision::ProvisionService::kRevokeSupersededJob);
  supersede_job.max_attempts = 1;  // the next firing is the retry
  if (auto r = scheduler.Add("provision-revoke-superseded", kSupersededSchedule, supersede_job); !r.ok()) {
    log::Error("cannot schedule revocation of superseded certificates", {{"error", r.error().message}});
    return 1;
  }
  if (auto r = AddDistributionJobs(pool, scheduler, distribution, config); !r.ok()) {
    log::Error("cannot schedule distribution", {{"error", r.error().message}});
    return 1;
  }
  if (auto r = AddRenewalJobs(pool, scheduler, renewals, config); !r.ok()) {
    log::Error("cannot schedule renewals (renewal.schedule)", {{"error", r.error().message}});
    return 1;
  }
  pool.Start();
  scheduler.Start(kSchedulerTick);
  renewals.Start();

  log::Info("listening", {{"url", url},
                          {"port", server.port()},
                          {"node", pool_options.node_id},
                          {"db", MaskUrlCredentials(config.Get("db"))}});
  server.Run();

  renewals.Stop();
  scheduler.Stop();
  pool.Stop();
  log::Info("stopped");
  return 0;
}

}  // namespace certfleet::cli
